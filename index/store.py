"""The specimen store: a LanceDB database (a local directory by default, or any LanceDB URI)
that is the source of truth of a collection.

Tables (see :mod:`index.schema`): ``specimens`` (one row per enrolled image),
``store_info`` (embedder fingerprint, model name and path, vector size, calibrated thresholds)
and ``within_species_prior`` (the arrays of the model's prior, when it carries one).
Every write is one LanceDB commit; a failed write is rolled back to the version before it, so
an enrollment lands whole or not at all. Old versions are compacted away after a while.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import lancedb
import numpy as np
import pyarrow as pa

from .errors import Remedy, SpecimenNotFoundError, StoreError, StoreWriteError
from .schema import (
    INDEX_COLUMNS,
    INFO_TABLE,
    PRIOR_TABLE,
    SPECIMENS_TABLE,
    STORE_FORMAT,
    InfoRow,
    PriorArrayRow,
    specimen_model,
)

T = TypeVar("T")
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
log = logging.getLogger("shellid.index")


#: bytes of each of LanceDB's caches (table metadata, indices), one set per process. Its
#: default (1 GB of metadata, 6 GB of indices) lets a long-running server grow by the
#: manifests of every version it ever read, until 7 GB (benchmarks/store_cache_benchmark.py,
#: docs/deployment.md). The store uses no lance vector index (search is FAISS); 32 MiB of
#: metadata holds the manifests of hundreds of versions, more than a retention keeps.
CACHE_BYTES = 32 * 1024 * 1024
_SESSION: lancedb.Session | None = None
_SESSION_LOCK = threading.Lock()


def _session() -> lancedb.Session:
    """The process's LanceDB session (bounded caches shared by every store it opens)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = lancedb.Session(
                index_cache_size_bytes=CACHE_BYTES, metadata_cache_size_bytes=CACHE_BYTES
            )
        return _SESSION


