"""What one collection holds, read-only: its species with their counts and taxonomy, the taxa
its filters can name, a species' photos with their provenance, photo names, thumbnails and
stored copies. The listings, species pages, taxa, try-these and ``shellid species`` read here;
nothing here writes, embeds or decodes a photo.

The counts and the species come from the engine's in-memory identifier (under its read lock);
photo pages, taxonomy, names and images are read from the store.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .errors import SpeciesNotFoundError
from .names import canonical_species
from .results import PhotoRecord, SpeciesPhotos, SpeciesSummary, Thresholds
from .schema import PHOTO_COLUMNS, TAXONOMY_COLUMNS, where_in
from .taxa import KnownTaxa, known_taxa

if TYPE_CHECKING:
    from .specimens import SpecimenIndex
    from .store import SpecimenStore

#: photo ids each species summary names (its first one is the species' thumbnail)
SUMMARY_PHOTOS = 5


def _utc(moment: datetime | None) -> datetime | None:
    """A stored timestamp (LanceDB keeps UTC without the zone) as an aware UTC datetime."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _natural(text: str | None) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts ``shell_2`` before ``shell_10``."""
    parts = re.split(r"(\d+)", text or "")
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts)


class Catalogue:
    """The read-only view of one collection's engine (:class:`~index.specimens.SpecimenIndex`):
    it follows the engine's state, so what a write or a catch-up changed is listed at once."""

    def __init__(self, index: SpecimenIndex) -> None:
        self._index = index

    @property
    def store(self) -> SpecimenStore:
        """The store read (its ``info()`` holds the subject and the try-these records)."""
        return self._index.store

    def __len__(self) -> int:
        """How many photos are enrolled."""
        return len(self._index)

    @property
    def thresholds(self) -> Thresholds:
        """The decision thresholds in force (defaults before anything was enrolled)."""
        identifier = self._index.identifier
        return identifier.thresholds if identifier is not None else Thresholds()

    def _summaries(self) -> dict[str, SpeciesSummary]:
        identifier = self._index.identifier
        if identifier is None or len(identifier) == 0:
            return {}
        with self._index.lock:
            counts = identifier.counts()
            specimens = identifier.specimen_counts()
            first: dict[str, list[str]] = defaultdict(list)
            for i, s in zip(identifier.specimen_ids, identifier.labels, strict=True):
                if len(first[s]) < SUMMARY_PHOTOS:
                    first[s].append(i)
            out = {}
            for name in identifier.species:
                genus, family = identifier.taxon_of(name)
                out[name] = SpeciesSummary(
                    species=name,
                    genus=genus,
                    family=family,
                    region=identifier.taxonomy.get(name, {}).get("region", ""),
                    count=counts[name],
                    specimens=specimens[name],
                    specimen_ids=first[name],
                    thumbnail_id=first[name][0] if first[name] else None,
                )
            return out

    def species(self) -> list[SpeciesSummary]:
        """Every enrolled species with its photo count (sorted by name)."""
        return list(self._summaries().values())

    def species_info(self, name: str) -> SpeciesSummary:
        """One enrolled species; SpeciesNotFoundError when nothing of ``name`` is enrolled."""
        summaries = self._summaries()
        key = canonical_species(name)
        if key not in summaries:
            raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
        return summaries[key]

    def taxa(self) -> KnownTaxa:
        """The regions, genera, families and species the filters can name."""
        identifier = self._index.identifier
        if identifier is None:
            return KnownTaxa()
        with self._index.lock:
            return known_taxa(identifier.rows)

    def species_photos(self, name: str, offset: int = 0, limit: int | None = None) -> SpeciesPhotos:
        """A page of the photos of species ``name`` with their provenance, read from the
        store: ``limit`` photos (all when None) from ``offset``, ordered by specimen, file
        name and id (numbers in names in numeric order), and the counts over all of them.
        SpeciesNotFoundError when nothing of ``name`` is enrolled."""
        key = canonical_species(name)
        table = self.store.select(PHOTO_COLUMNS, where_in("species", key))
        if table.num_rows == 0:
            raise SpeciesNotFoundError(f"species {name!r} is not enrolled")
        rows = table.to_pylist()
        rows.sort(key=lambda r: (_natural(r["specimen"]), _natural(r["filename"]), r["id"]))
        by_specimen: dict[str, int] = {}
        for row in rows:
            by_specimen[row["specimen"]] = by_specimen.get(row["specimen"], 0) + 1
        offset = max(0, int(offset))
        end = None if limit is None else offset + max(0, int(limit))
        photos = [
            PhotoRecord(
                specimen_id=row["id"],
                species=row["species"],
                specimen=row["specimen"],
                filename=row["filename"] or "",
                source=row["source"] or "",
                region=row["region"] or "",
                width=int(row["width"] or 0),
                height=int(row["height"] or 0),
                created=_utc(row["created"]),
            )
            for row in rows[offset:end]
        ]
        return SpeciesPhotos(
            species=key, total=len(rows), by_specimen=by_specimen, offset=offset, photos=photos
        )

    def enrolled_taxonomy(self, species: str | None = None) -> dict[str, dict[str, str]]:
        """Each enrolled species' taxonomy as enrolled: genus, family, region and any other
        field (order, authority, ... from taxonomy.csv or the enroll form); no empty values.
        With ``species`` (canonical), only that species' rows are read."""
        columns = ["species", *TAXONOMY_COLUMNS, "extra"]
        if species is None:
            table = self.store.load_index(columns)
        else:
            table = self.store.select(columns, where_in("species", species))
        out: dict[str, dict[str, str]] = defaultdict(dict)
        rows = zip(*(table[c].to_pylist() for c in table.column_names), strict=True)
        for name, *values, extra in rows:
            fields = dict(zip(TAXONOMY_COLUMNS, values, strict=True))
            with contextlib.suppress(ValueError, AttributeError):  # store damage
                fields |= {str(k): str(v) for k, v in json.loads(extra or "{}").items()}
            for key, value in fields.items():
                if value:
                    out[name].setdefault(key, value)
        return dict(out)

    def photo_names(self) -> dict[str, str]:
        """Enrolled photo id -> the file name it was enrolled from ('' when unknown)."""
        table = self.store.load_index(["id", "filename"])
        return dict(zip(table["id"].to_pylist(), table["filename"].to_pylist(), strict=True))

    def thumbnail(self, specimen_id: str) -> bytes:
        """JPEG thumbnail (longer side <= 160 px) of an enrolled photo."""
        return self.store.read_blob(specimen_id, "thumbnail")

    def image(self, specimen_id: str) -> bytes:
        """The stored normalised JPEG copy of an enrolled photo."""
        return self.store.read_blob(specimen_id, "image")
