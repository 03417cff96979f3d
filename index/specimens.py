"""The engine of one collection: its LanceDB store, the in-memory identifier built from it
(numpy + FAISS) and the photo-hash table the duplicate rules read, kept in step on every write
and catch-up. Vectors in: nothing here decodes a photo, loads a model or scans a folder (that
is :mod:`index.workflows`); queries read the identifier (:meth:`SpecimenIndex.reading`), and
listings the catalogue (:mod:`index.catalogue`).

Thread-safe: identification and search go on while a write is under way; writers are
serialised; the in-memory state switches only after the store commit succeeded (and the
commit is rolled back if that switch fails).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .classifier import VectorIdentifier
from .config import IdentifierConfig, IndexSettings
from .duplicates import DuplicateTable, owners_before
from .errors import (
    DuplicateImageError,
    EmptyCollectionError,
    InvalidQueryError,
    SpeciesNotFoundError,
    SpecimenNotFoundError,
    StoreError,
    StoreWriteError,
)
from .held_models import HeldModel, ModelRecord
from .model_switch import (
    Embed,
    check_writer,
    record_model,
    settle_model,
    stored_prior,
    switch_vectors,
    vectors_model,
)
from .names import canonical_species, genus_of
from .results import EnrollReport, SimilarSpecimen, Thresholds
from .rows import SpecimenRows
from .schema import TAXONOMY_COLUMNS
from .snapshot import SnapshotKey, Snapshots
from .store import SpecimenStore
from .sync import TooDifferent, apply_difference, load_state, read_difference, settle

log = logging.getLogger("shellid.index")

__all__ = ["ModelRecord", "SpecimenIndex", "StoredPhoto", "stored_prior"]


@dataclass
class StoredPhoto:
    """One photo as the store keeps it: file name, SHA-256 of the original bytes, the
    normalised JPEG copy, the thumbnail and the original size."""

    name: str
    sha256: str
    stored: bytes
    thumbnail: bytes
    width: int
    height: int


@dataclass
class _Enrolment:
    """The photos of one species accepted for one store commit, and their rows (row i is
    ``photos[i]``)."""

    name: str
    photos: list[StoredPhoto]
    rows: SpecimenRows
    taxonomy: dict[str, str]  # genus, family, region and any other field

    @classmethod
    def of(
        cls,
        name: str,
        photos: list[StoredPhoto],
        vectors: np.ndarray,
        groups: list[str | None],  # the specimen each photo shows (None: its own)
        taxonomy: dict[str, str],
        source: str,
    ) -> _Enrolment:
        """A fresh id for every photo; the species' taxonomy columns with the genus filled in
        from the name when not given."""
        ids = [uuid.uuid4().hex[:16] for _ in photos]
        columns = {k: v for k, v in taxonomy.items() if k in TAXONOMY_COLUMNS}
        columns["genus"] = taxonomy.get("genus") or genus_of(name)
        rows = SpecimenRows(
            vectors,
            [name] * len(ids),
            {name: columns},
            ids,
            [g if g is not None else i for g, i in zip(groups, ids, strict=True)],
            [source] * len(ids),
            [taxonomy.get("region", "")] * len(ids),
        )
        return cls(name, photos, rows, taxonomy)

    @property
    def ids(self) -> list[str]:
        return list(self.rows.ids or [])

    def columns(self, fingerprint: str) -> dict[str, list[Any]]:
        """The ``specimens`` table columns of these photos (all but the vectors)."""
        n = len(self.photos)
        extra = json.dumps(
            {k: v for k, v in self.taxonomy.items() if k not in TAXONOMY_COLUMNS}, sort_keys=True
        )
        return self.rows.store_columns() | {
            "extra": [extra] * n,
            "filename": [p.name for p in self.photos],
            "sha256": [p.sha256 for p in self.photos],
            "fingerprint": [fingerprint] * n,
            "thumbnail": [p.thumbnail for p in self.photos],
            "image": [p.stored for p in self.photos],
            "width": [p.width for p in self.photos],
            "height": [p.height for p in self.photos],
            "created": [datetime.now(UTC)] * n,
        }


def clean_taxonomy(taxonomy: Mapping[str, Any] | None) -> dict[str, str]:
    """Taxonomy fields as stored: lower-case keys, stripped values, no empty ones."""
    return {
        str(k).strip().lower(): str(v).strip()
        for k, v in (taxonomy or {}).items()
        if v not in (None, "")
    }


def enrolled_photo(identifier: VectorIdentifier | None, specimen_id: str) -> SimilarSpecimen:
    """What the enrolled photo ``specimen_id`` is (its species and genus);
    :class:`SpecimenNotFoundError` when no such photo is enrolled."""
    ids = identifier.specimen_ids if identifier is not None else []
    if identifier is None or specimen_id not in ids:
        raise SpecimenNotFoundError(f"no enrolled specimen with id {specimen_id!r}")
    species = identifier.labels[ids.index(specimen_id)]
    genus = identifier.taxon_of(species)[0]
    return SimilarSpecimen(specimen_id=specimen_id, species=species, genus=genus, score=1.0)


class SpecimenIndex:
    """The store of one collection and the identifier built from it, kept in step on every
    write. ``dim``: the vector size to expect before anything is stored (the model's, when
    it is known)."""

    def __init__(
        self,
        store: SpecimenStore,
        settings: IndexSettings,
        config: IdentifierConfig,
        *,
        dim: int | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.config = config
        self.dim = dim
        self.lock = threading.RLock()  # in-memory state
        self.write_lock = threading.RLock()  # one writer at a time
        self._identifier: VectorIdentifier | None = None
        self._duplicates = DuplicateTable({})  # SHA-256 -> (species, id), built on first use
        self._loaded_version = -1
        self._fingerprint = ""  # the model of the loaded vectors
        self.load()

    # ================================================================== loading
    def load(self) -> None:
        """(Re)build the in-memory identifier: from the snapshot beside the store caught up
        with the store by difference, else from every row (:mod:`index.sync`). The model is
        the rows' (:func:`~index.model_switch.settle_model`); a switch committed while loading
        is loaded again, so the vectors and the fingerprint they carry always agree."""
        for _ in range(3):
            version = self.store.latest_version()
            dim = self.store.dim or self.dim
            identifier, sha, fingerprint = None, DuplicateTable({}), ""
            if dim is not None:
                fingerprint, prior = settle_model(self.store)
                state = load_state(
                    self.store,
                    dim,
                    fingerprint,
                    self.config,
                    prior,
                    self._snapshots if fingerprint else None,
                )
                identifier, sha, version = state.identifier, state.sha, state.version
                if vectors_model(self.store, version) != fingerprint:
                    continue  # switched meanwhile: load the new model's vectors
                identifier.set_overrides(**self.settings.threshold_overrides())
            break
        else:
            raise StoreError(
                f"store {self.store.uri} kept switching models while it was loaded",
                store=self.store.uri,
            )
        with self.lock:
            self._identifier = identifier
            self._duplicates = sha
            self._loaded_version = version
            self._fingerprint = fingerprint
        if identifier is not None:
            self.save_snapshot()

    def refresh(self) -> bool:
        """Catch up with other processes' commits by difference (only the ``id`` column and
        the added rows are read), then refit the whitening and thresholds off the query lock;
        True when anything was committed since."""
        with self.write_lock:
            version = self.store.latest_version()
            identifier = self._identifier
            if version == self._loaded_version:
                return False
            fingerprint = vectors_model(self.store, version)  # the rows': a switch
            if identifier is None or (self.store.dim, fingerprint) != (
                identifier.dim,
                self._fingerprint,
            ):  # nothing loaded yet, or re-embedded by another model: rows kept ids, not vectors
                self.load()
                return True
            try:
                difference = read_difference(identifier, self.store, version)
            except TooDifferent:
                self.load()
                return True
            with self.lock:
                apply_difference(identifier, difference)
                self._duplicates.apply(difference)  # now, or when the table is first used
                self._loaded_version = version
            if difference:
                settle(identifier, self.store, version, lock=self.lock)
            return True

    @property
    def _sha(self) -> dict[str, tuple[str, str]]:
        """The duplicate table (SHA-256 -> (species, id)): built from the snapshot at its
        first use (the duplicate rules of a write, a snapshot save), not at start-up."""
        with self.write_lock:
            return self._duplicates.table()

    @_sha.setter
    def _sha(self, table: dict[str, tuple[str, str]]) -> None:
        with self.write_lock:
            self._duplicates = DuplicateTable(table)

    @functools.cached_property
    def _snapshots(self) -> Snapshots | None:
        """The snapshot files of this store (None where pyarrow cannot reach its URI)."""
        try:
            return Snapshots(self.store.uri)
        except (OSError, ValueError) as exc:  # e.g. a URI scheme pyarrow has no filesystem for
            log.info("no snapshots for store %s: %s", self.store.uri, exc)
            return None

    def save_snapshot(self, force: bool = False) -> bool:
        """Save the identifier beside the store when due (:meth:`Snapshots.due`: 50 commits or
        10 minutes since the last) or ``force`` (clean shutdown), and only when it is settled;
        True when written. A failure is logged, never raised (the store stays the truth)."""
        with self.write_lock:
            identifier, snapshots = self._identifier, self._snapshots
            fingerprint = str(self.store.info().get("fingerprint") or "")
            version = self._loaded_version
            if identifier is None or snapshots is None or not fingerprint or not len(identifier):
                return False
            if not (force or snapshots.due(version)) or snapshots.saved_version == version:
                return False
            key = SnapshotKey.of(
                fingerprint, identifier.dim, self.config, identifier.prior, version
            )
            try:
                saved = snapshots.save(identifier, key, self._sha)
            except Exception as exc:  # a snapshot is an optimisation: the store stays
                log.warning("saving the snapshot of store %s failed: %s", self.store.uri, exc)
                return False
            retention = self.settings.keep_snapshots_days * 86400.0
            for name in snapshots.clean(key.name, retention):  # other kinds' stale files
                log.info("removed %s from the snapshots of store %s", name, self.store.uri)
            return saved

    # ================================================================== state
    @property
    def fingerprint(self) -> str:
        """The model of the vectors loaded in memory ('' before any): a query embedded by
        another model must not be searched here (see ``Collection.identify``)."""
        return self._fingerprint

    @property
    def loaded_version(self) -> int:
        """The store version the in-memory state is at."""
        return self._loaded_version

    @property
    def identifier(self) -> VectorIdentifier | None:
        """The current in-memory identifier (None before anything was enrolled)."""
        return self._identifier

    def __len__(self) -> int:
        identifier = self._identifier
        return 0 if identifier is None else len(identifier)

    def need_identifier(self) -> VectorIdentifier:
        """The identifier; :class:`EmptyCollectionError` while nothing is enrolled."""
        identifier = self._identifier
        if identifier is None or len(identifier) == 0:
            raise EmptyCollectionError("the collection is empty: enroll some species first")
        return identifier

    @contextlib.contextmanager
    def reading(self) -> Iterator[VectorIdentifier]:
        """The identifier held still for a query (under the read lock: a write's switch of
        the in-memory state waits); :class:`EmptyCollectionError` while nothing is enrolled."""
        with self.lock:  # the identifier and :attr:`fingerprint` of one state
            yield self.need_identifier()

    # ================================================================== writing
    def add_photos(
        self,
        species: str,
        photos: Sequence[StoredPhoto],
        vectors: np.ndarray,
        model: ModelRecord,
        *,
        taxonomy: Mapping[str, Any] | None = None,
        source: str = "",
        groups: Sequence[str] | None = None,
        strict: bool = False,
        calibrate: bool = True,
        report: EnrollReport | None = None,
    ) -> EnrollReport:
        """Add the photos of one species, embedded by ``model`` (``vectors`` row i is
        ``photos[i]``), in ONE store commit: a photo already enrolled under this species is
        skipped (``duplicates``), one under another species refused (``refused``; with
        ``strict``: :class:`DuplicateImageError` and nothing written)."""
        name = canonical_species(species)
        if len(vectors) != len(photos) or (groups is not None and len(groups) != len(photos)):
            raise InvalidQueryError(f"{len(photos)} photos, {len(vectors)} vectors")
        report = report or EnrollReport(species=name)
        with self.write_lock:
            self.refresh()  # judge duplicates against what other processes committed too
            keep = self._new_photos(name, list(photos), report, strict)
            if keep:
                batch = _Enrolment.of(
                    name,
                    [photos[k] for k in keep],
                    np.asarray(vectors, np.float32)[keep],
                    [None if groups is None else str(groups[k]) for k in keep],
                    clean_taxonomy(taxonomy),
                    source,
                )
                batch = self._commit(batch, model, report, strict)
                report.added, report.specimen_ids = len(batch.ids), batch.ids
                if calibrate and batch.ids:
                    self.calibrate()
            identifier = self._identifier
            report.total = identifier.counts().get(name, 0) if identifier is not None else 0
        return report

    def _new_photos(
        self, name: str, photos: list[StoredPhoto], report: EnrollReport, strict: bool
    ) -> list[int]:
        """Positions of the ``photos`` not enrolled yet. A photo enrolled under ``name`` (or
        twice in this batch) is a duplicate, skipped; one under another species is refused
        (with ``strict``: :class:`DuplicateImageError`, nothing enrolled)."""
        keep: list[int] = []
        seen: set[str] = set()
        for k, photo in enumerate(photos):
            owner = self._sha.get(photo.sha256)
            if photo.sha256 in seen or (owner and owner[0] == name):
                report.duplicates.append(photo.name)
            elif owner:
                report.refused[photo.name] = f"already enrolled as {owner[0]} (specimen {owner[1]})"
            else:
                keep.append(k)
            seen.add(photo.sha256)
        if strict and report.refused:
            first, why = next(iter(report.refused.items()))
            raise DuplicateImageError(f"{first}: {why}; nothing was enrolled")
        return keep

    def _commit(
        self, batch: _Enrolment, model: ModelRecord, report: EnrollReport, strict: bool
    ) -> _Enrolment:
        """Write ``batch`` to the store (one commit), settle it against writers that committed
        the same photos first (:meth:`_settle`), then bring the in-memory identifier and
        duplicate table in step; a failure there withdraws the commit. Returns what stayed."""
        check_writer(self.store, model.fingerprint)  # a store switched to another model
        self.store.ensure_table(model.dim)
        if not self.store.info().get("fingerprint") or self.store.count() == 0:
            self.record_model(model)
        loaded = self._loaded_version
        before = self.store.latest_version()
        check_writer(self.store, model.fingerprint)  # at the version the append is made on
        version = self._append(batch, model)
        try:
            check_writer(self.store, model.fingerprint, version)
            size = len(batch.ids)
            batch = self._settle(batch, version, report, strict)
            if loaded != before or version != before + 1 or len(batch.ids) != size:
                self.load()  # others' commits came in between: take them in too
            else:
                self._add_own_rows(batch, model, version)
        except Exception:
            self.store.rollback(before)
            self.load()
            raise
        return batch

    def _append(self, batch: _Enrolment, model: ModelRecord) -> int:
        """The append of ``batch`` (one commit); an append lance refused because the store
        switched models since its version is a :class:`ModelSwitchedError`."""
        try:
            return self.store.add(
                self.store.make_rows(batch.columns(model.fingerprint), batch.rows.vectors)
            )
        except StoreWriteError:
            self.store.latest_version()
            check_writer(self.store, model.fingerprint)
            raise

    def _settle(
        self, batch: _Enrolment, version: int, report: EnrollReport, strict: bool
    ) -> _Enrolment:
        """The duplicate rules again at commit time, against the table just before this
        commit (another process may have enrolled the same photos since this one refreshed):
        the rows that lost are deleted again (a commit of their own) and reported as
        duplicates or refused. Of two writers, the later commit always yields."""
        owners = owners_before(self.store, version - 1, [p.sha256 for p in batch.photos])
        lost = [k for k, p in enumerate(batch.photos) if p.sha256 in owners]
        if not lost:
            return batch
        for k in lost:
            photo = batch.photos[k]
            species, specimen_id = owners[photo.sha256]
            if species == batch.name:
                report.duplicates.append(photo.name)
            else:
                report.refused[photo.name] = (
                    f"already enrolled as {species} (specimen {specimen_id})"
                )
        if strict and report.refused:
            self.store.delete_ids(batch.ids)
            first, why = next(iter(report.refused.items()))
            raise DuplicateImageError(f"{first}: {why}; nothing was enrolled")
        self.store.delete_ids([batch.ids[k] for k in lost])
        stay = [k for k in range(len(batch.ids)) if k not in set(lost)]
        return replace(batch, photos=[batch.photos[k] for k in stay], rows=batch.rows.take(stay))

    def _add_own_rows(self, batch: _Enrolment, model: ModelRecord, version: int) -> None:
        """The in-memory state after this process's own commit ``version``, the only one since
        the state was loaded: the batch added in place. (When other writers committed in
        between, marking ``version`` loaded would hide their commits: the caller reloads.)"""
        with self.lock:
            identifier = self._identifier
            if identifier is None or len(identifier) == 0:  # the model's size and prior
                identifier = VectorIdentifier(model.dim, self.config, stored_prior(self.store))
            identifier.add(batch.rows, calibrate=False)
            if identifier is not self._identifier:
                identifier.set_overrides(**self.settings.threshold_overrides())
                self._identifier = identifier
            for photo, specimen_id in zip(batch.photos, batch.ids, strict=True):
                self._sha[photo.sha256] = (batch.name, specimen_id)
            self._loaded_version = version

    def record_model(self, model: ModelRecord, **info: Any) -> None:
        """Record in the store which model makes its vectors, with the model's prior."""
        self._fingerprint = model.fingerprint
        record_model(self.store, model, **info)

    def replace_vectors(
        self,
        ids: list[str],
        vectors: np.ndarray,
        model: ModelRecord,
        *,
        held: HeldModel | None = None,
        embed: Embed | None = None,
    ) -> int:
        """Adopt ``model``: the stored vectors of ``ids`` (every stored photo) replaced by
        ``vectors`` in one commit, the thresholds recalibrated (the switch:
        :func:`~index.model_switch.switch_vectors`; ``held``: the model's copy the store keeps,
        ``embed``: the new model for rows other processes add meanwhile). Returns how many rows
        the store holds after."""
        return switch_vectors(self, ids, vectors, model, held=held, embed=embed)

    def remove_species(self, name: str) -> int:
        """Delete every photo of a species (one commit); returns how many went."""
        key = canonical_species(name)
        with self.write_lock:
            self.refresh()  # a species another process enrolled can be removed here too
            identifier = self._identifier
            if identifier is None or key not in identifier.species:
                raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
            before = self._loaded_version
            removed = self.store.delete_species(key)
            if self.store.version != before + 1:
                self.load()  # others' commits came in between: take them in too
            else:
                with self.lock:
                    identifier.remove_species(key, calibrate=False)
                    self._sha = {h: v for h, v in self._sha.items() if v[0] != key}
                    self._loaded_version = self.store.version
            self.calibrate()
            return removed

    def remove_specimen(self, specimen_id: str) -> SimilarSpecimen:
        """Delete one enrolled photo by id; returns what it was."""
        with self.write_lock:
            self.refresh()
            record = enrolled_photo(self._identifier, specimen_id)  # or SpecimenNotFoundError
            identifier = self.need_identifier()
            before = self._loaded_version
            self.store.delete_ids([specimen_id])
            if self.store.version != before + 1:
                self.load()  # others' commits came in between: take them in too
            else:
                with self.lock:
                    identifier.remove([specimen_id], calibrate=False)
                    self._sha = {h: v for h, v in self._sha.items() if v[1] != specimen_id}
                    self._loaded_version = self.store.version
            self.calibrate()
            return record

    def calibrate(self, target_recall: float | None = None) -> Thresholds:
        """Refit the scorer and recalibrate the thresholds on the enrolled data, and store
        them with the store. The work runs outside the query lock (writers are held off by
        the write lock, so the rows cannot change meanwhile); queries keep being answered
        with the previous fit until the new one is swapped in."""
        with self.write_lock:
            identifier = self._identifier
            if identifier is None:
                return Thresholds()
            refit = identifier.prepare_refit(target_recall)
            with self.lock:
                thresholds = identifier.apply_refit(refit)
            self.store.write_info(
                thresholds=json.loads(identifier.calibrated_thresholds.model_dump_json()),
                calibrated_version=self.store.version,
                calibration_config=self.config.model_dump(mode="json"),
            )
            self.save_snapshot()
            return thresholds
