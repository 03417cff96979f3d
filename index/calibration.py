"""Calibration maths: temperature of the softmax, threshold quantiles, AUROC and ECE.

The held-out scores these functions consume are produced by :mod:`index.calibrate`
(leave-one-specimen-out for known species, leave-one-species-out for unknown ones);
docs/index.md explains the procedure. :func:`auroc` and :func:`expected_calibration_error` are
also the evaluation reports' (``index.evaluation``) single implementations.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import rankdata

#: bounds of the fitted softmax temperature (cosine similarities lie in [-1, 1]).
MIN_TEMPERATURE = 0.01
MAX_TEMPERATURE = 1.0


def softmax(similarities: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``similarities / temperature``; ``-inf`` entries get probability 0
    (a row that is all ``-inf`` stays all zero)."""
    sims = np.asarray(similarities, dtype=np.float64) / max(float(temperature), 1e-12)
    finite = np.isfinite(sims)
    top = np.where(finite, sims, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.where(finite, np.exp(np.where(finite, sims - top, 0.0)), 0.0)
    total = weights.sum(axis=1, keepdims=True)
    return (weights / np.where(total > 0, total, 1.0)).astype(np.float32)


def with_none(similarities: np.ndarray, none_score: float) -> np.ndarray:
    """The species scores with a last column for "none of these": ``none_score`` (the score
    below which the best species is rejected; ``-inf`` = never)."""
    sims = np.asarray(similarities, dtype=np.float32)
    column = np.full((sims.shape[0], 1), none_score, np.float32)
    return np.concatenate([sims, column], axis=1)


def open_set_probabilities(
    similarities: np.ndarray, temperature: float, none_score: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(species probabilities (m, S), none-of-these probability (m,))``: one softmax over
    the species scores and ``none_score``, so the species' probabilities leave room for the
    specimen being none of them. A best species below ``none_score`` is exactly the case
    where "none" is the most probable outcome."""
    probs = softmax(with_none(similarities, none_score), temperature)
    return probs[:, :-1], probs[:, -1]


def negative_log_likelihood(
    similarities: np.ndarray, targets: np.ndarray, temperature: float
) -> float:
    """Mean NLL of the ``targets`` columns under :func:`softmax`."""
    probs = softmax(similarities, temperature).astype(np.float64)
    picked = probs[np.arange(len(targets)), targets]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(similarities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature minimising the NLL of ``targets`` (searched on a log scale)."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        raise ValueError("no samples to fit a temperature on")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(similarities, targets, float(np.exp(log_t))),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(result.x))


def acceptance_threshold(scores: np.ndarray, share: float) -> float:
    """Threshold ``t`` that accepts (``score <= t``) at least ``share`` of new samples from the
    distribution of ``scores``: the ``ceil((n + 1) * share)``-th smallest score (the split-
    conformal rank), or the largest score when ``n`` is too small for that rank."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite score")
    share = float(np.clip(share, 0.0, 1.0))
    rank = int(np.ceil((scores.size + 1) * share))
    return float(scores[min(max(rank, 1), scores.size) - 1])


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """Area under the ROC curve for telling ``positives`` (higher scores expected) from
    ``negatives`` (note the order: negatives first); ties count one half. None when either
    side is empty. Computed exactly from ranks (Mann-Whitney U)."""
    negatives = np.asarray(negatives, dtype=np.float64)
    positives = np.asarray(positives, dtype=np.float64)
    if negatives.size == 0 or positives.size == 0:
        return None
    ranks = rankdata(np.concatenate([negatives, positives]))
    pos_ranks = ranks[negatives.size :].sum()
    return float(
        (pos_ranks - positives.size * (positives.size + 1) / 2) / (positives.size * negatives.size)
    )


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> float:
    """ECE of top-1 confidences against correctness over ``bins`` equal-width bins (see
    :func:`reliability`)."""
    return reliability(confidence, correct, bins)[0]


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 15
) -> tuple[float, dict[str, list[float]]]:
    """ECE over ``bins`` equal-width confidence bins (right-closed: a confidence on an edge
    falls in the lower bin), and the reliability-diagram data.

    ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b| (0 for no sample). Returns the ECE
    and ``{"bin_edges", "accuracy", "confidence", "count"}`` (empty bins have NaN accuracy).
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / count
    used = count > 0
    n = max(len(confidence), 1)
    ece = float(np.sum(count[used] / n * np.abs(accuracy[used] - mean_conf[used])))
    return ece, {
        "bin_edges": edges.tolist(),
        "accuracy": [float(a) for a in accuracy],
        "confidence": [float(c) for c in mean_conf],
        "count": [int(c) for c in count],
    }
