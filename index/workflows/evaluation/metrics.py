"""Closed-set and open-set figures from predictions and scores (numpy in, plain dicts out).

Precision, recall, F1 and the confusion matrix come from scikit-learn; top-k accuracy,
most-confused pairs and FPR at a target recall are small, documented formulas here; the
expected calibration error and AUROC come from :mod:`index.calibration` (one implementation
for calibration and reports). Every function is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from index.calibration import reliability

__all__ = [
    "ClosedSetMetrics",
    "closed_set_metrics",
    "expected_calibration_error",
    "fpr_at_recall",
    "most_confused_pairs",
    "topk_accuracy",
]

#: ECE and reliability-diagram data, the reports' name for :func:`index.calibration.reliability`.
expected_calibration_error = reliability


def topk_accuracy(probabilities: np.ndarray, true_index: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the ``k`` highest scores."""
    probabilities = np.asarray(probabilities)
    true_index = np.asarray(true_index)
    if len(true_index) == 0:
        return float("nan")
    k = min(k, probabilities.shape[1])
    top = np.argpartition(-probabilities, kth=k - 1, axis=1)[:, :k]
    return float((top == true_index[:, None]).any(axis=1).mean())


@dataclass
class ClosedSetMetrics:
    """Figures of one classifier on one closed-set test split."""

    accuracy: float
    top5_accuracy: float
    macro: dict[str, float]
    weighted: dict[str, float]
    per_species: dict[str, dict[str, float]]
    confusion: list[list[int]]
    species: list[str]
    most_confused: list[dict]
    ece: float
    reliability: dict[str, list[float]]
    ece_all: float

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "macro": self.macro,
            "weighted": self.weighted,
            "per_species": self.per_species,
            "confusion_matrix": {"species": self.species, "counts": self.confusion},
            "most_confused": self.most_confused,
            "ece": self.ece,
            "reliability": self.reliability,
            "ece_all": self.ece_all,
        }


def _precision_recall_f1(
    species: list[str], y_true: np.ndarray, y_pred: np.ndarray
) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, float]]]:
    """Macro and support-weighted precision / recall / F1, and each species', over the
    species with test images (the others are not scored)."""
    labels = np.arange(len(species))
    p, r, f, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    averages = [
        precision_recall_fscore_support(
            y_true, y_pred, labels=labels[present], average=average, zero_division=0
        )
        for average in ("macro", "weighted")
    ]
    macro, weighted = (
        {"precision": float(a[0]), "recall": float(a[1]), "f1": float(a[2])} for a in averages
    )
    per_species = {
        species[i]: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i in labels[present]
    }
    return macro, weighted, per_species


def closed_set_metrics(
    species: Sequence[str],
    probabilities: np.ndarray,
    true_species: Sequence[str],
    n_confused: int = 10,
    calibration_bins: int = 15,
    shown: np.ndarray | None = None,
) -> ClosedSetMetrics:
    """Accuracy, top-5, macro/weighted P/R/F1, per-species P/R/F1, confusion and calibration.

    ``probabilities`` is ``(n, S)`` over ``species`` (columns); ``true_species`` must be among
    them. The prediction is the column with the highest probability. ``shown`` marks the
    answers that show their probabilities (an identifier shows none on ``unknown_species`` /
    ``out_of_domain``): ``ece`` and ``reliability`` are over those, ``ece_all`` over every row.
    """
    species = list(species)
    column = {name: i for i, name in enumerate(species)}
    unknown = sorted(set(true_species) - set(column))
    if unknown:
        raise ValueError(f"true species not among the classifier's species: {unknown[:5]}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray([column[s] for s in true_species], dtype=np.int64)
    y_pred = probabilities.argmax(axis=1)
    labels = np.arange(len(species))
    macro, weighted, per_species = _precision_recall_f1(species, y_true, y_pred)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    confidence = probabilities.max(axis=1)
    right = y_pred == y_true
    shown = np.ones(len(right), bool) if shown is None else np.asarray(shown, bool)
    ece, table = reliability(confidence[shown], right[shown], calibration_bins)
    ece_all = reliability(confidence, right, calibration_bins)[0]
    return ClosedSetMetrics(
        accuracy=float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        top5_accuracy=topk_accuracy(probabilities, y_true, 5),
        macro=macro,
        weighted=weighted,
        per_species=per_species,
        confusion=matrix.astype(int).tolist(),
        species=species,
        most_confused=most_confused_pairs(matrix, species, n_confused),
        ece=ece,
        reliability=table,
        ece_all=ece_all,
    )


def most_confused_pairs(matrix: np.ndarray, species: Sequence[str], n: int = 10) -> list[dict]:
    """The ``n`` largest off-diagonal cells: ``{true, predicted, count, share}`` (share of the
    true species' test images), largest first; ties broken by name."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1)
    cells = [
        (int(matrix[i, j]), species[i], species[j], i)
        for i in range(len(species))
        for j in range(len(species))
        if i != j and matrix[i, j] > 0
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [
        {"true": t, "predicted": pr, "count": c, "share": c / totals[i] if totals[i] else 0.0}
        for c, t, pr, i in cells[:n]
    ]


#: The known recall at which the reports and benchmarks compare open-set scores ("share of
#: unknowns still accepted at 95 % known recall", as in the OOD literature's FPR@95). A fixed
#: yardstick, not the product's operating point (that is ``index.config.DEFAULT_TARGET_RECALL``).
REPORTED_KNOWN_RECALL = 0.95


def fpr_at_recall(
    known_scores: np.ndarray, novel_scores: np.ndarray, recall: float = REPORTED_KNOWN_RECALL
) -> float:
    """Share of novel queries still accepted when the threshold accepts ``recall`` of the known.

    Scores are "higher = more likely novel" (unknown or off-domain); a query is accepted when
    its score is at most the ``recall`` quantile of the known queries' scores.
    """
    known = np.asarray(known_scores, dtype=np.float64)
    novel = np.asarray(novel_scores, dtype=np.float64)
    if len(known) == 0 or len(novel) == 0:
        return float("nan")
    threshold = np.quantile(known, recall, method="higher")
    return float((novel <= threshold).mean())
