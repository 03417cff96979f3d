"""Calibration maths: temperature of the softmax, threshold quantiles, AUROC and ECE.

The held-out scores these functions consume are produced by :mod:`index.calibrate`
(leave-one-specimen-out for known species, leave-one-species-out for unknown ones);
docs/index.md explains the procedure. :func:`auroc` and :func:`expected_calibration_error` are
also the evaluation reports' (``index.workflows.evaluation``) single implementations.
"""

from __future__ import annotations

import numpy as np

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


def open_set_probabilities(
    similarities: np.ndarray,
    temperature: float,
    none_score: float,
    none_temperature: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(species probabilities (m, S), none-of-these probability (m,))``, summing to 1.

    Among themselves the species follow :func:`softmax` at ``temperature``; "none of these"
    stands to the best species at odds ``exp((none_score - best score) / none_temperature)``
    (default ``temperature``, which is one softmax over the species and ``none_score``). So
    "none" leads exactly when the best species scores below ``none_score``, whatever the two
    temperatures; ``none_score = -inf`` gives it nothing."""
    species = softmax(similarities, temperature).astype(np.float64)
    sims = np.asarray(similarities, dtype=np.float64)
    best = np.where(np.isfinite(sims), sims, -np.inf).max(axis=1) if sims.shape[1] else None
    m = sims.shape[0]
    if best is None or not np.isfinite(none_score):
        return species.astype(np.float32), np.zeros(m, np.float32)
    tau = max(float(none_temperature if none_temperature is not None else temperature), 1e-12)
    # odds capped at e^50: "none" takes all but ~1e-22, and the species keep their order
    gap = np.clip((none_score - best) / tau, -50.0, 50.0)
    gap = np.where(np.isfinite(best), gap, 50.0)  # nothing scorable: none takes (almost) all
    odds = np.exp(gap) * species.max(axis=1)
    none = odds / (1.0 + odds)
    return (species / (1.0 + odds)[:, None]).astype(np.float32), none.astype(np.float32)


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
    from scipy.optimize import minimize_scalar  # imported when fitting (0.3 s)

    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(similarities, targets, float(np.exp(log_t))),
        bounds=(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE)),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(np.exp(result.x))


def cap_confidence(similarities: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """``temperature``, raised where needed so that the mean top probability of these samples
    under :func:`softmax` does not exceed their Laplace-smoothed accuracy
    ``(right + 1) / (n + 2)``.

    Without the cap a collection whose held-out samples are all answered right drives the
    temperature to its lower bound and every answer to "> 99 %" (the first release: 0.010
    on shells-zhang8, a wrong fish answer at 1.00); n right answers out of n justify a mean
    confidence of (n + 1) / (n + 2), no more."""
    targets = np.asarray(targets, dtype=np.int64)
    right = float(np.sum(np.argmax(similarities, axis=1) == targets))
    cap = (right + 1.0) / (len(targets) + 2.0)

    def excess(log_t: float) -> float:
        top = softmax(similarities, float(np.exp(log_t))).max(axis=1)
        return float(np.mean(top)) - cap

    if excess(np.log(temperature)) <= 0 or excess(np.log(MAX_TEMPERATURE)) > 0:
        return temperature
    from scipy.optimize import brentq

    return float(np.exp(brentq(excess, np.log(temperature), np.log(MAX_TEMPERATURE), xtol=1e-4)))


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
    from scipy.stats import rankdata  # imported when measuring (0.5 s)

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
