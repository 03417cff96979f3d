"""The specimen store: a LanceDB database (a local directory by default, or any LanceDB URI)
that is the source of truth of a collection.

Tables (see :mod:`index.schema`): ``specimens`` (one row per enrolled image),
``store_info`` (embedder fingerprint, model name and path, vector size, calibrated thresholds)
and ``within_species_prior`` (the arrays of the model's prior, when it carries one).
Every write is one LanceDB commit; a failed write is rolled back to the version before it, so
an enrollment lands whole or not at all. Old versions are compacted away after a while.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa

from .errors import (
    Remedy,
    SpecimenNotFoundError,
    StoreChangedError,
    StoreError,
    StoreWriteError,
)
from .held_models import HeldModels
from .schema import INDEX_COLUMNS, INFO_TABLE, SPECIMENS_TABLE, specimen_model, where_in
from .storage import (
    is_cleaned_up,
    is_local,
    open_if_made,
    retry_conflicts,
    session,
    storage_problem,
    table_names,
)
from .store_info import StoreRecords
from .store_upkeep import StoreUpkeep

ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
#: reads of a cleaned-up version before giving up (:meth:`SpecimenStore.read_at`)
_CLEANED_UP_TRIES = 4

log = logging.getLogger("shellid.index")


def specimen_table(rows: dict[str, list[Any]], vectors: np.ndarray) -> pa.Table:
    """A ``specimens`` arrow table from column lists plus the vector matrix (``created``
    defaults to now)."""
    dim = vectors.shape[1]
    schema = specimen_model(dim).to_arrow_schema()
    columns = dict(rows)
    columns["vector"] = pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel()), dim
    )
    n = vectors.shape[0]
    columns.setdefault("created", [datetime.now(UTC)] * n)
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


def _revectored(
    old: Any, columns: list[str], position: dict[str, int], vectors: np.ndarray, fingerprint: str
) -> Iterator[pa.RecordBatch]:
    """The rows of the table ``old`` (``columns``: all but the vector and fingerprint) with
    row ``position[id]`` of ``vectors`` and ``fingerprint``, a batch at a time."""
    dim = int(vectors.shape[1])
    schema = specimen_model(dim).to_arrow_schema()
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
        self.lock = threading.RLock()  # one writer of this object at a time
        #: versions this object committed, newest last (rollback undoes only its own commits)
        self._own_versions: deque[int] = deque(maxlen=256)
        self._last_added: tuple[int, list[str]] | None = None  # (version, ids) of the last add
        missing = f"store {self.uri} does not exist (enroll some species first)"
        if is_local(self.uri):
            path = Path(self.uri)
            if path.exists() and not path.is_dir():
                raise StoreError(f"store {self.uri} is a file, not a LanceDB directory")
            if not path.exists() and not create:
                raise StoreError(missing)
        try:
            self._db = lancedb.connect(self.uri, session=session())
            names = set(table_names(self._db))
        except Exception as exc:
            raise StoreError(f"cannot open store {self.uri}: {storage_problem(exc)}") from None
        if not names and not create and not is_local(self.uri):
            raise StoreError(missing)  # an object-store prefix exists once a table is written
        self._specimens = open_if_made(self._db, self.uri, SPECIMENS_TABLE, names)
        info = open_if_made(self._db, self.uri, INFO_TABLE, names)
        self.records = StoreRecords(self._db, self.uri, self.lock, info)
        #: the models the store holds (:mod:`index.held_models`)
        self.models = HeldModels(self._db, self.uri, self.lock)

    @property
    def upkeep(self) -> StoreUpkeep:
        """Compaction, retention and statistics of this store."""
        return StoreUpkeep(self)  # made per use: no reference cycle keeps the store alive

    # ------------------------------------------------------------------ info and prior
    def info(self) -> dict[str, Any]:
        """The ``store_info`` entries (empty for a new store)."""
        return self.records.info()

    def write_info(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into ``store_info`` (one commit) and return the result."""
        return self.records.write_info(**updates)

    def read_prior(self) -> dict[str, np.ndarray] | None:
        """The model's prior arrays (None when it carries none)."""
        return self.records.read_prior()

    def write_prior(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Record the model's prior arrays (``None``: it has none), replacing the last."""
        self.records.write_prior(arrays)

    # ------------------------------------------------------------------ specimens table
    @property
    def table(self) -> Any:
        """The ``specimens`` LanceDB table (None before it is made)."""
        return self._specimens

    @property
    def last_added_ids(self) -> list[str]:
        """The ids of this object's last append (none after a rollback)."""
        return [] if self._last_added is None else list(self._last_added[1])

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
            self._specimens = open_if_made(self._db, self.uri, SPECIMENS_TABLE)
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
        with self.lock:
            if self._specimens is None and SPECIMENS_TABLE in table_names(self._db):
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
                if SPECIMENS_TABLE in table_names(self._db):  # another replica made it first
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
            raise self.read_failed(exc) from exc

    def read_failed(self, exc: BaseException) -> StoreError:
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
            raise self.read_failed(exc) from exc

    def at_version(self, version: int) -> tuple[Any, int]:
        """The specimens table checked out at ``version``; when that version has been cleaned
        up meanwhile (another replica's retention, or its clock running ahead), at the newest
        one instead, and which one it is. Catch-up compares ids, so a read of a later version
        than asked is taken in whole, never half (the next refresh settles the number)."""
        table = self._db.open_table(SPECIMENS_TABLE)
        try:
            table.checkout(version)
            return table, version
        except Exception as exc:
            if not is_cleaned_up(exc):
                raise
        return self._newest_instead(table, version)

    def _newest_instead(self, table: Any, version: int) -> tuple[Any, int]:
        table.checkout_latest()
        log.warning(
            "store %s: version %s was cleaned up while being read; read version %s instead "
            "(keep_versions_minutes shorter than a read, or a replica's clock ahead)",
            self.uri,
            version,
            table.version,
        )
        return table, int(table.version)

    def read_at(
        self, version: int, columns: list[str], where: str | None = None
    ) -> tuple[pa.Table, int]:
        """``columns`` of the rows of the specimens table as of ``version``, optionally filtered
        by ``where``, and the version read. A cleanup can remove a version's data files after
        its checkout, in the middle of the scan: then the newest version is read instead, as
        in :meth:`at_version` (a few tries, as a compaction can replace the newest too)."""
        table, read = self.at_version(version)
        for attempt in range(_CLEANED_UP_TRIES):
            try:
                query = table.search().select(columns).limit(None)
                return (query.where(where) if where else query).to_arrow(), read
            except Exception as exc:
                if attempt == _CLEANED_UP_TRIES - 1 or not is_cleaned_up(exc):
                    raise
            table, read = self._newest_instead(self._db.open_table(SPECIMENS_TABLE), read)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_version(self, columns: list[str], version: int, where: str | None = None) -> pa.Table:
        """``columns`` of the rows of the specimens table as of ``version`` (a pinned read:
        commits made meanwhile are not mixed in), optionally filtered by ``where``; a version
        cleaned up meanwhile is read as the newest (:meth:`read_at`)."""
        try:
            return self.read_at(version, columns, where)[0]
        except Exception as exc:
            raise StoreError(
                f"cannot read version {version} of store {self.uri}: {storage_problem(exc)}",
                remedy=Remedy.DOCTOR,
                store=self.uri,
            ) from exc

    #: an arrow table for :meth:`add` (:func:`specimen_table`).
    make_rows = staticmethod(specimen_table)

    def add(self, table: pa.Table) -> int:
        """Append rows in ONE commit; on any failure the table is restored to the version
        before the call and StoreError is raised. Returns the version this commit made."""
        if self._specimens is None:
            raise StoreError("the specimens table does not exist yet (call ensure_table)")
        ids = [str(i) for i in table.column("id").to_pylist()]
        with self.lock:
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
            self.upkeep.after_write()
            return version

    def _committed(self) -> None:
        self._own_versions.append(int(self._specimens.version) if self._specimens else 0)

    def _withdraw(self, ids: list[str]) -> None:
        """Delete rows this object added (ids are fresh, no other writer has them); a
        commit of its own, so other processes' commits since then are kept."""
        if self._specimens is None or not ids:
            return
        where = where_in("id", ids)
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
        with self.lock:
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
        with self.lock:
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
            self.upkeep.after_write()
            return before

    def delete_ids(self, ids: list[str]) -> int:
        ids = [i for i in ids if ID_PATTERN.match(i)]
        if not ids:
            return 0
        return self.delete(where_in("id", ids))

    def delete_species(self, species: str) -> int:
        return self.delete(where_in("species", species))

    def read_blob(self, specimen_id: str, column: str) -> bytes:
        """``thumbnail`` or ``image`` bytes of one row (SpecimenNotFoundError if absent)."""
        if column not in ("thumbnail", "image"):
            raise ValueError(f"not a blob column: {column}")
        if not ID_PATTERN.match(str(specimen_id)) or self._specimens is None:
            raise SpecimenNotFoundError(f"no enrolled specimen with id {specimen_id!r}")
        try:
            table = (
                self._specimens.search()
                .where(where_in("id", specimen_id))
                .select([column])
                .limit(1)
                .to_arrow()
            )
        except Exception as exc:
            raise self.read_failed(exc) from exc
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

    def rewrite_vectors(
        self, ids: list[str], vectors: np.ndarray, fingerprint: str
    ) -> tuple[int, int]:
        """Replace every row's vector (the size may change) in one commit; rows stream from
        the current version. Every row must have a new vector (else
        :class:`StoreChangedError`). Returns the new version and the version it was made from
        (a commit another process made in between is not in it: an overwrite does not
        conflict in lance; :mod:`index.model_switch` takes such rows in again)."""
        if self._specimens is None:
            raise StoreError("the store is empty: nothing to re-embed")
        position = {i: k for k, i in enumerate(ids)}
        dim = int(vectors.shape[1])
        schema = specimen_model(dim).to_arrow_schema()
        with self.lock:
            before = self.latest_version()
            old = self._db.open_table(SPECIMENS_TABLE, version=before)
            columns = [f.name for f in old.schema if f.name not in ("vector", "fingerprint")]
            total = old.count_rows()
            if total != len(ids) or set(position) != set(
                old.search().select(["id"]).limit(None).to_arrow()["id"].to_pylist()
            ):
                raise StoreChangedError(
                    "the store changed during re-embedding",
                    remedy=Remedy.REINDEX_AGAIN,
                    store=self.uri,
                )

            try:
                self._specimens = self._db.create_table(
                    SPECIMENS_TABLE,
                    data=pa.RecordBatchReader.from_batches(
                        schema, _revectored(old, columns, position, vectors, fingerprint)
                    ),
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
            version = self.version
            self.upkeep.after_write()
            return version, before
