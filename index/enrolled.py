"""The enrolled rows of an identifier and the species tables derived from them.

:class:`EnrolledRows` keeps one row per enrolled vector (L2-normalised vector, species,
specimen group, id, source, region, search key) in step with its specimen search index, and
recomputes the per-species tables (names, row -> species / group index, counts, taxonomy,
regions) whenever rows are added or dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import InvalidQueryError, SpecimenNotFoundError
from .names import genus_of
from .prototypes import l2_normalise
from .rows import SpecimenRows
from .search import VectorIndex

#: joins species and group name, so equal group names of two species stay distinct groups.
GROUP_SEP = "\x1f"
_REGION_SPLIT = re.compile(r"\s*[;,|]\s*")


def regions_of(text: str) -> set[str]:
    """Lower-cased region names of a ``;``, ``,`` or ``|`` separated list."""
    return {part.lower() for part in _REGION_SPLIT.split(text or "") if part}


class EnrolledRows:
    """Enrolled vectors with their per-row metadata and the derived species tables.

    Row arrays (same length, enrollment order): ``vectors`` (n, d) float32 unit rows,
    ``labels`` species, ``groups`` species-qualified specimen group, ``ids``, ``sources``,
    ``row_regions`` and ``keys`` (int64 keys of :attr:`index`, increasing). Species tables
    (species sorted by name): ``species``, ``y`` / ``g`` (species / group index of each row),
    ``counts`` / ``group_counts`` (images / specimens per species), ``order`` / ``starts`` /
    ``rows_by_species`` (rows grouped by species), ``genus``, ``family``, ``species_regions``.
    """

    def __init__(self, dim: int, index: VectorIndex | None = None) -> None:
        self.dim = int(dim)
        self.index = index if index is not None else VectorIndex(self.dim)
        self.vectors = np.zeros((0, self.dim), np.float32)
        self._buffer: np.ndarray | None = None  # self.vectors is its first rows (see add)
        self._id_array: pa.Array | None = None  # ids as Arrow strings, made on first use
        self.labels = np.zeros(0, dtype=object)
        self.groups = np.zeros(0, dtype=object)
        self.ids = np.zeros(0, dtype=object)
        self.sources = np.zeros(0, dtype=object)
        self.row_regions = np.zeros(0, dtype=object)
        self.keys = np.zeros(0, np.int64)
        self.taxonomy: dict[str, dict[str, str]] = {}
        self._next_key = 0
        self.species: list[str] = []
        self.y = np.zeros(0, np.int64)
        self.group_names = np.zeros(0, dtype=object)  # sorted species-qualified group names
        self.g = np.zeros(0, np.int64)
        self.vector_sum = np.zeros(self.dim, np.float64)  # sum of the rows (the CL2N mean)
        self._id_set: set[str] = set()
        self._region_texts: dict[str, dict[str, int]] = {}  # species -> row region -> rows
        self._tables()

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    # ------------------------------------------------------------------ changes
    def add(self, rows: SpecimenRows) -> int:
        """Append a batch of rows (:class:`~index.rows.SpecimenRows`, checked when it was
        made); returns how many were added. Raises :class:`InvalidQueryError` (vector size,
        ids already enrolled) before changing anything; the batch's taxonomy is merged even
        when it has no row."""
        n = len(rows)
        if n and rows.dim != self.dim:
            raise InvalidQueryError(
                f"expected vectors of size {self.dim}, got shape {rows.vectors.shape}"
            )
        start = self._next_key
        ids = list(rows.ids) if rows.ids is not None else [str(i) for i in range(start, start + n)]
        clash = set(ids) & self._id_set
        if clash:
            raise InvalidQueryError(f"specimen ids already enrolled: {sorted(clash)[:5]}")
        for name, info in rows.taxonomy.items():
            self.taxonomy[name] = {**self.taxonomy.get(name, {}), **info}
        for name in set(rows.species):
            self.taxonomy.setdefault(name, {})
        if n == 0:
            return 0
        keys = np.arange(start, start + n, dtype=np.int64)
        self._next_key = start + n
        vectors = l2_normalise(rows.vectors)
        species = list(rows.species)
        groups = rows.groups if rows.groups is not None else ids
        qualified = [f"{s}{GROUP_SEP}{g}" for s, g in zip(species, groups, strict=True)]
        row_regions = list(rows.regions or [""] * n)
        self._add_names(species, qualified)
        self.vectors = self._append_vectors(vectors)
        appended = {
            "labels": species,
            "groups": qualified,
            "ids": ids,
            "sources": list(rows.sources or [""] * n),
            "row_regions": row_regions,
        }
        for name, values in appended.items():
            setattr(
                self, name, np.concatenate([getattr(self, name), np.asarray(values, dtype=object)])
            )
        self.keys = np.concatenate([self.keys, keys])
        self.vector_sum += vectors.sum(axis=0, dtype=np.float64)
        self._id_set.update(ids)
        if self._id_array is not None:
            self._id_array = pa.concat_arrays([self._id_array, pa.array(ids, pa.string())])
        self._count_regions(species, row_regions, 1)
        self.index.add(vectors, keys, kept=self.vectors)  # one copy of the rows
        self._tables()
        return n

    def _append_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """The rows with ``vectors`` appended, as a view of a buffer with room to grow (an
        eighth more each time it is reallocated): appending copies only the new rows. Rows
        already in the buffer are never written again, so earlier views stay valid."""
        n, k = len(self), vectors.shape[0]
        buffer = self._buffer
        if buffer is None or buffer.shape[0] < n + k:  # None: the rows are not in it
            buffer = np.empty((n + k + (n + k) // 8, self.dim), np.float32)
            buffer[:n] = self.vectors
            self._buffer = buffer
        buffer[n : n + k] = vectors
        return buffer[: n + k]

    def _add_names(self, species: list[str], qualified: list[str]) -> None:
        """Species and group indices of new rows (``y`` / ``g`` appended), merging new names
        into the sorted tables and renumbering the old rows: O(N) integer work, no string
        sort of the whole collection."""
        known = set(self.species)
        new = sorted(set(species) - known)
        if new:
            merged = sorted(self.species + new)
            position = {name: i for i, name in enumerate(merged)}
            if self.y.size:
                remap = np.asarray([position[name] for name in self.species], np.int64)
                self.y = remap[self.y]
            self.species = merged
        else:
            position = {name: i for i, name in enumerate(self.species)}
        new_y = np.asarray([position[name] for name in species], np.int64)
        wanted = np.asarray(sorted(set(qualified)), dtype=object)
        names = self.group_names
        at = np.searchsorted(names, wanted) if names.size else np.zeros(wanted.size, np.int64)
        found = at < names.size
        found[found] = names[at[found]] == wanted[found]
        missing = wanted[~found]
        if missing.size:
            spots = at[~found]
            if self.g.size:
                shift = np.searchsorted(spots, np.arange(names.size), side="right")
                self.g = (np.arange(names.size) + shift)[self.g]
            names = np.insert(names, spots, missing)
            self.group_names = names
        new_g = np.searchsorted(names, np.asarray(qualified, dtype=object)).astype(np.int64)
        self.y = np.concatenate([self.y, new_y])
        self.g = np.concatenate([self.g, new_g])

    def _count_regions(self, species: Sequence[str], regions: Sequence[str], step: int) -> None:
        """Keep the per-species count of rows naming each region text (``step`` +1 / -1)."""
        for name, text in zip(species, regions, strict=True):
            if not text:
                continue
            texts = self._region_texts.setdefault(name, {})
            texts[text] = texts.get(text, 0) + step
            if texts[text] <= 0:
                del texts[text]
                if not texts:
                    del self._region_texts[name]

    def region_texts(self, species: str) -> list[str]:
        """The region texts the rows of ``species`` were enrolled with, as given."""
        return list(self._region_texts.get(species, {}))

    def id_array(self) -> pa.Array:
        """The ids as an Arrow string array (kept in step with the rows once made), for
        set operations against a store's ``id`` column."""
        if self._id_array is None:
            self._id_array = pa.array(self.ids.tolist(), pa.string())
        return self._id_array

    def rows_of_ids(self, specimen_ids: Sequence[str]) -> np.ndarray:
        """Boolean mask of the rows with these ids; raises :class:`SpecimenNotFoundError` for
        an id that is not enrolled."""
        wanted = {str(i) for i in specimen_ids}
        present = np.isin(self.ids, list(wanted))
        missing = wanted - set(self.ids[present].tolist())
        if missing:
            raise SpecimenNotFoundError(f"no enrolled specimen with id {sorted(missing)[0]!r}")
        return present

    def drop(self, mask: np.ndarray) -> int:
        """Remove the rows where ``mask`` is true (and the taxonomy of species left without
        rows); returns how many went."""
        count = int(mask.sum())
        if not count:
            return 0
        keep = ~mask
        kept = self.vectors[keep]
        self.index.remove(self.keys[mask], kept=kept)
        self._buffer = None
        self.vector_sum -= self.vectors[mask].sum(axis=0, dtype=np.float64)
        self._id_set.difference_update(self.ids[mask].tolist())
        if self._id_array is not None:
            self._id_array = self._id_array.filter(pa.array(keep))
        self._count_regions(self.labels[mask].tolist(), self.row_regions[mask].tolist(), -1)
        self.vectors = kept
        self.labels = self.labels[keep]
        self.groups = self.groups[keep]
        self.ids = self.ids[keep]
        self.sources = self.sources[keep]
        self.row_regions = self.row_regions[keep]
        self.keys = self.keys[keep]
        y, g = self.y[keep], self.g[keep]
        present = np.bincount(y, minlength=len(self.species)) > 0
        for s in np.flatnonzero(~present):
            self.taxonomy.pop(self.species[s], None)
        self.y = (np.cumsum(present) - 1)[y]
        self.species = [name for name, p in zip(self.species, present, strict=True) if p]
        used = np.bincount(g, minlength=self.group_names.size) > 0
        self.g = (np.cumsum(used) - 1)[g]
        self.group_names = self.group_names[used]
        if not len(self):
            self.vector_sum[:] = 0.0  # no rounding left behind
        self._tables()
        return count

    # ------------------------------------------------------------------ persistence
    #: row arrays of :meth:`export_state` (numbers) and its object (string) arrays.
    NUMBER_ARRAYS = ("vectors", "keys", "y", "g", "vector_sum")
    STRING_ARRAYS = ("ids", "sources", "row_regions", "group_names", "species")

    def export_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, meta)``: everything :meth:`restore_state` needs (meta is JSON-able)."""
        arrays = {name: getattr(self, name) for name in self.NUMBER_ARRAYS}
        arrays.update(
            {name: np.asarray(getattr(self, name), dtype=object) for name in self.STRING_ARRAYS}
        )
        meta = {
            "taxonomy": self.taxonomy,
            "next_key": self._next_key,
            "region_texts": self._region_texts,
        }
        return arrays, meta

    def restore_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Take over rows saved by :meth:`export_state` (the search index is restored
        separately, :meth:`index.search.VectorIndex.restore_state`); ValueError when the
        arrays do not fit together."""
        vectors = np.asarray(arrays["vectors"], np.float32)
        n = vectors.shape[0]
        species = [str(s) for s in arrays["species"]]
        names = np.asarray(arrays["group_names"], dtype=object)
        y = np.asarray(arrays["y"], np.int64)
        g = np.asarray(arrays["g"], np.int64)
        sizes = {arrays[k].shape[0] for k in ("keys", "y", "g", "ids", "sources", "row_regions")}
        if (
            vectors.ndim != 2
            or vectors.shape[1] != self.dim
            or sizes != {n}
            or (n and (y.max() >= len(species) or g.max() >= names.size))
        ):
            raise ValueError("saved rows do not fit together")
        self.vectors, self._buffer = vectors, None
        self.keys = np.asarray(arrays["keys"], np.int64)
        self.y, self.g, self.species, self.group_names = y, g, species, names
        self.labels = np.asarray(species, dtype=object)[y] if n else np.zeros(0, dtype=object)
        self.groups = names[g] if n else np.zeros(0, dtype=object)
        self.ids = np.asarray(arrays["ids"], dtype=object)
        self.sources = np.asarray(arrays["sources"], dtype=object)
        self.row_regions = np.asarray(arrays["row_regions"], dtype=object)
        self.vector_sum = np.asarray(arrays["vector_sum"], np.float64).copy()
        self.taxonomy = {str(k): dict(v) for k, v in meta["taxonomy"].items()}
        self._next_key = int(meta["next_key"])
        self._region_texts = {str(k): dict(v) for k, v in meta["region_texts"].items()}
        self._id_set = set(self.ids.tolist())
        self._id_array = None
        self._tables()

    # ------------------------------------------------------------------ lookups
    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Row positions of search-index keys (all must be enrolled)."""
        return np.searchsorted(self.keys, keys)

    def region_of_row(self, row: int) -> str:
        """The row's own region, else its species' region ('' when neither is known)."""
        region: str = self.row_regions[row] or self.taxonomy.get(self.species[self.y[row]], {}).get(
            "region", ""
        )
        return region

    def specimen_of_row(self, row: int) -> str:
        """The group (specimen) name the row was enrolled with."""
        return str(self.groups[row]).split(GROUP_SEP, 1)[-1]

    def nearest(self, q: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and raw cosine scores of the ``k`` rows nearest to the one unit query ``q``
        ``(1, d)`` among species allowed by ``mask`` (S,), best first."""
        if mask.all():
            scores, keys = self.index.search(q, k)
            good = keys[0] >= 0
            return self.rows_of_keys(keys[0][good]), scores[0][good]
        scores, keys = self.index.search(q, 4 * k)
        good = keys[0] >= 0
        rows = self.rows_of_keys(keys[0][good])
        keep = mask[self.y[rows]]
        if keep.sum() >= k or len(self) <= 4 * k:
            return rows[keep][:k], scores[0][good][keep][:k]
        allowed = np.flatnonzero(mask[self.y])  # rare filter: exact search over its rows
        sims = self.vectors[allowed] @ q[0]
        best = np.argsort(-sims, kind="stable")[:k]
        return allowed[best], sims[best]

    def per_species_max(self, dense: np.ndarray) -> np.ndarray:
        """(m, n) scores over the rows -> (m, S) best score per species."""
        if dense.shape[1] == 0:
            return np.full((dense.shape[0], len(self.species)), -np.inf, np.float32)
        return np.maximum.reduceat(dense[:, self.order], self.starts, axis=1)

    # ------------------------------------------------------------------ tables
    def _tables(self) -> None:
        """The per-species tables from ``y`` / ``g`` and the taxonomy (integer work only)."""
        S = len(self.species)
        self.genus: list[str] = [
            self.taxonomy.get(s, {}).get("genus") or genus_of(s) for s in self.species
        ]
        self.family: list[str] = [self.taxonomy.get(s, {}).get("family", "") for s in self.species]
        self.counts: np.ndarray = np.bincount(self.y, minlength=S)
        group_species = np.zeros(self.group_names.size, np.int64)
        group_species[self.g] = self.y
        self.group_counts: np.ndarray = (
            np.bincount(group_species, minlength=S) if self.g.size else np.zeros(S, np.int64)
        )
        self.order: np.ndarray = np.argsort(self.y, kind="stable")
        self.starts: np.ndarray = (
            np.searchsorted(self.y[self.order], np.arange(S)) if S else np.zeros(0, np.int64)
        )
        self.rows_by_species: list[np.ndarray] = np.split(self.order, self.starts[1:]) if S else []
        regions = []
        for name in self.species:
            found = regions_of(self.taxonomy.get(name, {}).get("region", ""))
            for text in self._region_texts.get(name, {}):
                found |= regions_of(text)
            regions.append(found)
        self.species_regions: list[set[str]] = regions
