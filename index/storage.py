"""LanceDB plumbing shared by the store's modules: the process's session (bounded caches),
retries of commits another process beat, and one-line messages for storage failures."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import lancedb

from .errors import Remedy, StoreError

T = TypeVar("T")

#: bytes of each of LanceDB's caches (table metadata, indices), one set per process. Its
#: default (1 GB of metadata, 6 GB of indices) lets a long-running server grow by the
#: manifests of every version it ever read, until 7 GB (benchmarks/store_cache_benchmark.py,
#: docs/deployment.md). The store uses no lance vector index (search is FAISS); 32 MiB of
#: metadata holds the manifests of hundreds of versions, more than a retention keeps.
CACHE_BYTES = 32 * 1024 * 1024
_SESSION: lancedb.Session | None = None
_SESSION_LOCK = threading.Lock()


def session() -> lancedb.Session:
    """The process's LanceDB session (bounded caches shared by every store it opens)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = lancedb.Session(
                index_cache_size_bytes=CACHE_BYTES, metadata_cache_size_bytes=CACHE_BYTES
            )
        return _SESSION


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a local directory (not an object-store URI)."""
    return "://" not in uri


#: object-store failures worth naming, as (text in lance's error, what to say)
_STORAGE_PROBLEMS = (
    ("NoSuchBucket", "the bucket does not exist"),
    ("Failed to resolve region", "no region: set AWS_REGION (and AWS_ENDPOINT_URL off AWS)"),
    ("BadScheme", "an http:// endpoint needs AWS_ALLOW_HTTP=true"),
    ("dns error", "cannot reach the object store (AWS_ENDPOINT_URL: unknown host)"),
    ("ConnectError", "cannot reach the object store (AWS_ENDPOINT_URL: connection failed)"),
    ("InvalidAccessKeyId", "access denied (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    ("SignatureDoesNotMatch", "access denied (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    ("AccessDenied", "access denied (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"),
    ("os error 28", "no space left on the store's disk"),
    ("No space left", "no space left on the store's disk"),
    ("os error 122", "disk quota exceeded on the store's disk"),
    ("os error 30", "the store's file system is read-only"),
    ("timed out", "the object store timed out"),
    ("error sending request", "the object store did not answer in time (AWS_TIMEOUT)"),
    ("SlowDown", "the object store is overloaded (HTTP 503 SlowDown)"),
    ("503 Service Unavailable", "the object store is unavailable (HTTP 503)"),
    ("500 Internal Server Error", "the object store failed (HTTP 500)"),
)


_RUST_SOURCE = re.compile(r",\s*/\S+\.rs:\d+:\d+")


def is_conflict(exc: BaseException) -> bool:
    """A commit another process's commit beat (retry after re-reading), or a table another
    process created first."""
    text = str(exc)
    return any(k in text for k in ("commit conflict", "preempted by concurrent", "already exists"))


_DATA_FILE_GONE = re.compile(r"Not found: \S*\.lance/data/\S+\.lance")


def is_cleaned_up(exc: BaseException) -> bool:
    """A version that no longer exists (removed by a compaction's cleanup), or one whose data
    files a cleanup removed while it was being read."""
    text = str(exc)
    return (
        "no longer exists" in text
        or "was it cleaned up" in text.lower()
        or _DATA_FILE_GONE.search(text) is not None
    )


def retry_conflicts(write: Callable[[], T], attempts: int = 8) -> T:
    """Run ``write`` again (re-reading what it merges) while another process's commit beats
    it; replicas on one store write ``store_info`` at the same moments."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            if attempt == attempts - 1 or not is_conflict(exc):
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def storage_problem(exc: BaseException) -> str:
    """One line for a storage failure: the known object-store problems by name, anything
    else as the first line of lance's message (which can run to a screenful)."""
    text = str(exc)
    for needle, meaning in _STORAGE_PROBLEMS:
        if needle in text:
            return meaning
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    line = _RUST_SOURCE.sub("", line)  # lance appends where in its source it failed
    return line if len(line) <= 300 else line[:297] + "..."


def table_names(db: Any) -> list[str]:
    """Every table of the LanceDB connection ``db`` (all pages of its listing)."""
    names: list[str] = []
    token: str | None = None
    while True:
        page = db.list_tables(page_token=token)
        names += list(page.tables)
        token = getattr(page, "page_token", None)
        if not token:
            return names


def open_if_made(db: Any, uri: str, name: str, names: Collection[str] | None = None) -> Any:
    """The table ``name`` of the store at ``uri`` (connection ``db``) when it exists, else
    None (``names``: the tables listed already); a table another process is creating right
    now (listed, its first commit not landed yet) counts as not made yet, and is opened on a
    later read."""
    if name not in (table_names(db) if names is None else names):
        return None
    try:
        return db.open_table(name)
    except Exception as exc:
        if "not found" in str(exc).lower() or "was not found" in str(exc).lower():
            return None
        raise StoreError(
            f"cannot open store {uri}: {storage_problem(exc)}", remedy=Remedy.DOCTOR, store=uri
        ) from exc
