"""A cached copy of ``shellid species`` for local stores, so listing needs no LanceDB import.

Importing LanceDB alone takes 1.5 s here, more than the whole command may. After a command
opens a local store it writes the species list beside the tables
(``<store>/.shellid-species.json``) with a token naming the tables' version files; a listing
reads it only while the token still matches, i.e. while no process (CLI, service, anything
writing LanceDB) has committed to the store since. Any change, or a remote store, falls back to
opening the store, which rewrites the copy. The store stays the only source of truth.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_FILE = ".shellid-species.json"
#: tables whose commits change what ``shellid species`` prints
TABLES = ("specimens", "store_info")
FORMAT = "shellid-species-listing/1"


def _local(uri: str) -> Path | None:
    return None if "://" in uri else Path(uri).expanduser()


def store_token(uri: str) -> str | None:
    """A digest of the tables' version files (None for a remote store or one without tables):
    every commit adds a version file, so any write changes it."""
    root = _local(uri)
    if root is None or not root.is_dir():
        return None
    digest = hashlib.sha256()
    for table in TABLES:
        versions = root / f"{table}.lance" / "_versions"
        try:
            names = sorted(os.listdir(versions))
            stamp = versions.stat().st_mtime_ns
        except OSError:
            names, stamp = [], 0
        digest.update(f"{table}:{stamp}:{len(names)}:{'/'.join(names)}\n".encode())
    return digest.hexdigest()


def read_listing(uri: str) -> dict[str, Any] | None:
    """The cached listing when it is current, else None."""
    root = _local(uri)
    if root is None:
        return None
    try:
        cached = json.loads((root / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = store_token(uri)
    if not isinstance(cached, dict) or cached.get("format") != FORMAT or not token:
        return None
    return cached if cached.get("token") == token else None


def listing_of(catalogue: Any, token: str | None) -> dict[str, Any]:
    """What ``shellid species`` shows, from an open collection's catalogue."""
    info = catalogue.store.info()
    return {
        "format": FORMAT,
        "token": token,
        "uri": catalogue.store.uri,
        "photos": len(catalogue),
        "model_name": info.get("model_name", "?"),
        "fingerprint": info.get("fingerprint", "?"),
        "species": [s.model_dump(mode="json") for s in catalogue.species()],
    }


def write_listing(collection: Any, token: str | None = None) -> dict[str, Any]:
    """Write the listing of ``collection`` beside its tables (local stores); returns it.

    ``token``: taken *before* the collection read the store, so a commit made meanwhile leaves
    a stale token behind (the next listing reopens the store) rather than a stale list."""
    if token is None:
        token = store_token(collection.store.uri)
        collection.index.refresh()  # after the token: a later commit only makes the copy stale
    listing = listing_of(collection.catalogue, token)
    root = _local(collection.store.uri)
    if root is not None and token and root.is_dir():
        tmp = root / f"{CACHE_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(listing), encoding="utf-8")
            tmp.replace(root / CACHE_FILE)
        except OSError:  # a read-only store still lists, just not from the copy
            tmp.unlink(missing_ok=True)
    return listing
