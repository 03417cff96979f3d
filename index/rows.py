"""The specimen row batch: one type for the rows that enrolment, catch-up and fitting hand
to the identifier (``SpecimenIndex`` -> ``VectorIdentifier.fit`` / ``add`` ->
``EnrolledRows.add``), read from and written to the ``specimens`` columns of
:mod:`index.schema`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import InvalidQueryError
from .schema import TAXONOMY_COLUMNS


def _strings(values: Sequence[Any] | None, n: int, what: str) -> list[str] | None:
    """``values`` as a list of ``n`` strings (None stays None)."""
    if values is None:
        return None
    out = [str(v) for v in values]
    if len(out) != n:
        raise InvalidQueryError(f"{n} vectors but {len(out)} {what}")
    return out


@dataclass(frozen=True, eq=False)
class SpecimenRows:
    """Rows to enroll, checked when made (:class:`InvalidQueryError`).

    ``vectors`` (n, d) float32 (one 1-d vector is one row); ``species`` one name per row;
    ``taxonomy`` species -> {genus, family, region, ...} (merged even when there is no row;
    genus defaults to the first word of a ``Genus_species`` name); ``ids`` one unique id per
    row (None: the identifier numbers them ``"0"``, ``"1"``, ...); ``groups`` the physical
    specimen each row shows (views of one shell share a group; None: each row its own);
    ``sources`` who or what enrolled each row; ``regions`` per-row region overriding the
    species' one. Store columns: ``vector``, ``species``, ``id``, ``specimen``, ``source``,
    ``region`` and the taxonomy's ``genus`` / ``family`` (:meth:`store_columns`).
    """

    vectors: np.ndarray
    species: Sequence[str]
    taxonomy: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    ids: Sequence[str] | None = None
    groups: Sequence[str] | None = None
    sources: Sequence[str] | None = None
    regions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2:
            raise InvalidQueryError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise InvalidQueryError("vectors contain NaN or infinite values")
        n = vectors.shape[0]
        species = _strings(self.species, n, "species labels") or []
        if any(not s for s in species):
            raise InvalidQueryError("empty species name")
        ids = _strings(self.ids, n, "ids")
        if ids is not None and len(set(ids)) != n:
            raise InvalidQueryError("specimen_ids must give one unique id per vector")
        taxonomy = {
            str(name): {str(k): str(v) for k, v in info.items() if v not in (None, "")}
            for name, info in (self.taxonomy or {}).items()
        }
        checked = {
            "vectors": vectors,
            "species": species,
            "taxonomy": taxonomy,
            "ids": ids,
            "groups": _strings(self.groups, n, "groups"),
            "sources": _strings(self.sources, n, "sources"),
            "regions": _strings(self.regions, n, "regions"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def with_vectors(self, vectors: np.ndarray) -> SpecimenRows:
        """These rows with other vectors of the same shape (e.g. mapped to features)."""
        if np.shape(vectors) != self.vectors.shape:
            raise ValueError(f"expected {self.vectors.shape} vectors, got {np.shape(vectors)}")
        rows = copy.copy(self)
        object.__setattr__(rows, "vectors", np.asarray(vectors, np.float32))
        return rows

    def take(self, positions: Sequence[int]) -> SpecimenRows:
        """The rows at ``positions`` (the taxonomy of their species kept)."""
        keep = list(positions)

        def pick(values: Sequence[str] | None) -> list[str] | None:
            return None if values is None else [values[k] for k in keep]

        species = [self.species[k] for k in keep]
        taxonomy = {s: self.taxonomy[s] for s in dict.fromkeys(species) if s in self.taxonomy}
        return SpecimenRows(
            self.vectors[keep],
            species,
            taxonomy,
            pick(self.ids),
            pick(self.groups),
            pick(self.sources),
            pick(self.regions),
        )

    # ------------------------------------------------------------------ store columns
    def store_columns(self) -> dict[str, list[str]]:
        """The ``specimens`` columns these rows fill (all but ``vector``, which is
        :attr:`vectors`): ``id``, ``species``, ``genus``, ``family``, ``region`` (the rows',
        the species' when no regions are given), ``specimen`` (the group, else the id) and
        ``source``. Needs ids."""
        if self.ids is None:
            raise ValueError("store rows need ids")
        n, species = len(self), list(self.species)
        taxon = [self.taxonomy.get(s, {}) for s in species]
        regions = self.regions or [t.get("region", "") for t in taxon]
        return {
            "id": list(self.ids),
            "species": species,
            "genus": [t.get("genus", "") for t in taxon],
            "family": [t.get("family", "") for t in taxon],
            "region": list(regions),
            "specimen": list(self.groups if self.groups is not None else self.ids),
            "source": list(self.sources or [""] * n),
        }

    @classmethod
    def from_table(
        cls, table: pa.Table, known: Mapping[str, Mapping[str, str]] | None = None
    ) -> SpecimenRows:
        """The rows of a read of the store's index columns (:data:`index.schema.INDEX_COLUMNS`),
        as a full load takes them: each species' taxonomy is the first non-empty genus /
        family / region of its rows, except keys ``known`` has already (kept as they are)."""
        dim = int(table.schema.field("vector").type.list_size)
        flat = table["vector"].combine_chunks().flatten() if table.num_rows else pa.array([])
        vectors = np.asarray(flat.to_numpy(), np.float32).reshape(-1, dim)
        columns = {
            c: table[c].to_pylist()
            for c in ("id", "species", "specimen", "source", *TAXONOMY_COLUMNS)
        }
        known = known or {}
        taxonomy: dict[str, dict[str, str]] = defaultdict(dict)
        for i, species in enumerate(columns["species"]):
            for key in TAXONOMY_COLUMNS:
                value = columns[key][i]
                if value and key not in known.get(species, {}):
                    taxonomy[species].setdefault(key, value)
        return cls(
            vectors,
            columns["species"],
            dict(taxonomy),
            columns["id"],
            columns["specimen"],
            columns["source"],
            columns["region"],
        )
