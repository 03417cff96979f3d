"""A store's photos as training records: the stored normalised copies written as files
(``<folder>/<species>/<id>.jpg``) that the feature cache reads, labelled with their species
and specimen, and the folder removed when training ends.

The folder's place is fixed per store (under the feature cache) and each file gets a
modification time derived from its bytes, so the feature cache (keyed by path, size and
time) finds the features of photos it has seen in an earlier training of the same store. A
lock beside the folder keeps two trainings of one store apart.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedder.datasets import ImageRecord
from embedder.settings import TrainingError

from ...rows import SpecimenRows
from ...store import SpecimenStore

try:  # POSIX; elsewhere two trainings of one store are not kept apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: photos read from the store per batch while exporting
EXPORT_BATCH = 64


@dataclass
class StorePhotos:
    """The rows a store holds (vectors, species, specimens, ids) and, once exported, the
    training record of each row (``records[i]`` is row ``i``)."""

    rows: SpecimenRows
    records: list[ImageRecord]

    @property
    def species(self) -> list[str]:
        return sorted(set(self.rows.species))


def read_rows(store: SpecimenStore) -> SpecimenRows:
    """Every stored row without the image bytes; :class:`TrainingError` for a store with
    fewer than 2 species."""
    if not store.count():
        raise TrainingError(f"the store {store.uri} holds no photos to train on")
    rows = SpecimenRows.from_table(store.load_index())
    species = set(rows.species)
    if len(species) < 2:
        raise TrainingError(
            f"training needs photos of at least 2 species; the store {store.uri} holds "
            f"{len(species)} ({len(rows)} photos)"
        )
    return rows


def export_folder(store: SpecimenStore, cache_dir: Path) -> Path:
    """Where ``store``'s photos are written for training: one folder per store URI."""
    key = hashlib.sha1(str(store.uri).encode()).hexdigest()[:16]
    return Path(cache_dir) / "store-photos" / key


@contextmanager
def exported_photos(
    store: SpecimenStore,
    rows: SpecimenRows,
    cache_dir: Path,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[StorePhotos]:
    """The store's photos written as files (``on_batch(photos written so far)``), yielded as
    :class:`StorePhotos`; the folder is removed afterwards, whatever happens. A second
    training of the same store meanwhile is refused (:class:`TrainingError`)."""
    folder = export_folder(store, cache_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_suffix(".lock"), store.uri):
        try:
            paths = _write_photos(store, rows, folder, on_batch)
            records = [
                ImageRecord(paths[i], s, f"{s}/{g}")
                for i, s, g in zip(rows.ids or [], rows.species, rows.groups or [], strict=True)
            ]
            yield StorePhotos(rows, records)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _locked(path: Path, uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` or refuse at once."""
    with path.open("a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise TrainingError(
                    f"another training of the store {uri} is running; wait for it to end"
                ) from None
        yield


def _write_photos(
    store: SpecimenStore,
    rows: SpecimenRows,
    folder: Path,
    on_batch: Callable[[int], None] | None,
) -> dict[str, Path]:
    """Each stored photo as ``<folder>/<species>/<id>.jpg`` with a time derived from its
    bytes; ``{id: path}``."""
    species_of = dict(zip(rows.ids or [], rows.species, strict=True))
    paths: dict[str, Path] = {}
    for ids, blobs in store.iter_images(EXPORT_BATCH):
        for specimen_id, blob in zip(ids, blobs, strict=True):
            if specimen_id not in species_of:  # enrolled after the rows were read
                continue
            path = folder / _folder_name(species_of[specimen_id]) / f"{specimen_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            stamp = int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") * 1_000_000_000
            os.utime(path, ns=(stamp, stamp))
            paths[specimen_id] = path
        if on_batch is not None:
            on_batch(len(paths))
    missing = set(species_of) - set(paths)
    if missing:
        raise TrainingError(
            f"{len(missing)} photo(s) were removed from the store while it was read; train again"
        )
    return paths


def _folder_name(species: str) -> str:
    """A file-system-safe folder name for a species (the records carry the real name)."""
    return re.sub(r"[^\w.-]", "_", species) or "_"
