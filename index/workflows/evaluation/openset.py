"""Open-set evaluation helpers: which species are held out as never enrolled, and the figures
of one method on known, unknown and off-domain queries."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from index.calibration import auroc
from index.results import DECISIONS

from .metrics import REPORTED_KNOWN_RECALL, fpr_at_recall


def holdout_species(
    species: Sequence[str], fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split species into (known, unknown): ``round(fraction * n)`` never-enrolled species,
    at least one, leaving at least two known. Raises ValueError with fewer than 3 species."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("--unknown-fraction must be between 0 and 1 (exclusive)")
    names = sorted(set(species))
    if len(names) < 3:
        raise ValueError(
            f"open-set evaluation needs at least 3 species (2 known, 1 unknown); got {len(names)}"
        )
    n_unknown = min(max(1, round(fraction * len(names))), len(names) - 2)
    shuffled = names[:]
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled[n_unknown:]), sorted(shuffled[:n_unknown])


def decision_rates(decisions: Sequence[str]) -> dict[str, float]:
    """Share of queries given each decision (every decision in :data:`index.results.DECISIONS`)."""
    n = len(decisions)
    counts = {d: 0 for d in DECISIONS}
    for decision in decisions:
        counts[decision] = counts.get(decision, 0) + 1
    return {d: (c / n if n else float("nan")) for d, c in counts.items()}


def detection_figures(
    known: np.ndarray, novel: np.ndarray, target_recall: float = REPORTED_KNOWN_RECALL
) -> dict[str, float | int]:
    """AUROC and FPR at ``target_recall`` known recall for scores where higher = more novel
    (AUROC NaN when a side is empty)."""
    area = auroc(known, novel)  # negatives (known) first, positives (novel) second
    return {
        "auroc": float("nan") if area is None else area,
        "fpr_at_recall": fpr_at_recall(known, novel, target_recall),
        "queries": len(novel),
    }


def open_set_figures(
    known_unknown_score: np.ndarray,
    known_ood_score: np.ndarray,
    unknown_scores: np.ndarray,
    ood_scores: Mapping[str, np.ndarray],
    decisions: Mapping[str, Sequence[str]] | None,
    target_recall: float = REPORTED_KNOWN_RECALL,
) -> dict:
    """Figures of one method.

    Unknown species are detected with the unknown score, off-domain folders with the OOD
    score (each against the known-species test queries). ``decisions`` maps a query set name
    (``known``, ``unknown``, ``ood:<folder>``) to the method's decisions, or is ``None`` for a
    method without open-set decisions (the probe).
    """
    figures: dict = {
        "unknown": detection_figures(known_unknown_score, unknown_scores, target_recall),
        "ood": {
            name: detection_figures(known_ood_score, scores, target_recall)
            for name, scores in ood_scores.items()
        },
    }
    figures["decision_rates"] = (
        {name: decision_rates(d) for name, d in decisions.items()}
        if decisions is not None
        else None
    )
    return figures
