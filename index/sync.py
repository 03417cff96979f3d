"""Catch-up by difference (issue 11): an identifier brought to the store's version by
reading only what changed, and start-up as "snapshot, then catch-up".

**Catch-up** (:func:`catch_up`): given an identifier at some version and the store at a later
one, read only the ``id`` column, work out the rows added and removed, read the added rows'
index columns (not the image bytes) and apply them with ``VectorIdentifier.add`` /
``remove``. Rows in the store are never updated in place (a write adds or deletes rows;
``reindex`` changes the fingerprint, hence the snapshot's name), so the ids say everything.
Start-up (:func:`load_state`) is "snapshot (:mod:`index.snapshot`), then catch-up"; a
service's refresh is the same catch-up from its in-memory state. After a non-empty difference
the whitening and the thresholds are refit (:func:`settle`), so the answers equal those of a
full rebuild.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .classifier import VectorIdentifier
from .config import IdentifierConfig
from .duplicates import DuplicateTable, owners_of
from .results import Thresholds
from .rows import SpecimenRows
from .schema import INDEX_COLUMNS, where_in
from .snapshot import SnapshotKey, Snapshots
from .store import SpecimenStore
from .whitening import WithinSpeciesPrior

__all__ = [
    "Difference",
    "LoadedState",
    "TooDifferent",
    "apply_difference",
    "catch_up",
    "load_state",
    "read_difference",
    "rebuild",
    "settle",
]

log = logging.getLogger("shellid.index")

#: a difference of more than this share of the rows (and more than CATCH_UP_FLOOR rows) is
#: rebuilt rather than applied row by row.
CATCH_UP_LIMIT = 0.25
CATCH_UP_FLOOR = 1_000
#: added rows read per filtered query (``id IN (...)``).
READ_CHUNK = 5_000


@dataclass
class Difference:
    """What changed in the store between two versions, as applied to an identifier."""

    from_version: int | None
    to_version: int
    added: pa.Table  # the added rows' index columns (no vectors), in store order
    removed: list[str]  # ids
    seconds: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added.num_rows or self.removed)

    @property
    def added_ids(self) -> list[str]:
        return [str(i) for i in self.added["id"].to_pylist()] if self.added.num_rows else []


class TooDifferent(Exception):
    """The difference is too large to apply row by row; rebuild instead."""


def read_difference(
    identifier: VectorIdentifier,
    store: SpecimenStore,
    version: int | None = None,
    *,
    limit: float | None = None,
) -> Difference:
    """What :func:`catch_up` would apply, read without changing ``identifier`` (so a service
    reads outside its query lock): the ids removed from the store since, and the added rows'
    index columns (``id IN (...)`` in chunks; vectors included) in store order. Raises
    :class:`TooDifferent` when more than ``limit`` (default :data:`CATCH_UP_LIMIT`) of the
    rows differ, and more than :data:`CATCH_UP_FLOOR`."""
    started = time.perf_counter()
    version = store.latest_version() if version is None else int(version)
    stored = (
        store.read_version(["id"], version)["id"].combine_chunks()
        if version
        else pa.array([], pa.string())
    )
    known = identifier.rows.id_array()
    added_ids = pc.filter(stored, pc.invert(pc.is_in(stored, value_set=known)))
    gone = pc.filter(known, pc.invert(pc.is_in(known, value_set=stored)))
    compared = time.perf_counter()
    changed = len(added_ids) + len(gone)
    share = CATCH_UP_LIMIT if limit is None else limit
    if changed > max(CATCH_UP_FLOOR, share * max(len(stored), len(known))):
        raise TooDifferent(f"{changed} rows differ")
    wanted = added_ids.to_pylist()
    parts = [
        store.read_version(
            [*INDEX_COLUMNS],
            version,
            where_in("id", wanted[k : k + READ_CHUNK]),
        )
        for k in range(0, len(wanted), READ_CHUNK)
    ]
    if parts:
        added = pa.concat_tables(parts)
        if added.num_rows != len(wanted):  # pragma: no cover - a pinned read
            raise TooDifferent("the store changed while reading")
        order = pc.index_in(stored, value_set=added["id"])  # store order of the added rows
        added = added.take(pc.filter(order, pc.is_valid(order)))
    else:
        added = _no_rows()
    seconds = {"ids": compared - started, "read": time.perf_counter() - compared}
    return Difference(None, version, added, [str(i) for i in gone.to_pylist()], seconds)


def _no_rows() -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in ("id", "species", "sha256")})


def apply_difference(identifier: VectorIdentifier, difference: Difference) -> None:
    """Apply a :func:`read_difference` result with ``VectorIdentifier.remove`` / ``add`` (no
    refit: see :func:`settle`)."""
    started = time.perf_counter()
    if difference.removed:
        identifier.remove(difference.removed, calibrate=False)
    if difference.added.num_rows:
        rows = SpecimenRows.from_table(difference.added, identifier.taxonomy)
        identifier.add(rows, calibrate=False)
    difference.seconds["apply"] = time.perf_counter() - started


def catch_up(
    identifier: VectorIdentifier,
    store: SpecimenStore,
    version: int | None = None,
    *,
    limit: float | None = None,
) -> Difference:
    """Bring ``identifier`` to the store's ``version`` (default: the latest) by applying the
    difference (:func:`read_difference`, then :func:`apply_difference`). Whitening and
    thresholds are left as they were (:func:`settle` refits them). :class:`TooDifferent`
    (changing nothing) when the difference is too large to be worth it."""
    difference = read_difference(identifier, store, version, limit=limit)
    apply_difference(identifier, difference)
    return difference


def stored_thresholds(
    store: SpecimenStore, config: IdentifierConfig, version: int
) -> Thresholds | None:
    """The thresholds ``store_info`` holds for ``version`` under ``config`` (None: none)."""
    info = store.info()
    stored = info.get("thresholds")
    if (
        stored
        and info.get("calibrated_version") == version
        and info.get("calibration_config") == config.model_dump(mode="json")
    ):
        return Thresholds.model_validate(stored)
    return None


def settle(
    identifier: VectorIdentifier,
    store: SpecimenStore,
    version: int,
    fallback: Thresholds | None = None,
    lock: AbstractContextManager[Any] | None = None,
) -> Thresholds:
    """Refit the whitening for the current rows and install thresholds: the store's for
    ``version`` when recorded, else ``fallback`` (thresholds known to belong to these rows),
    else a calibration. What a full load does after reading the rows. The refit is computed
    first and installed under ``lock`` (a service's query lock) at once."""
    thresholds = stored_thresholds(store, identifier.config, version) or fallback
    refit = identifier.prepare_refit(calibrate=thresholds is None)
    with lock if lock is not None else contextlib.nullcontext():
        identifier.apply_refit(refit)
        if thresholds is not None:
            identifier.thresholds = thresholds
        return identifier.thresholds


def rebuild(
    store: SpecimenStore,
    dim: int,
    config: IdentifierConfig | None = None,
    prior: WithinSpeciesPrior | None = None,
    version: int | None = None,
    seconds: dict[str, float] | None = None,
) -> tuple[VectorIdentifier, dict[str, tuple[str, str]], int]:
    """Everything from the store, as before snapshots: ``(identifier, duplicate table,
    version)`` with every row read (index columns), the FAISS index built and the whitening
    refit (thresholds from the store, else calibrated). ``seconds`` receives the time of each
    step (read, index, settle)."""
    times = seconds if seconds is not None else {}
    started = time.perf_counter()
    version = store.latest_version() if version is None else int(version)
    identifier = VectorIdentifier(dim, config, prior)
    table = store.read_version([*INDEX_COLUMNS], version) if version else None
    read = time.perf_counter()
    sha: dict[str, tuple[str, str]] = {}
    if table is not None and table.num_rows:
        identifier.add(SpecimenRows.from_table(table), calibrate=False)
        sha = owners_of(table)
    indexed = time.perf_counter()
    settle(identifier, store, version)
    times.update(read=read - started, index=indexed - read, settle=time.perf_counter() - indexed)
    return identifier, sha, version


@dataclass
class LoadedState:
    """What :func:`load_state` produced and how."""

    identifier: VectorIdentifier
    sha: DuplicateTable
    version: int
    source: str  # "snapshot", "snapshot+catch-up" or "rebuild"
    difference: Difference | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def load_state(
    store: SpecimenStore,
    dim: int,
    fingerprint: str,
    config: IdentifierConfig | None = None,
    prior: WithinSpeciesPrior | None = None,
    snapshots: Snapshots | None = None,
) -> LoadedState:
    """The identifier of the store's latest version: from the snapshot when one of this
    model, config and prior exists (caught up by difference if the store moved on since),
    else rebuilt from the store. A damaged snapshot is logged and rebuilt; never used."""
    config = config or IdentifierConfig()
    started = time.perf_counter()
    version = store.latest_version()
    key = SnapshotKey.of(fingerprint, dim, config, prior, version)
    snapshot = snapshots.load(key, config, prior) if snapshots is not None else None
    loaded = time.perf_counter()
    if snapshot is not None:
        identifier, sha = snapshot.identifier, snapshot.sha
        try:
            if snapshot.key.version == version and store.count() == len(identifier):
                # made at this very version (rows are never updated in place, so its rows
                # are the store's): no need to read and compare a million ids
                difference = Difference(None, version, _no_rows(), [])
            else:
                difference = catch_up(identifier, store, version)
        except TooDifferent as exc:
            log.info(
                "snapshot of version %s is too far behind (%s); rebuilding",
                snapshot.key.version,
                exc,
            )
        else:
            difference.from_version = snapshot.key.version
            caught = time.perf_counter()
            seconds = {"snapshot": loaded - started, "check": caught - loaded}
            if difference:
                sha.apply(difference)
                settle(identifier, store, version)
                seconds["settle"] = time.perf_counter() - caught
                return LoadedState(
                    identifier, sha, version, "snapshot+catch-up", difference, seconds
                )
            if (
                snapshot.key.version != version
            ):  # same rows: its thresholds hold unless the store has newer
                settle_thresholds = stored_thresholds(store, config, version)
                if settle_thresholds is not None:
                    identifier.thresholds = settle_thresholds
            return LoadedState(identifier, sha, version, "snapshot", difference, seconds)
    identifier, table, version = rebuild(store, dim, config, prior, version)
    return LoadedState(
        identifier,
        DuplicateTable(table),
        version,
        "rebuild",
        None,
        {"rebuild": time.perf_counter() - loaded},
    )
