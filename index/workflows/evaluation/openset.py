"""Open-set evaluation helpers: which species are held out as never enrolled, and the figures
of one method on known, unknown and off-domain queries, for every registered open-set score
(:mod:`index.open_set`)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from index.calibration import auroc, expected_calibration_error
from index.open_set import OPEN_SET_SCORES
from index.results import DECISIONS, Placement, Thresholds

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


def reported_scores() -> list[tuple[str, str]]:
    """(name, decision) of every registered open-set score (:data:`index.open_set.
    OPEN_SET_SCORES`), in report order: by decision, most specific first (unknown_species
    before out_of_domain), then registration order."""
    scores = [(name, score.decision) for name, score in OPEN_SET_SCORES.items()]
    return sorted(scores, key=lambda pair: DECISIONS.index(pair[1]))


def open_set_figures(
    known: Mapping[str, np.ndarray],
    unknown: Mapping[str, np.ndarray],
    ood: Mapping[str, Mapping[str, np.ndarray]],
    decisions: Mapping[str, Sequence[str]] | None,
    target_recall: float = REPORTED_KNOWN_RECALL,
) -> dict:
    """Figures of one method, one entry per open-set score (:func:`reported_scores`).

    ``known`` / ``unknown``: score name -> scores of the known-species test queries / of the
    never-enrolled species' queries; ``ood``: off-domain folder -> score name -> scores. A
    score answering ``out_of_domain`` is measured on each off-domain folder (folder ->
    figures), any other on the never-enrolled species, each against the known queries.
    ``decisions`` maps a query set name (``known``, ``unknown``, ``ood:<folder>``) to the
    method's decisions, or is ``None`` for a method without open-set decisions (the probe).
    """
    figures: dict = {}
    for name, decision in reported_scores():
        if decision == "out_of_domain":
            figures[name] = {
                folder: detection_figures(known[name], scores[name], target_recall)
                for folder, scores in ood.items()
            }
        else:
            figures[name] = detection_figures(known[name], unknown[name], target_recall)
    figures["decision_rates"] = (
        {name: decision_rates(d) for name, d in decisions.items()}
        if decisions is not None
        else None
    )
    return figures


def open_set_thresholds(thresholds: Thresholds) -> dict[str, float | str | None]:
    """The thresholds a method's figures report: the temperature, each open-set score's
    (None when it never rejects) in report order, and where they came from."""
    return {
        "temperature": thresholds.temperature,
        **{
            name: value if np.isfinite(value := thresholds.open_set_threshold(name)) else None
            for name, _ in reported_scores()
        },
        "source": thresholds.source,
    }


def placement_figures(
    placements: Sequence[Placement | None],
    decisions: Sequence[str],
    truth: Mapping[str, Sequence[str]],
    enrolled: Mapping[str, set[str]],
) -> dict[str, dict[str, float | int]]:
    """Per rank (genus, family): how the photos of never-enrolled species were placed.

    ``truth``: rank -> each photo's own taxon ('' = unknown). A placement counts where the
    answer shows it (decisions other than species and out_of_domain). ``coverage``: photos
    placed at that rank; ``precision``: of those, placed in their own taxon; ``ece``: of the
    placement probability against being right; ``in_collection``: photos whose taxon has an
    enrolled species (``enrolled``: rank -> enrolled taxa; no placement can be right for the
    others)."""
    shown = [
        p if p is not None and d not in ("species", "out_of_domain") else None
        for p, d in zip(placements, decisions, strict=True)
    ]
    figures: dict[str, dict[str, float | int]] = {}
    for rank, own in truth.items():
        placed = [
            (p, t) for p, t in zip(shown, own, strict=True) if p is not None and p.rank == rank
        ]
        right = np.array([p.name == t for p, t in placed], float)
        probability = np.array([p.probability for p, _ in placed])
        figures[rank] = {
            "queries": len(own),
            "in_collection": float(np.mean([t in enrolled.get(rank, set()) for t in own]))
            if len(own)
            else float("nan"),
            "placed": len(placed),
            "coverage": len(placed) / len(own) if len(own) else float("nan"),
            "precision": float(right.mean()) if placed else float("nan"),
            "ece": expected_calibration_error(probability, right) if placed else float("nan"),
        }
    return figures