def sql_string(value: str) -> str:
    """A SQL string literal for LanceDB filters (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _is_local(uri: str) -> bool:
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


def _is_conflict(exc: BaseException) -> bool:
    """A commit another process's commit beat (retry after re-reading), or a table another
    process created first."""
    text = str(exc)
    return any(k in text for k in ("commit conflict", "preempted by concurrent", "already exists"))


def _is_cleaned_up(exc: BaseException) -> bool:
    """A version that no longer exists (removed by a compaction's cleanup)."""
    return "no longer exists" in str(exc) or "was it cleaned up" in str(exc).lower()


def retry_conflicts(write: Callable[[], T], attempts: int = 8) -> T:
    """Run ``write`` again (re-reading what it merges) while another process's commit beats
    it; replicas on one store write ``store_info`` at the same moments."""
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            if attempt == attempts - 1 or not _is_conflict(exc):
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


class SpecimenStore:
    """LanceDB tables of one collection.

    ``uri``: directory or LanceDB URI; ``create``: make it when missing (else StoreError);
    ``keep_versions``: how long superseded versions survive compaction; ``compact_every``:
    writes between compactions.
    """

    def __init__(
        self,
        uri: str | Path,
        *,
        create: bool = True,
        keep_versions: timedelta = timedelta(minutes=10),
        compact_every: int = 20,
    ) -> None:
        self.uri = str(uri)
        self.keep_versions = keep_versions
        self.compact_every = max(1, int(compact_every))
        self._lock = threading.RLock()
        #: versions this object committed, newest last (rollback undoes only its own commits)
        self._own_versions: deque[int] = deque(maxlen=256)
        self._last_added: tuple[int, list[str]] | None = None  # (version, ids) of the last add
        missing = f"store {self.uri} does not exist (enroll some species first)"
        if _is_local(self.uri):
            path = Path(self.uri)
            if path.exists() and not path.is_dir():
                raise StoreError(f"store {self.uri} is a file, not a LanceDB directory")
            if not path.exists() and not create:
                raise StoreError(missing)
        try:
            self._db = lancedb.connect(self.uri, session=_session())
            names = set(self._table_names())
        except Exception as exc:
            raise StoreError(f"cannot open store {self.uri}: {storage_problem(exc)}") from None
        if not names and not create and not _is_local(self.uri):
            raise StoreError(missing)  # an object-store prefix exists once a table is written
        self._specimens = self._open_if_made(SPECIMENS_TABLE, names)
        self._info = self._open_if_made(INFO_TABLE, names)

    def _open_if_made(self, name: str, names: set[str] | list[str]) -> Any:
        """The table ``name`` when it exists, else None; a table another process is creating
        right now (listed, its first commit not landed yet) counts as not made yet, and is
        opened on a later read."""
        if name not in names:
            return None
        try:
            return self._db.open_table(name)
        except Exception as exc:
            if "not found" in str(exc).lower() or "was not found" in str(exc).lower():
                return None
            raise StoreError(
                f"cannot open store {self.uri}: {storage_problem(exc)}",
                remedy=Remedy.DOCTOR,
                store=self.uri,
            ) from exc

    def _table_names(self) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = self._db.list_tables(page_token=token)
            names += list(page.tables)
            token = getattr(page, "page_token", None)
            if not token:
                return names

    # ------------------------------------------------------------------ info
    def _open_info(self) -> None:
        """Open ``store_info`` if another process has created it since this store opened."""
        if self._info is None:
            self._info = self._open_if_made(INFO_TABLE, self._table_names())

    def info(self) -> dict[str, Any]:
        """The ``store_info`` entries (empty for a new store)."""
        self._open_info()
        if self._info is None:
            return {}
        self._info.checkout_latest()
        table = self._info.to_arrow()
        return {
            k: json.loads(v)
            for k, v in zip(table["key"].to_pylist(), table["value"].to_pylist(), strict=True)
        }

    def write_info(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into ``store_info`` (one commit) and return the result."""
        with self._lock:
            try:
                return retry_conflicts(lambda: self._merge_info(updates))
            except Exception as exc:
                raise StoreWriteError(
                    f"cannot write store info to {self.uri}: {storage_problem(exc)}"
                ) from exc

    def _merge_info(self, updates: dict[str, Any]) -> dict[str, Any]:
        info = self.info()  # the latest entries, another process's included
        info.update(updates)
        info.setdefault("format", STORE_FORMAT)
        table = pa.Table.from_pylist(
            [{"key": k, "value": json.dumps(v)} for k, v in sorted(info.items())],
            schema=InfoRow.to_arrow_schema(),
        )
        if self._info is None:
            self._info = self._db.create_table(INFO_TABLE, data=table, schema=InfoRow)
        else:
            self._info.add(table, mode="overwrite")
        return info

    # ------------------------------------------------------------------ model prior
    def read_prior(self) -> dict[str, np.ndarray] | None:
        """The arrays recorded by :meth:`write_prior` (None when the model carries none)."""
        if PRIOR_TABLE not in self._table_names():
            return None
        try:
            table = self._db.open_table(PRIOR_TABLE).to_arrow()
        except Exception as exc:
            raise StoreError(f"cannot read the model prior of {self.uri}: {exc}") from exc
        arrays = {
            name: np.asarray(values, np.float32).reshape(shape)
            for name, shape, values in zip(
                table["name"].to_pylist(),
                table["shape"].to_pylist(),
                table["values"].to_pylist(),
                strict=True,
            )
        }
        return arrays or None

    def write_prior(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Record the model's prior arrays (``None``: it has none), replacing the last."""
        rows = [
            {"name": name, "shape": list(np.shape(a)), "values": np.ravel(a).tolist()}
            for name, a in sorted((arrays or {}).items())
        ]
        data = pa.Table.from_pylist(rows, schema=PriorArrayRow.to_arrow_schema())

        def write() -> None:
            if PRIOR_TABLE in self._table_names():
                self._db.open_table(PRIOR_TABLE).add(data, mode="overwrite")
            else:
                self._db.create_table(PRIOR_TABLE, data=data, schema=PriorArrayRow)

        with self._lock:
            try:
                retry_conflicts(write)
            except Exception as exc:
                raise StoreWriteError(
                    f"cannot write the model prior to {self.uri}: {storage_problem(exc)}"
                ) from exc

    # ------------------------------------------------------------------ specimens table
    @property
    def dim(self) -> int | None:
        """Vector size of the specimens table (None before the first enrollment)."""
        if self._specimens is None:
            return None
        return int(self._specimens.schema.field("vector").type.list_size)

    @property
    def version(self) -> int:
        return 0 if self._specimens is None else int(self._specimens.version)

    def latest_version(self) -> int:
        """The newest committed version (another process may have written)."""
        if self._specimens is None:
            self._specimens = self._open_if_made(SPECIMENS_TABLE, self._table_names())
            if self._specimens is None:
                return 0
        self._specimens.checkout_latest()
        return int(self._specimens.version)

    def count(self, where: str | None = None) -> int:
        if self._specimens is None:
            return 0
        return int(self._specimens.count_rows(where))

    def ensure_table(self, dim: int) -> None:
        """Create the specimens table for ``dim``-sized vectors if it does not exist yet."""
        with self._lock:
            if self._specimens is None and SPECIMENS_TABLE in self._table_names():
                self._specimens = self._db.open_table(SPECIMENS_TABLE)  # made by another process
            if self._specimens is not None and self.dim != dim and self.count() == 0:
                try:  # an empty table left by another model: take the new vector size
                    self._specimens = self._db.create_table(
                        SPECIMENS_TABLE, schema=specimen_model(dim), mode="overwrite"
                    )
                except Exception as exc:
                    raise StoreError(f"cannot recreate the specimens table: {exc}") from exc
                return
            if self._specimens is not None:
                if self.dim != dim:
                    raise StoreError(
                        f"store {self.uri} holds {self.dim}-d vectors, the model makes {dim}-d "
                        "ones",
                        remedy=Remedy.REINDEX_NEW_MODEL,
                        store=self.uri,
                    )
                return
            try:
                self._specimens = self._db.create_table(SPECIMENS_TABLE, schema=specimen_model(dim))
            except Exception as exc:
                if SPECIMENS_TABLE in self._table_names():  # another replica made it first
                    self.ensure_table(dim)
                    return
                raise StoreWriteError(
                    f"cannot create the specimens table in {self.uri}: {storage_problem(exc)}"
                ) from exc

    def load_index(self, columns: list[str] | None = None) -> pa.Table:
        """Every row without the image bytes (``columns``, default :data:`INDEX_COLUMNS`)."""
        columns = columns or INDEX_COLUMNS
        if self._specimens is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns if c != "vector"})
        try:
            return self._specimens.search().select(columns).limit(None).to_arrow()
        except Exception as exc:
            raise self._read_failed(exc) from exc

    def _read_failed(self, exc: BaseException) -> StoreError:
        """The one-line error of a read the store could not serve (the remedy: check it)."""
        return StoreError(
            f"cannot read store {self.uri}: {storage_problem(exc)}",
            remedy=Remedy.DOCTOR,
            store=self.uri,
        )

    def select(self, columns: list[str], where: str) -> pa.Table:
        """The rows matching the filter ``where``, ``columns`` only (never the image bytes
        unless asked for)."""
        if self._specimens is None:
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        try:
            query = self._specimens.search().where(where).select(columns).limit(None)
            return query.to_arrow()
        except Exception as exc:
            raise self._read_failed(exc) from exc

    def _at_version(self, version: int) -> tuple[Any, int]:
        """The specimens table checked out at ``version``; when that version has been cleaned
        up meanwhile (another replica's retention, or its clock running ahead), at the newest
        one instead, and which one it is. Catch-up compares ids, so a read of a later version
        than asked is taken in whole, never half (the next refresh settles the number)."""
        table = self._db.open_table(SPECIMENS_TABLE)
        try:
            table.checkout(version)
            return table, version
        except Exception as exc:
            if not _is_cleaned_up(exc):
                raise
        table.checkout_latest()
        log.warning(
            "store %s: version %s was cleaned up while being read; read version %s instead "
            "(keep_versions_minutes shorter than a read, or a replica's clock ahead)",
            self.uri,
            version,
            table.version,
        )
        return table, int(table.version)

    def read_version(self, columns: list[str], version: int, where: str | None = None) -> pa.Table:
        """``columns`` of the rows of the specimens table as of ``version`` (a pinned read:
        commits made meanwhile are not mixed in), optionally filtered by ``where``; a version
        cleaned up meanwhile is read as the newest (:meth:`_at_version`)."""
        try:
            table, _ = self._at_version(version)
            query = table.search().select(columns).limit(None)
            return (query.where(where) if where else query).to_arrow()
        except Exception as exc:
            raise StoreError(
                f"cannot read version {version} of store {self.uri}: {storage_problem(exc)}",
                remedy=Remedy.DOCTOR,
                store=self.uri,
            ) from exc

    def make_rows(self, rows: dict[str, list[Any]], vectors: np.ndarray) -> pa.Table:
        """An arrow table for :meth:`add` from column lists plus the vector matrix."""
        dim = vectors.shape[1]
        schema = specimen_model(dim).to_arrow_schema()
        columns = dict(rows)
        columns["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel()), dim
        )
        n = vectors.shape[0]
        columns.setdefault("created", [datetime.now(UTC)] * n)
        return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)

    def add(self, table: pa.Table) -> int:
        """Append rows in ONE commit; on any failure the table is restored to the version
        before the call and StoreError is raised. Returns the version this commit made."""
        if self._specimens is None:
            raise StoreError("the specimens table does not exist yet (call ensure_table)")
        ids = [str(i) for i in table.column("id").to_pylist()]
        with self._lock:
            try:
                self._specimens.add(table)
            except Exception as exc:
                self._withdraw(ids)  # in case the commit landed before the failure
                raise StoreWriteError(
                    f"writing to store {self.uri} failed; nothing was added "
                    f"({storage_problem(exc)})"
                ) from exc
            self._committed()
            version = self.version  # this commit's (housekeeping may commit after it)
            self._last_added = (version, ids)
            self._after_write()
            return version

    def _committed(self) -> None:
        self._own_versions.append(int(self._specimens.version) if self._specimens else 0)

    def _withdraw(self, ids: list[str]) -> None:
        """Delete rows this object added (ids are fresh, no other writer has them); a
        commit of its own, so other processes' commits since then are kept."""
        if self._specimens is None or not ids:
            return
        where = "id IN (" + ", ".join(sql_string(i) for i in ids) + ")"
        try:
            self._specimens.checkout_latest()
            if self._specimens.count_rows(where):
                self._specimens.delete(where)
                self._committed()
        except Exception as exc:  # pragma: no cover - storage failure during recovery
            raise StoreError(
                f"store {self.uri}: withdrawing {len(ids)} rows failed ({storage_problem(exc)})",
                remedy=Remedy.DOCTOR,
                store=self.uri,
            ) from exc

    def rollback(self, version: int) -> None:
        """Undo this object's commits after ``version`` and nobody else's (replicas share
        the store): the rows of its last append are deleted when that append came after
        ``version``; otherwise the table is restored to ``version`` when every later commit
        is this object's own. StoreError when another process committed in between."""
        if self._specimens is None:
            return
        with self._lock:
            if self._last_added is not None and self._last_added[0] > version:
                self._withdraw(self._last_added[1])
                self._last_added = None
                return
            try:
                self._specimens.checkout_latest()
                latest = int(self._specimens.version)
                own = set(self._own_versions)
                if latest != version and all(v in own for v in range(version + 1, latest + 1)):
                    self._specimens.restore(version)
                    self._committed()
                    return
            except Exception as exc:  # pragma: no cover - storage failure during recovery
                raise StoreError(
                    f"store {self.uri}: rollback to version {version} failed "
                    f"({storage_problem(exc)}); restore it by hand with lancedb's Table.restore"
                ) from exc
            if latest != version:
                raise StoreError(
                    f"store {self.uri}: cannot roll back to version {version}: another process "
                    "has committed since"
                )

    def delete(self, where: str) -> int:
        """Delete the rows matching a filter (one commit); returns how many went."""
        if self._specimens is None:
            return 0
        with self._lock:
            before = self.count(where)
            if not before:
                return 0
            try:
                retry_conflicts(lambda: self._specimens.delete(where))  # type: ignore[union-attr]
            except Exception as exc:
                raise StoreWriteError(
                    f"deleting from store {self.uri} failed; nothing was deleted "
                    f"({storage_problem(exc)})"
                ) from exc
            self._committed()
            self._after_write()
            return before

    def owners_before(self, version: int, sha256s: list[str]) -> dict[str, tuple[str, str]]:
        """Who held these photos (SHA-256 of the original bytes) in the table as of
        ``version``: ``sha256 -> (species, id)``. A writer asks for the version just before its
        own commit: commits are totally ordered, so of two processes that enrolled one photo at
        once exactly one (the later commit) finds the other's row."""
        if version < 1 or not sha256s or self._specimens is None:
            return {}
        where = "sha256 IN (" + ", ".join(sql_string(h) for h in sorted(set(sha256s))) + ")"
        own: set[str] = set()
        try:
            table, read = self._at_version(version)
            if read != version and self._last_added is not None:
                # cleaned up: a later version holds the same rows plus this writer's own
                # commit (version + 1, whose rows are left out) and maybe later commits
                own = set(self._last_added[1])
            rows = table.search().where(where).select(["sha256", "species", "id"]).limit(None)
            found = rows.to_arrow()
        except Exception as exc:
            raise StoreError(f"cannot read store {self.uri}: {storage_problem(exc)}") from exc
        owners: dict[str, tuple[str, str]] = {}
        for sha, species, specimen_id in zip(
            found["sha256"].to_pylist(),
            found["species"].to_pylist(),
            found["id"].to_pylist(),
            strict=True,
        ):
            if specimen_id not in own:
                owners.setdefault(sha, (species, specimen_id))
        return owners

    def delete_ids(self, ids: list[str]) -> int:
        ids = [i for i in ids if ID_PATTERN.match(i)]
        if not ids:
            return 0
        return self.delete("id IN (" + ", ".join(sql_string(i) for i in ids) + ")")

    def delete_species(self, species: str) -> int:
        return self.delete(f"species = {sql_string(species)}")

    def read_blob(self, specimen_id: str, column: str) -> bytes:
        """``thumbnail`` or ``image`` bytes of one row (SpecimenNotFoundError if absent)."""
        if column not in ("thumbnail", "image"):
            raise ValueError(f"not a blob column: {column}")
        if not ID_PATTERN.match(str(specimen_id)) or self._specimens is None:
            raise SpecimenNotFoundError(f"no enrolled specimen with id {specimen_id!r}")
        try:
            table = (
                self._specimens.search()
                .where(f"id = {sql_string(specimen_id)}")
                .select([column])
                .limit(1)
                .to_arrow()
            )
        except Exception as exc:
            raise self._read_failed(exc) from exc
        if table.num_rows == 0:
            raise SpecimenNotFoundError(f"no enrolled specimen with id {specimen_id!r}")
        return bytes(table[column][0].as_py())

    def iter_images(self, batch_size: int = 64) -> Iterator[tuple[list[str], list[bytes]]]:
        """``(ids, image bytes)`` of every row, a batch at a time."""
        if self._specimens is None:
            return
        query = self._specimens.search().select(["id", "image"]).limit(None)
        for batch in query.to_batches(batch_size):
            yield batch.column("id").to_pylist(), batch.column("image").to_pylist()

    def rewrite_vectors(self, ids: list[str], vectors: np.ndarray, fingerprint: str) -> int:
        """Replace every row's vector (the size may change) in one commit; rows stream from
        the current version. Every row must have a new vector. Returns the new version."""
        if self._specimens is None:
            raise StoreError("the store is empty: nothing to re-embed")
        position = {i: k for k, i in enumerate(ids)}
        dim = int(vectors.shape[1])
        schema = specimen_model(dim).to_arrow_schema()
        with self._lock:
            before = self.latest_version()
            old = self._db.open_table(SPECIMENS_TABLE, version=before)
            columns = [f.name for f in old.schema if f.name not in ("vector", "fingerprint")]
            total = old.count_rows()
            if total != len(ids) or set(position) != set(
                old.search().select(["id"]).limit(None).to_arrow()["id"].to_pylist()
            ):
                raise StoreError(
                    "the store changed during re-embedding",
                    remedy=Remedy.REINDEX_AGAIN,
                    store=self.uri,
                )

            def batches() -> Iterator[pa.RecordBatch]:
                for batch in old.search().select(columns).limit(None).to_batches(256):
                    rows = [position[i] for i in batch.column("id").to_pylist()]
                    table = pa.Table.from_batches([batch])
                    table = table.append_column(
                        "vector",
                        pa.FixedSizeListArray.from_arrays(
                            pa.array(vectors[rows].astype(np.float32).ravel()), dim
                        ),
                    )
                    table = table.append_column("fingerprint", pa.array([fingerprint] * len(rows)))
                    yield from table.select(schema.names).cast(schema).to_batches()

            try:
                self._specimens = self._db.create_table(
                    SPECIMENS_TABLE,
                    data=pa.RecordBatchReader.from_batches(schema, batches()),
                    mode="overwrite",
                )
            except Exception as exc:
                self._specimens = self._db.open_table(SPECIMENS_TABLE)
                self.rollback(before)
                raise StoreWriteError(
                    f"re-embedding store {self.uri} failed; it is unchanged "
                    f"({storage_problem(exc)})"
                ) from exc
            self._committed()
            self._after_write()
            return self.version

    # ------------------------------------------------------------------ maintenance
    def writes_since_compaction(self) -> int:
        """Commits to the specimens table since the last compaction, read from the store (the
        table version against the one recorded by :meth:`compact`), so the count survives
        restarts and is shared by every process writing to the store."""
        if self._specimens is None:
            return 0
        last = int(self.info().get("compacted_version") or 1)  # version 1: the empty table
        return max(0, self.version - last)

    def _after_write(self) -> None:
        if self.writes_since_compaction() >= self.compact_every:
            self.compact()

    def compact(self) -> None:
        """Merge small data files and drop versions older than ``keep_versions``; records
        the specimens table's version afterwards (``compacted_version`` in store_info)."""
        with self._lock:
            done = True
            for table in (self._specimens, self._info):
                if table is None:
                    continue
                try:
                    table.optimize(cleanup_older_than=self.keep_versions)
                except Exception as exc:  # housekeeping: the write it follows has landed
                    done = False
                    log.warning("compacting store %s failed (will retry later): %s", self.uri, exc)
            if done and self._specimens is not None:
                try:
                    self.write_info(compacted_version=self.latest_version())
                except StoreError as exc:  # pragma: no cover - the next write retries
                    log.warning("recording the compaction of %s failed: %s", self.uri, exc)

    def stats(self) -> dict[str, Any]:
        """Rows, versions and data files of the specimens table."""
        if self._specimens is None:
            return {"rows": 0, "versions": 0, "fragments": 0}
        stats: Any = self._specimens.stats()
        return {
            "rows": int(stats["num_rows"]),
            "versions": len(self._specimens.list_versions()),
            "fragments": int(stats["fragment_stats"]["num_fragments"]),
        }
