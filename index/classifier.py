"""Numpy-level identification: :class:`VectorIdentifier` turns query embeddings into calibrated
open-set answers against a set of enrolled embeddings.

Scoring (see docs/index.md): species score = cosine similarity to the species' CL2N
prototype(s) (``method="prototype"``), to its nearest enrolled specimen (``"knn"``) or their
mean; probabilities = softmax(score / T); ``unknown_score`` = 1 - best species score;
``ood_score`` = 1 - mean raw cosine similarity to the ``ood_k`` nearest specimens. Decisions:
out_of_domain, unknown_species, then species / genus / family roll-up when the probability
passes its threshold, else uncertain.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy import sparse

from .calibration import (
    acceptance_threshold,
    auroc,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from .config import IdentifierConfig
from .errors import EmptyCollectionError, InvalidQueryError, SpecimenNotFoundError
from .prototypes import centre, fuse_views, l2_normalise, max_by_owner, species_prototypes
from .results import (
    BatchScores,
    CalibrationStats,
    Candidate,
    Decision,
    Identification,
    SimilarSpecimen,
    Thresholds,
)
from .search import VectorIndex

#: collections up to this size get exact nearest-specimen scores (dense product).
EXACT_KNN_LIMIT = 20_000
#: floating-point operations allowed for one calibration (caps held-out queries on big stores).
CALIBRATION_FLOPS = 6e10
#: below this many held-out images the OOD threshold is never stricter than the fallback.
MIN_OOD_SAMPLES = 20
_GROUP_SEP = "\x1f"
_REGION_SPLIT = re.compile(r"\s*[;,|]\s*")


def genus_from_name(species: str) -> str:
    """Genus from a ``Genus_species`` name ('' when the first word is not capitalised)."""
    parts = re.split(r"[_\s]+", species.strip())
    return parts[0] if len(parts) >= 2 and parts[0][:1].isupper() else ""


def _regions_of(text: str) -> set[str]:
    return {part.lower() for part in _REGION_SPLIT.split(text or "") if part}


def _topk_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Row-wise mean of the ``k`` largest finite values (NaN when a row has none)."""
    k = max(1, min(k, values.shape[1]))
    part = -np.partition(-values, k - 1, axis=1)[:, :k]
    finite = np.isfinite(part)
    count = finite.sum(axis=1)
    total = np.where(finite, part, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class VectorIdentifier:
    """Open-set species identification over enrolled embeddings (numpy in, numpy out).

    Build with :meth:`fit`; grow or shrink with :meth:`add` / :meth:`remove`; thresholds come
    from :meth:`calibrate` (run by ``fit``/``add``/``remove`` unless ``calibrate=False``) and
    can be overridden with :meth:`set_overrides` (kept through recalibration).
    """

    def __init__(self, dim: int, config: IdentifierConfig | None = None) -> None:
        self.config = config or IdentifierConfig()
        self.dim = int(dim)
        cfg = self.config
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._labels = np.zeros(0, dtype=object)
        self._groups = np.zeros(0, dtype=object)
        self._ids = np.zeros(0, dtype=object)
        self._sources = np.zeros(0, dtype=object)
        self._row_regions = np.zeros(0, dtype=object)
        self._keys = np.zeros(0, np.int64)
        self._next_key = 0
        self.taxonomy: dict[str, dict[str, str]] = {}
        self._specimen_index = VectorIndex(
            self.dim,
            ann_threshold=cfg.ann_threshold,
            factory=cfg.ann_factory,
            nprobe=cfg.ann_nprobe,
            use_gpu=cfg.use_gpu,
        )
        self._proto_index = VectorIndex(self.dim, ann_threshold=10**9, use_gpu=cfg.use_gpu)
        self._overrides: dict[str, float] = {}
        self._calibrated = self._default_thresholds()
        self._thresholds = self._calibrated
        self._refresh()

    # ================================================================== building
    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        species: Sequence[str],
        taxonomy: Mapping[str, Mapping[str, str]] | None = None,
        specimen_ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        config: IdentifierConfig | None = None,
        *,
        sources: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        calibrate: bool = True,
    ) -> VectorIdentifier:
        """An identifier over ``vectors`` (n, d) labelled ``species``.

        ``taxonomy``: species -> {genus, family, region, ...} (genus defaults to the first word
        of a ``Genus_species`` name); ``specimen_ids``: one unique id per vector (default
        ``"0"``, ``"1"``, ...); ``groups``: the physical specimen each vector shows (views of
        one shell share a group; default each vector its own); ``regions``: per-vector region
        overriding the species' one. Thresholds are calibrated unless ``calibrate=False``.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InvalidQueryError(f"vectors must be a 2-d array, got shape {vectors.shape}")
        identifier = cls(vectors.shape[1], config)
        identifier.add(
            vectors,
            species,
            taxonomy,
            specimen_ids,
            groups,
            sources=sources,
            regions=regions,
            calibrate=calibrate,
        )
        return identifier

    def add(
        self,
        vectors: np.ndarray,
        species: Sequence[str],
        taxonomy: Mapping[str, Mapping[str, str]] | None = None,
        specimen_ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        *,
        sources: Sequence[str] | None = None,
        regions: Sequence[str] | None = None,
        calibrate: bool = True,
    ) -> None:
        """Enroll more vectors (same arguments as :meth:`fit`); no retraining is involved."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        n = vectors.shape[0]
        if vectors.ndim != 2 or (n and vectors.shape[1] != self.dim):
            raise InvalidQueryError(
                f"expected vectors of size {self.dim}, got shape {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise InvalidQueryError("vectors contain NaN or infinite values")
        species = [str(s) for s in species]
        if len(species) != n:
            raise InvalidQueryError(f"{n} vectors but {len(species)} species labels")
        if any(not s for s in species):
            raise InvalidQueryError("empty species name")
        start = self._next_key
        ids = [
            str(i) for i in (specimen_ids if specimen_ids is not None else range(start, start + n))
        ]
        if len(ids) != n or len(set(ids)) != n:
            raise InvalidQueryError("specimen_ids must give one unique id per vector")
        clash = set(ids) & set(self._ids.tolist())
        if clash:
            raise InvalidQueryError(f"specimen ids already enrolled: {sorted(clash)[:5]}")
        group_names = list(groups) if groups is not None else ids
        if len(group_names) != n:
            raise InvalidQueryError(f"{n} vectors but {len(group_names)} groups")
        for name, info in (taxonomy or {}).items():
            merged = dict(self.taxonomy.get(name, {}))
            merged.update({k: str(v) for k, v in info.items() if v not in (None, "")})
            self.taxonomy[name] = merged
        for name in set(species):
            self.taxonomy.setdefault(name, {})
        if n == 0:
            return
        keys = np.arange(start, start + n, dtype=np.int64)
        self._next_key = start + n
        vectors = l2_normalise(vectors)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._labels = np.concatenate([self._labels, np.asarray(species, dtype=object)])
        self._groups = np.concatenate(
            [
                self._groups,
                np.asarray(
                    [f"{s}{_GROUP_SEP}{g}" for s, g in zip(species, group_names, strict=True)],
                    dtype=object,
                ),
            ]
        )
        self._ids = np.concatenate([self._ids, np.asarray(ids, dtype=object)])
        self._sources = np.concatenate(
            [self._sources, np.asarray(list(sources or [""] * n), dtype=object)]
        )
        self._row_regions = np.concatenate(
            [self._row_regions, np.asarray(list(regions or [""] * n), dtype=object)]
        )
        self._keys = np.concatenate([self._keys, keys])
        self._specimen_index.add(vectors, keys)
        self._refresh()
        if calibrate:
            self.calibrate()

    def remove(self, specimen_ids: Sequence[str], calibrate: bool = True) -> int:
        """Remove enrolled vectors by specimen id; returns how many went (unknown ids raise
        :class:`SpecimenNotFoundError` before anything is removed)."""
        wanted = {str(i) for i in specimen_ids}
        if not wanted:
            return 0
        present = np.isin(self._ids, list(wanted))
        missing = wanted - set(self._ids[present].tolist())
        if missing:
            raise SpecimenNotFoundError(f"no enrolled specimen with id {sorted(missing)[0]!r}")
        return self._drop_rows(present, calibrate)

    def remove_species(self, species: str, calibrate: bool = True) -> int:
        """Remove every vector of ``species``; returns how many went (0 if none)."""
        return self._drop_rows(self._labels == species, calibrate)

    def _drop_rows(self, drop: np.ndarray, calibrate: bool) -> int:
        count = int(drop.sum())
        if not count:
            return 0
        self._specimen_index.remove(self._keys[drop])
        keep = ~drop
        gone = set(self._labels[drop].tolist()) - set(self._labels[keep].tolist())
        for array in (
            "_vectors",
            "_labels",
            "_groups",
            "_ids",
            "_sources",
            "_row_regions",
            "_keys",
        ):
            setattr(self, array, getattr(self, array)[keep])
        for name in gone:
            self.taxonomy.pop(name, None)
        self._refresh()
        if calibrate:
            self.calibrate()
        return count

    def _refresh(self) -> None:
        """Recompute species tables, the CL2N mean, centred vectors and prototypes."""
        cfg = self.config
        names, y = (
            np.unique(self._labels.astype(str), return_inverse=True)
            if len(self._labels)
            else (np.zeros(0, str), np.zeros(0, np.int64))
        )
        self._species = [str(s) for s in names]
        self._y = y.astype(np.int64)
        groups = (
            np.unique(self._groups.astype(str), return_inverse=True)[1]
            if len(self._groups)
            else np.zeros(0, np.int64)
        )
        self._g: np.ndarray = np.asarray(groups, np.int64)
        S = len(self._species)
        self._mean = None
        if cfg.centre and cfg.min_species_to_centre <= S and len(self._vectors):
            self._mean = self._vectors.mean(axis=0)
        self._centred = centre(self._vectors, self._mean) if len(self._vectors) else self._vectors
        self._protos, self._owner = species_prototypes(
            self._centred,
            self._y,
            S,
            self._g,
            cfg.prototypes_per_species,
            cfg.min_specimens_per_prototype,
            cfg.seed,
        )
        self._proto_index.reset(self._protos, np.arange(len(self._owner), dtype=np.int64))
        # species-level tables
        self._genus = [
            self.taxonomy.get(s, {}).get("genus") or genus_from_name(s) for s in self._species
        ]
        self._family = [self.taxonomy.get(s, {}).get("family", "") for s in self._species]
        self._counts = np.bincount(self._y, minlength=S)
        group_species = np.zeros(int(self._g.max()) + 1 if self._g.size else 0, np.int64)
        group_species[self._g] = self._y
        self._group_counts = (
            np.bincount(group_species, minlength=S) if self._g.size else np.zeros(S, np.int64)
        )
        self._order = np.argsort(self._y, kind="stable")
        self._starts = (
            np.searchsorted(self._y[self._order], np.arange(S)) if S else np.zeros(0, np.int64)
        )
        self._rows_by_species = np.split(self._order, self._starts[1:]) if S else []
        self._genus_map, self._genus_names = self._rollup_matrix(self._genus)
        self._family_map, self._family_names = self._rollup_matrix(self._family)
        regions = []
        for s, name in enumerate(self._species):
            found = _regions_of(self.taxonomy.get(name, {}).get("region", ""))
            for text in set(self._row_regions[self._rows_by_species[s]].tolist()):
                found |= _regions_of(text)
            regions.append(found)
        self._species_regions = regions

    @staticmethod
    def _rollup_matrix(parents: list[str]) -> tuple[sparse.csr_matrix, list[str]]:
        names = sorted({p for p in parents if p})
        index = {p: i for i, p in enumerate(names)}
        rows = [s for s, p in enumerate(parents) if p]
        cols = [index[parents[s]] for s in rows]
        matrix = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(parents), len(names))
        )
        return matrix, names

    # ================================================================== properties
    def __len__(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def species(self) -> list[str]:
        """Enrolled species names (sorted)."""
        return list(self._species)

    @property
    def specimen_ids(self) -> list[str]:
        return [str(i) for i in self._ids]

    @property
    def labels(self) -> list[str]:
        """Species of every enrolled vector, in enrollment order."""
        return [str(s) for s in self._labels]

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors.copy()

    @property
    def search_kind(self) -> str:
        """``"flat"`` (exact) or the FAISS factory string of the specimen index."""
        return self._specimen_index.kind

    def counts(self) -> dict[str, int]:
        """Images per species."""
        return {s: int(c) for s, c in zip(self._species, self._counts, strict=True)}

    def specimen_counts(self) -> dict[str, int]:
        """Distinct specimens (groups) per species."""
        return {s: int(c) for s, c in zip(self._species, self._group_counts, strict=True)}

    def taxon_of(self, species: str) -> tuple[str, str]:
        """``(genus, family)`` of an enrolled species."""
        s = self._species.index(species)
        return self._genus[s], self._family[s]

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    @thresholds.setter
    def thresholds(self, value: Thresholds) -> None:
        """Replace the calibrated thresholds (overrides still apply on top)."""
        self._calibrated = value
        self._thresholds = value.with_overrides(**self._overrides)

    @property
    def calibrated_thresholds(self) -> Thresholds:
        """The thresholds of the last calibration, without overrides (what stores keep)."""
        return self._calibrated

    def set_overrides(self, **values: float | None) -> Thresholds:
        """Fix thresholds by hand (``temperature``, ``unknown``, ``ood``, ``*_probability``);
        ``None`` un-sets one. They survive :meth:`calibrate`."""
        for key, value in values.items():
            if value is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = float(value)
        self._thresholds = self._calibrated.with_overrides(**self._overrides)
        return self._thresholds

    def _default_thresholds(self) -> Thresholds:
        cfg = self.config
        return Thresholds(
            temperature=cfg.fallback_temperature,
            ood=1.0 - cfg.fallback_ood_similarity,
            unknown=float("inf"),
            species_probability=cfg.species_probability,
            genus_probability=cfg.genus_probability,
            family_probability=cfg.family_probability,
            target_recall=cfg.target_recall,
            source="default",
        )

    # ================================================================== scoring
    def _check_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidQueryError(
                f"query vectors must have size {self.dim} (this collection's model), got shape "
                f"{queries.shape}"
            )
        if not np.isfinite(queries).all():
            raise InvalidQueryError("query vectors contain NaN or infinite values")
        if len(self) == 0:
            raise EmptyCollectionError("the collection is empty: enroll some species first")
        return l2_normalise(queries)

    def _per_species_max(self, dense: np.ndarray) -> np.ndarray:
        """(m, n) scores over enrolled rows -> (m, S) best score per species."""
        if dense.shape[1] == 0:
            return np.full((dense.shape[0], len(self._species)), -np.inf, np.float32)
        return np.maximum.reduceat(dense[:, self._order], self._starts, axis=1)

    def _prototype_scores(self, centred_queries: np.ndarray) -> np.ndarray:
        P = len(self._owner)
        scores, ids = self._proto_index.search(centred_queries, P)
        full = np.full((centred_queries.shape[0], P), -np.inf, np.float32)
        np.put_along_axis(full, np.clip(ids, 0, None), scores, axis=1)
        return max_by_owner(full, self._owner, len(self._species))

    def _nearest_scores(self, raw_queries: np.ndarray, centred_queries: np.ndarray) -> np.ndarray:
        if len(self) <= EXACT_KNN_LIMIT:
            return self._per_species_max(centred_queries @ self._centred.T)
        # large collections: re-score the nearest specimens found by FAISS in raw space
        _, keys = self._specimen_index.search(raw_queries, self.config.knn_candidates)
        out = np.full((raw_queries.shape[0], len(self._species)), -np.inf, np.float32)
        for i in range(raw_queries.shape[0]):
            rows = np.searchsorted(self._keys, keys[i][keys[i] >= 0])
            sims = self._centred[rows] @ centred_queries[i]
            floor = float(sims.min()) - 1e-3 if sims.size else -1.0
            out[i, :] = floor
            np.maximum.at(out[i], self._y[rows], sims)
        return out

    def _species_scores(self, raw_queries: np.ndarray) -> np.ndarray:
        centred_queries = centre(raw_queries, self._mean)
        method = self.config.method
        if method == "prototype":
            return self._prototype_scores(centred_queries)
        if method == "knn":
            return self._nearest_scores(raw_queries, centred_queries)
        return 0.5 * (
            self._prototype_scores(centred_queries)
            + self._nearest_scores(raw_queries, centred_queries)
        )

    def _ood_scores(self, raw_queries: np.ndarray) -> np.ndarray:
        scores, _ = self._specimen_index.search(raw_queries, self.config.ood_k)
        return 1.0 - _topk_mean(scores, self.config.ood_k)

    @staticmethod
    def _unknown_scores(similarities: np.ndarray) -> np.ndarray:
        best = (
            np.max(similarities, axis=1)
            if similarities.shape[1]
            else np.full(len(similarities), -np.inf)
        )
        return np.where(np.isfinite(best), 1.0 - best, 2.0)

    def _decide(
        self,
        probabilities: np.ndarray,
        unknown: np.ndarray,
        ood: np.ndarray,
        thresholds: Thresholds,
    ) -> list[tuple[Decision, str | None, float]]:
        """Per query: (decision, named taxon or None, its probability)."""
        th = thresholds
        genus_probs = (self._genus_map.T @ probabilities.T).T if self._genus_names else None
        family_probs = (self._family_map.T @ probabilities.T).T if self._family_names else None
        out: list[tuple[Decision, str | None, float]] = []
        for i in range(probabilities.shape[0]):
            if not ood[i] <= th.ood:  # NaN (no neighbour) counts as off-domain
                out.append(("out_of_domain", None, 0.0))
                continue
            if unknown[i] > th.unknown:
                out.append(("unknown_species", None, 0.0))
                continue
            top = int(np.argmax(probabilities[i]))
            if probabilities[i, top] >= th.species_probability:
                out.append(("species", self._species[top], float(probabilities[i, top])))
                continue
            if genus_probs is not None:
                g = int(np.argmax(genus_probs[i]))
                if genus_probs[i, g] >= th.genus_probability:
                    out.append(("genus", self._genus_names[g], float(genus_probs[i, g])))
                    continue
            if family_probs is not None:
                f = int(np.argmax(family_probs[i]))
                if family_probs[i, f] >= th.family_probability:
                    out.append(("family", self._family_names[f], float(family_probs[i, f])))
                    continue
            out.append(("uncertain", None, 0.0))
        return out

    def candidate_mask(
        self, region: str | None = None, genus: str | None = None, family: str | None = None
    ) -> np.ndarray:
        """Species allowed by the filters (case-insensitive); raises InvalidQueryError when
        no enrolled species passes them."""
        mask = np.ones(len(self._species), bool)
        if genus:
            mask &= np.array([g.lower() == genus.strip().lower() for g in self._genus], bool)
        if family:
            mask &= np.array([f.lower() == family.strip().lower() for f in self._family], bool)
        if region:
            wanted = _regions_of(region)
            mask &= np.array([bool(r & wanted) for r in self._species_regions], bool)
        if not mask.any():
            asked = ", ".join(
                f"{k}={v!r}"
                for k, v in (("region", region), ("genus", genus), ("family", family))
                if v
            )
            raise InvalidQueryError(f"no enrolled species matches {asked}")
        return mask

    def score_batch(self, queries: np.ndarray) -> BatchScores:
        """Score many single-vector queries: similarities and probabilities over
        :attr:`species`, unknown and OOD scores, and the decision for each."""
        queries = self._check_queries(queries)
        sims = self._species_scores(queries)
        probs = softmax(sims, self._thresholds.temperature)
        unknown = self._unknown_scores(sims)
        ood = self._ood_scores(queries)
        decisions = [str(d) for d, _, _ in self._decide(probs, unknown, ood, self._thresholds)]
        return BatchScores(
            list(self._species),
            sims,
            probs,
            unknown.astype(np.float32),
            ood.astype(np.float32),
            decisions,
        )

    def identify(
        self,
        query: np.ndarray,
        top_k: int = 5,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
    ) -> Identification:
        """Identify ONE specimen from the embeddings of its views ``(v, d)`` (fused first)."""
        started = time.perf_counter()
        views = self._check_queries(query)
        q = fuse_views(views)[None, :]
        mask = self.candidate_mask(region, genus, family)
        sims = self._species_scores(q)
        sims[:, ~mask] = -np.inf
        th = self._thresholds
        probs = softmax(sims, th.temperature)
        unknown = self._unknown_scores(sims)
        ood = self._ood_scores(q)
        decision, taxon, confidence = self._decide(probs, unknown, ood, th)[0]
        scored = time.perf_counter()
        order = [j for j in np.argsort(-probs[0], kind="stable") if mask[j]][: max(1, top_k)]
        candidates = [
            Candidate(
                species=self._species[j],
                genus=self._genus[j],
                family=self._family[j],
                score=round(float(sims[0, j]), 6),
                probability=round(float(probs[0, j]), 6),
            )
            for j in order
        ]
        similar = self._similar(q, max(1, top_k), mask)
        votes = self._region_votes(q, mask)
        species_name = genus_name = family_name = None
        if decision == "species":
            species_name = taxon
            assert taxon is not None
            s = self._species.index(taxon)
            genus_name, family_name = self._genus[s] or None, self._family[s] or None
        elif decision == "genus":
            genus_name = taxon
            families = {
                self._family[s] for s, g in enumerate(self._genus) if g == taxon and self._family[s]
            }
            family_name = families.pop() if len(families) == 1 else None
        elif decision == "family":
            family_name = taxon
        return Identification(
            decision=decision,
            species=species_name,
            genus=genus_name,
            family=family_name,
            confidence=round(confidence, 6),
            candidates=candidates,
            similar=similar,
            region=(max(votes, key=lambda r: votes[r]) if votes else None),
            region_votes=votes,
            ood_score=round(float(np.nan_to_num(ood[0], nan=2.0)), 6),
            unknown_score=round(float(unknown[0]), 6),
            timings_ms={
                "classify": round((scored - started) * 1e3, 3),
                "search": round((time.perf_counter() - scored) * 1e3, 3),
            },
        )

    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        region: str | None = None,
        genus: str | None = None,
        family: str | None = None,
    ) -> list[SimilarSpecimen]:
        """The ``k`` enrolled images nearest to the (fused) query, optionally filtered."""
        q = fuse_views(self._check_queries(query))[None, :]
        return self._similar(q, k, self.candidate_mask(region, genus, family))

    def _nearest_rows(
        self, q: np.ndarray, k: int, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and raw cosine scores of the ``k`` nearest specimens of allowed species."""
        if mask.all():
            scores, keys = self._specimen_index.search(q, k)
            good = keys[0] >= 0
            return np.searchsorted(self._keys, keys[0][good]), scores[0][good]
        scores, keys = self._specimen_index.search(q, 4 * k)
        good = keys[0] >= 0
        rows = np.searchsorted(self._keys, keys[0][good])
        keep = mask[self._y[rows]]
        if keep.sum() >= k or len(self) <= 4 * k:
            return rows[keep][:k], scores[0][good][keep][:k]
        allowed = np.flatnonzero(mask[self._y])  # rare filter: exact search over its rows
        sims = self._vectors[allowed] @ q[0]
        best = np.argsort(-sims, kind="stable")[:k]
        return allowed[best], sims[best]

    def _similar(self, q: np.ndarray, k: int, mask: np.ndarray) -> list[SimilarSpecimen]:
        rows, scores = self._nearest_rows(q, k, mask)
        return [
            SimilarSpecimen(
                specimen_id=str(self._ids[r]),
                species=self._species[self._y[r]],
                genus=self._genus[self._y[r]],
                score=round(float(s), 6),
                source=str(self._sources[r]),
                region=str(
                    self._row_regions[r]
                    or self.taxonomy.get(self._species[self._y[r]], {}).get("region", "")
                ),
                specimen=str(self._groups[r]).split(_GROUP_SEP, 1)[-1],
            )
            for r, s in zip(rows, scores, strict=True)
        ]

    def _region_votes(self, q: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        rows, scores = self._nearest_rows(q, self.config.region_k, mask)
        votes: dict[str, float] = {}
        for r, s in zip(rows, scores, strict=True):
            text = self._row_regions[r] or self.taxonomy.get(self._species[self._y[r]], {}).get(
                "region", ""
            )
            if text:
                votes[text] = votes.get(text, 0.0) + max(float(s), 0.0)
        total = sum(votes.values())
        if total <= 0:
            return {}
        return {k: round(v / total, 4) for k, v in sorted(votes.items(), key=lambda kv: -kv[1])}

    # ================================================================== calibration
    def _calibration_rows(self, max_queries: int, rng: np.random.Generator) -> np.ndarray:
        """Held-out query rows: whole groups, round-robin over species, up to ``max_queries``."""
        by_species: list[list[np.ndarray]] = []
        for rows in self._rows_by_species:
            groups = [rows[self._g[rows] == g] for g in np.unique(self._g[rows])]
            order = rng.permutation(len(groups))
            by_species.append([groups[i] for i in order])
        chosen: list[np.ndarray] = []
        total, depth = 0, 0
        while total < max_queries and any(depth < len(g) for g in by_species):
            for groups in by_species:
                if depth < len(groups) and total < max_queries:
                    chosen.append(groups[depth])
                    total += len(groups[depth])
            depth += 1
        return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)

    def _held_out_prototype_scores(self, rows: np.ndarray) -> np.ndarray:
        """Prototype scores of enrolled rows with each row's own group left out of its species'
        prototype(s); species left without images get ``-inf``."""
        cfg = self.config
        S = len(self._species)
        queries = self._centred[rows]
        sims = max_by_owner(queries @ self._protos.T, self._owner, S)
        multi = np.bincount(self._owner, minlength=S) > 1
        sums = np.zeros((S, self.dim), np.float64)
        np.add.at(sums, self._y, self._centred)
        group_sums = np.zeros((int(self._g.max()) + 1, self.dim), np.float64)
        np.add.at(group_sums, self._g, self._centred)
        y, g = self._y[rows], self._g[rows]
        rest = sums[y] - group_sums[g]
        norms = np.linalg.norm(rest, axis=1)
        own = np.einsum("ij,ij->i", queries, rest / np.maximum(norms, 1e-12)[:, None])
        own = np.where(norms > 1e-6 * np.maximum(1, self._counts[y]), own, -np.inf)
        for i in np.flatnonzero(multi[y]):  # species with k-means prototypes: recompute them
            keep = (self._y == y[i]) & (self._g != g[i])
            if not keep.any():
                own[i] = -np.inf
                continue
            protos, _ = species_prototypes(
                self._centred[keep],
                np.zeros(int(keep.sum()), np.int64),
                1,
                self._g[keep],
                cfg.prototypes_per_species,
                cfg.min_specimens_per_prototype,
                cfg.seed + int(y[i]),
            )
            own[i] = float(np.max(protos @ queries[i]))
        sims[np.arange(len(rows)), y] = own
        return sims

    def _held_out_scores(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For enrolled ``rows`` as queries: species scores with the own group held out,
        OOD scores without the own group, and OOD scores without the own species."""
        method = self.config.method
        k = self.config.ood_k
        m = len(rows)
        sims = np.zeros((m, len(self._species)), np.float32)
        ood_known = np.zeros(m)
        ood_unknown = np.zeros(m)
        if method != "knn":
            sims = self._held_out_prototype_scores(rows)
        for start in range(0, m, 256):
            block = rows[start : start + 256]
            own_group = self._g[None, :] == self._g[block][:, None]
            own_species = self._y[None, :] == self._y[block][:, None]
            raw = self._vectors[block] @ self._vectors.T
            ood_known[start : start + 256] = 1.0 - _topk_mean(np.where(own_group, -np.inf, raw), k)
            ood_unknown[start : start + 256] = 1.0 - _topk_mean(
                np.where(own_species, -np.inf, raw), k
            )
            if method != "prototype":
                dense = np.where(own_group, -np.inf, self._centred[block] @ self._centred.T)
                nearest = self._per_species_max(dense.astype(np.float32))
                if method == "knn":
                    sims[start : start + 256] = nearest
                else:
                    sims[start : start + 256] = 0.5 * (sims[start : start + 256] + nearest)
        return sims, ood_known, ood_unknown

    def calibrate(self, target_recall: float | None = None) -> Thresholds:
        """Fit the temperature and the open-set thresholds on the enrolled data.

        Held-out queries are enrolled images scored as if their specimen (group) had never been
        enrolled. Known-species samples (their species keeps other specimens) fit the softmax
        temperature (minimum NLL) and set the unknown-species threshold; leave-one-species-out
        samples (own species removed) set the OOD threshold, so in-domain but unknown species
        are answered ``unknown_species`` rather than ``out_of_domain``. Together the two
        thresholds accept ``target_recall`` of the known-species samples. Collections too small
        for a step keep a documented fallback (see ``stats.notes``).
        """
        cfg = self.config
        target = float(target_recall if target_recall is not None else cfg.target_recall)
        if not 0.5 < target < 1.0:
            raise ValueError("target_recall must be between 0.5 and 1")
        th = self._default_thresholds().model_copy(update={"target_recall": target})
        notes: list[str] = []
        stats = CalibrationStats()
        S = len(self._species)
        if len(self) == 0:
            notes.append("empty collection: default thresholds")
            self.thresholds = th.model_copy(update={"stats": CalibrationStats(notes=notes)})
            return self._thresholds
        budget = int(
            CALIBRATION_FLOPS
            / max(1, len(self) * self.dim * (2 if cfg.method == "prototype" else 3))
        )
        rng = np.random.default_rng(cfg.seed)
        rows = self._calibration_rows(max(50, min(cfg.calibration_queries, budget)), rng)
        sims, ood_known, ood_unknown = self._held_out_scores(rows)
        y = self._y[rows]
        known = (self._group_counts[y] > 1) & np.isfinite(sims[np.arange(len(rows)), y])
        sims_unknown = sims.copy()
        sims_unknown[np.arange(len(rows)), y] = -np.inf
        stats.known_queries = int(known.sum())
        stats.unknown_queries = len(rows) if S > 1 else 0
        source: Literal["calibrated", "fallback"] = "calibrated"

        # temperature: known-species samples, more than one species
        if S > 1 and known.sum() >= 5:
            th.temperature = fit_temperature(sims[known], y[known])
            probs_fallback = softmax(sims[known], cfg.fallback_temperature)
            probs = softmax(sims[known], th.temperature)
            correct = np.argmax(sims[known], axis=1) == y[known]
            stats.known_top1 = round(float(correct.mean()), 4)
            stats.ece_before = round(
                expected_calibration_error(probs_fallback.max(axis=1), correct), 4
            )
            stats.ece_after = round(expected_calibration_error(probs.max(axis=1), correct), 4)
        else:
            source = "fallback"
            notes.append(
                f"temperature: fallback {cfg.fallback_temperature} (needs 2+ species and 5+ "
                "images of species with 2+ specimens)"
            )

        # OOD threshold: stranger than `ood_in_domain_share` of the in-domain images of species
        # the collection would not know (leave-one-species-out), and rejecting at most
        # `ood_miss_share` of the allowed misses among known-species samples
        miss = 1.0 - target
        in_domain = ood_unknown[np.isfinite(ood_unknown)] if S > 1 else np.zeros(0)
        known_ood = ood_known[known & np.isfinite(ood_known)]
        candidates = []
        if in_domain.size >= 5:
            candidates.append(acceptance_threshold(in_domain, cfg.ood_in_domain_share))
        if known_ood.size >= 5:
            candidates.append(acceptance_threshold(known_ood, 1.0 - cfg.ood_miss_share * miss))
        if candidates:
            th.ood = max(candidates)
            if in_domain.size < 5:
                notes.append("ood: from known-species samples only (one species enrolled)")
            if in_domain.size + known_ood.size < MIN_OOD_SAMPLES:
                th.ood = max(th.ood, 1.0 - cfg.fallback_ood_similarity)
                notes.append(
                    f"ood: fewer than {MIN_OOD_SAMPLES} held-out images, so at least the "
                    f"fallback (mean similarity {cfg.fallback_ood_similarity})"
                )
        else:
            source = "fallback"
            seen = np.concatenate([in_domain, ood_known[np.isfinite(ood_known)]])
            th.ood = max([th.ood, *seen.tolist()])
            notes.append(
                f"ood: fallback mean similarity {cfg.fallback_ood_similarity} (fewer than 5 "
                "held-out images)"
            )

        # unknown threshold: the known samples passing OOD, so both filters keep `target`
        unknown_known = self._unknown_scores(sims[known])
        passed = np.nan_to_num(ood_known[known], nan=np.inf) <= th.ood
        if passed.sum() >= 3:
            needed = target / max(passed.mean(), 1e-9)
            if needed >= 1.0:
                th.unknown = float("inf")
                notes.append("unknown: the OOD filter alone already rejects the allowed share")
            else:
                th.unknown = acceptance_threshold(unknown_known[passed], needed)
        else:
            source = "fallback"
            notes.append(
                "unknown: no unknown_species decisions (needs 3+ images of species with 2+ "
                "specimens to learn how far a new specimen of a known species can be)"
            )

        # what the thresholds achieve on the held-out samples
        if known.any():
            accepted = (np.nan_to_num(ood_known[known], nan=np.inf) <= th.ood) & (
                unknown_known <= th.unknown
            )
            stats.known_recall = round(float(accepted.mean()), 4)
        if S > 1:
            unknown_scores = self._unknown_scores(sims_unknown)
            rejected = (np.nan_to_num(ood_unknown, nan=np.inf) > th.ood) | (
                unknown_scores > th.unknown
            )
            stats.unknown_rejection = round(float(rejected.mean()), 4)
            value = auroc(unknown_known, unknown_scores)
            stats.unknown_auroc = None if value is None else round(value, 4)
        stats.notes = notes
        th.source = source
        th.stats = stats
        self.thresholds = th
        return self._thresholds
