"""The out-of-domain score (``ood``): 1 - mean raw cosine similarity of the query to its
``ood_k`` nearest enrolled photos (FAISS k-NN); above its threshold the answer is
``out_of_domain``, and a query without a neighbour (NaN) always is.

Calibration: the threshold lets through ``ood_in_domain_share`` of in-domain photos of species
the collection would not know (leave-one-species-out), so they reach the unknown-species check,
and rejects at most ``ood_miss_share`` of the allowed misses among known-species photos. A
species whose own held-out photos lie farther out gets its own wider threshold
(``Thresholds.ood_by_species``), used for queries whose nearest photo is of that species.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..calibration import acceptance_threshold
from .base import OPEN_SET_SCORES, HeldOutImages, HeldOutOpenSet, OpenSetScore

if TYPE_CHECKING:
    from ..config import IdentifierConfig
    from ..enrolled import EnrolledRows
    from ..results import Decision, Thresholds

#: below this many held-out images the OOD threshold is never stricter than the fallback.
MIN_OOD_SAMPLES = 20


def topk_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Row-wise mean of the ``k`` largest finite values (NaN when a row has none)."""
    k = max(1, min(k, values.shape[1]))
    part = -np.partition(-values, k - 1, axis=1)[:, :k]
    finite = np.isfinite(part)
    count = finite.sum(axis=1)
    total = np.where(finite, part, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@OPEN_SET_SCORES.register("ood")
class OutOfDomainScore(OpenSetScore):
    """1 - mean raw cosine similarity of the query to its ``ood_k`` nearest enrolled photos
    (FAISS k-NN); no neighbour (NaN) is always out of domain."""

    decision: ClassVar[Decision] = "out_of_domain"

    def __init__(self, rows: EnrolledRows, config: IdentifierConfig) -> None:
        self.rows = rows
        self.k = config.ood_k
        self.config = config

    @staticmethod
    def default_threshold(config: IdentifierConfig) -> float:
        return 1.0 - config.fallback_ood_similarity

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        return self.scores_and_nearest(raw_queries)[0]

    def scores_and_nearest(self, raw_queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OOD scores and the species of each query's nearest row (-1 where none)."""
        scores, keys = self.rows.index.search(raw_queries, self.k)
        nearest = np.full(len(raw_queries), -1, np.int64)
        found = keys[:, 0] >= 0 if keys.size else np.zeros(len(raw_queries), bool)
        if found.any():
            nearest[found] = self.rows.y[self.rows.rows_of_keys(keys[found, 0])]
        return 1.0 - topk_mean(scores, self.k), nearest

    def query_scores(
        self, queries: np.ndarray, sims: np.ndarray, threshold: float, thresholds: Thresholds
    ) -> tuple[np.ndarray, np.ndarray]:
        """The score, and the score lowered by how much wider than ``threshold`` the nearest
        photo's species' own threshold is (``Thresholds.ood_by_species``)."""
        ood, nearest = self.scores_and_nearest(queries)
        if not thresholds.ood_by_species or not np.isfinite(threshold):
            return ood, ood
        margin = np.zeros(len(self.rows.species) + 1)
        index = {name: i for i, name in enumerate(self.rows.species)}
        for name, own in thresholds.ood_by_species.items():
            if name in index:
                margin[index[name]] = max(0.0, own - threshold)
        return ood, ood - margin[nearest]  # nearest -1 picks the last entry, 0

    def held_out_scores(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """OOD scores of enrolled ``rows`` as queries: without their own group (a new
        specimen of a known species) and without their own species (an unknown species)."""
        from ..scorers import HELD_OUT_BLOCK

        enrolled, k = self.rows, self.k
        known = np.zeros(len(rows))
        unknown = np.zeros(len(rows))
        for start in range(0, len(rows), HELD_OUT_BLOCK):
            block = rows[start : start + HELD_OUT_BLOCK]
            own_group = enrolled.g[None, :] == enrolled.g[block][:, None]
            own_species = enrolled.y[None, :] == enrolled.y[block][:, None]
            raw = enrolled.vectors[block] @ enrolled.vectors.T
            known[start : start + HELD_OUT_BLOCK] = 1.0 - topk_mean(
                np.where(own_group, -np.inf, raw), k
            )
            unknown[start : start + HELD_OUT_BLOCK] = 1.0 - topk_mean(
                np.where(own_species, -np.inf, raw), k
            )
        return known, unknown

    def held_out(self, images: HeldOutImages) -> HeldOutOpenSet:
        return HeldOutOpenSet(*self.held_out_scores(images.rows))

    def fit(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        accepted: np.ndarray,
        thresholds: Thresholds,
        notes: list[str],
    ) -> tuple[float, bool]:
        """The threshold by the rules of the module doc, then the per-species ones."""
        threshold, fitted = self._fit(images, scores, thresholds, notes)
        if fitted:
            thresholds.ood_by_species = self._fit_species(images, scores, threshold, thresholds)
        return threshold, fitted

    def _fit(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        thresholds: Thresholds,
        notes: list[str],
    ) -> tuple[float, bool]:
        cfg = self.config
        miss = 1.0 - thresholds.target_recall
        in_domain = (
            scores.unknown[np.isfinite(scores.unknown)] if images.n_species > 1 else np.zeros(0)
        )
        known_ood = scores.known[images.known & np.isfinite(scores.known)]
        candidates = []
        if in_domain.size >= 5:
            candidates.append(acceptance_threshold(in_domain, cfg.ood_in_domain_share))
        if known_ood.size >= 5:
            candidates.append(acceptance_threshold(known_ood, 1.0 - cfg.ood_miss_share * miss))
        if not candidates:
            seen = np.concatenate([in_domain, scores.known[np.isfinite(scores.known)]])
            notes.append(
                f"ood: fallback mean similarity {cfg.fallback_ood_similarity} (fewer than 5 "
                "held-out images)"
            )
            return max([self.default_threshold(cfg), *seen.tolist()]), False
        threshold = max(candidates)
        if in_domain.size < 5:
            notes.append("ood: from known-species samples only (one species enrolled)")
        if in_domain.size + known_ood.size < MIN_OOD_SAMPLES:
            threshold = max(threshold, 1.0 - cfg.fallback_ood_similarity)
            notes.append(
                f"ood: fewer than {MIN_OOD_SAMPLES} held-out images, so at least the "
                f"fallback (mean similarity {cfg.fallback_ood_similarity})"
            )
        return threshold, True

    def _fit_species(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        threshold: float,
        thresholds: Thresholds,
    ) -> dict[str, float]:
        """Per-species thresholds, by the known-species rule of :meth:`_fit` applied to each
        species' own held-out photos (``ood_species_photos`` or more of them): kept where
        they exceed the collection's. A species photographed unlike the rest (underwater fish
        among studio shells) widens the domain around itself instead of having its new photos
        answered out_of_domain."""
        miss = 1.0 - thresholds.target_recall
        own = np.nan_to_num(scores.known, nan=np.inf)
        widened: dict[str, float] = {}
        for s in np.unique(images.y[images.known]):
            mine = own[images.known & (images.y == s)]
            mine = mine[np.isfinite(mine)]
            if mine.size < self.config.ood_species_photos:
                continue
            own_threshold = acceptance_threshold(mine, 1.0 - self.config.ood_miss_share * miss)
            if own_threshold > threshold:
                widened[images.species[int(s)]] = own_threshold
        return widened

    def accepts_known(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        threshold: float,
        thresholds: Thresholds,
    ) -> np.ndarray:
        """Known images within ``threshold``, or their species' own wider one."""
        by_species = thresholds.ood_by_species
        limit = np.array([by_species.get(name, threshold) for name in images.species] + [threshold])
        known = scores.known[images.known]
        return np.nan_to_num(known, nan=np.inf) <= limit[images.y[images.known]]
