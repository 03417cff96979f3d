"""The duplicate (photo-hash) table: SHA-256 of the original bytes -> (species, id) of the
enrolled row, which the duplicate rules of an enrolment read. Kept in a snapshot as one column
(:mod:`index.snapshot`), built from it only when first used, and kept in step with the store
by the differences of :mod:`index.sync`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa

from .errors import StoreError
from .schema import where_in
from .storage import storage_problem

if TYPE_CHECKING:
    from .store import SpecimenStore
    from .sync import Difference

__all__ = ["DuplicateTable", "owners_before", "owners_of", "update_duplicates"]

#: differences kept for a duplicate table not built yet; one more builds it.
PENDING_DIFFERENCES = 64


class DuplicateTable:
    """The duplicate table (SHA-256 -> (species, id)), built on first use: a snapshot keeps
    the SHA-256 of every row as three arrays (memory-mapped for a local file), and a server
    that only answers queries never needs a million-entry dict. Differences applied before it
    is built are kept (their hash, species and id columns) and replayed when it is. Not
    thread-safe by itself: :class:`~index.specimens.SpecimenIndex` uses it under its write
    lock."""

    def __init__(
        self,
        table: dict[str, tuple[str, str]] | None = None,
        build: Callable[[], dict[str, tuple[str, str]]] | None = None,
    ) -> None:
        if (table is None) == (build is None):
            raise ValueError("a table or a way to build one")
        self._table = table
        self._build = build
        self._pending: list[tuple[pa.Table, list[str]]] = []  # (added, removed ids)

    @property
    def built(self) -> bool:
        return self._table is not None

    def table(self) -> dict[str, tuple[str, str]]:
        """The dict (built now if it was not yet)."""
        if self._table is None:
            assert self._build is not None
            table = self._build()
            for added, removed in self._pending:
                _update(table, added, removed)
            self._table, self._build, self._pending = table, None, []
        return self._table

    def apply(self, difference: Difference) -> None:
        """Apply a difference now (built) or when built."""
        if self._table is not None:
            update_duplicates(self._table, difference)
        elif difference:
            added = difference.added
            kept = added.select(["sha256", "species", "id"]) if added.num_rows else added
            self._pending.append((kept, difference.removed))
            if len(self._pending) > PENDING_DIFFERENCES:  # bounded memory: build it now
                self.table()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DuplicateTable):
            other = other.table()
        return self.table() == other

    __hash__ = None  # type: ignore[assignment]


def owners_before(
    store: SpecimenStore, version: int, sha256s: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """Who held these photos (SHA-256 of the original bytes) in the store's table as of
    ``version``: ``sha256 -> (species, id)``. A writer asks for the version just before its
    own commit: commits are totally ordered, so of two processes that enrolled one photo at
    once exactly one (the later commit) finds the other's row."""
    if version < 1 or not sha256s or store.table is None:
        return {}
    own: set[str] = set()
    try:
        wanted = where_in("sha256", sorted(set(sha256s)))
        found, read = store.read_at(version, ["sha256", "species", "id"], wanted)
        if read != version:
            # cleaned up: a later version holds the same rows plus this writer's own
            # commit (version + 1, whose rows are left out) and maybe later commits
            own = set(store.last_added_ids)
    except Exception as exc:
        raise StoreError(f"cannot read store {store.uri}: {storage_problem(exc)}") from exc
    rows = zip(*(found[c].to_pylist() for c in ("sha256", "species", "id")), strict=True)
    held = [(sha, (species, i)) for sha, species, i in rows if i not in own]
    return dict(reversed(held))  # the first row of each photo


def owners_of(table: pa.Table) -> dict[str, tuple[str, str]]:
    """The duplicate table of the rows of ``table`` (its sha256, species and id columns)."""
    sha: dict[str, tuple[str, str]] = {}
    _update(sha, table, [])
    return sha


def update_duplicates(sha: dict[str, tuple[str, str]], difference: Difference) -> None:
    """Apply ``difference`` to a duplicate table (SHA-256 -> (species, id)) in place."""
    _update(sha, difference.added, difference.removed)


def _update(sha: dict[str, tuple[str, str]], added: pa.Table, removed: Sequence[str]) -> None:
    """Drop the rows of the ``removed`` ids, then add the ``added`` rows (sha256, species,
    id columns)."""
    if removed:
        gone = set(removed)
        for h in [h for h, (_, i) in sha.items() if i in gone]:
            del sha[h]
    if added.num_rows:
        for h, s, i in zip(
            added["sha256"].to_pylist(),
            added["species"].to_pylist(),
            added["id"].to_pylist(),
            strict=True,
        ):
            sha[h] = (s, i)
