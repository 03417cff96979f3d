"""The unknown-species score (``unknown``): 1 - the best species score (2 when no species
could be scored); above its threshold the answer is ``unknown_species``. "None of these" is
scored at the threshold, so the answer's probabilities leave room for a species not enrolled.

Calibration: on the known-species held-out images the earlier scores accept, the threshold
that together with them keeps ``target_recall`` of those images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..calibration import acceptance_threshold, auroc
from .base import OPEN_SET_SCORES, HeldOutImages, HeldOutOpenSet, OpenSetScore

if TYPE_CHECKING:
    from ..config import IdentifierConfig
    from ..enrolled import EnrolledRows
    from ..results import CalibrationStats, Decision, Thresholds


def unknown_scores(similarities: np.ndarray) -> np.ndarray:
    """1 - the best species score per row (2 when no species could be scored)."""
    best = (
        np.max(similarities, axis=1)
        if similarities.shape[1]
        else np.full(len(similarities), -np.inf)
    )
    return np.where(np.isfinite(best), 1.0 - best, 2.0)


@OPEN_SET_SCORES.register("unknown")
class UnknownSpeciesScore(OpenSetScore):
    """1 - the best species score (2 when no species can be scored): how far the nearest
    enrolled species is."""

    decision: ClassVar[Decision] = "unknown_species"

    def __init__(self, rows: EnrolledRows, config: IdentifierConfig) -> None:
        pass  # the species scores say it all

    @staticmethod
    def default_threshold(config: IdentifierConfig) -> float:
        return float("inf")

    def query_scores(
        self, queries: np.ndarray, sims: np.ndarray, threshold: float, thresholds: Thresholds
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = unknown_scores(sims)
        return scores, scores

    def held_out(self, images: HeldOutImages) -> HeldOutOpenSet:
        return HeldOutOpenSet(unknown_scores(images.sims), unknown_scores(images.sims_unknown))

    def fit(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        accepted: np.ndarray,
        thresholds: Thresholds,
        notes: list[str],
    ) -> tuple[float, bool]:
        """False: no unknown_species decisions (fallback)."""
        if accepted.sum() < 3:
            notes.append(
                "unknown: no unknown_species decisions (needs 3+ images of species with 2+ "
                "specimens to learn how far a new specimen of a known species can be)"
            )
            return float("inf"), False
        needed = thresholds.target_recall / max(accepted.mean(), 1e-9)
        if needed >= 1.0:
            notes.append("unknown: the OOD filter alone already rejects the allowed share")
            return float("inf"), True
        return acceptance_threshold(scores.known[images.known][accepted], needed), True

    def record(
        self, images: HeldOutImages, scores: HeldOutOpenSet, stats: CalibrationStats
    ) -> None:
        """``stats.unknown_auroc``: how well the score tells the held-out images as unknown
        species from the known ones."""
        if images.n_species > 1:
            value = auroc(scores.known[images.known], scores.unknown)
            stats.unknown_auroc = None if value is None else round(value, 4)

    def none_score(self, threshold: float) -> float | None:
        return 1.0 - threshold
