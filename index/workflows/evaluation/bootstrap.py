"""Bootstrap 95 % confidence intervals for per-species F1, accuracy and macro F1.

Resampling is stratified by true species (each species' test images are drawn with
replacement, keeping its count), so every resample scores every species. Species with many
test images are first subsampled to ``max_per_species`` images so that large classes do not
make the resampling slow; intervals are percentile intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    """A point estimate with its percentile confidence interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def _counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int):
    """Per-row (resample) tp, fp, fn per class for 2-D label arrays ``(R, n)``."""
    rows = np.arange(y_true.shape[0])[:, None] * n_classes
    hit = y_true == y_pred
    size = y_true.shape[0] * n_classes
    tp = np.bincount((rows + y_true)[hit], minlength=size).reshape(-1, n_classes)
    support = np.bincount((rows + y_true).ravel(), minlength=size).reshape(-1, n_classes)
    predicted = np.bincount((rows + y_pred).ravel(), minlength=size).reshape(-1, n_classes)
    return tp, predicted - tp, support - tp


@dataclass
class BootstrapResult:
    """Per-species F1, accuracy and macro F1 with 95 % intervals."""

    per_species_f1: dict[str, Interval]
    accuracy: Interval
    macro_f1: Interval
    resamples: int
    max_per_species: int

    def to_dict(self) -> dict:
        return {
            "resamples": self.resamples,
            "max_per_species": self.max_per_species,
            "accuracy": self.accuracy.to_dict(),
            "macro_f1": self.macro_f1.to_dict(),
            "per_species_f1": {s: i.to_dict() for s, i in self.per_species_f1.items()},
        }


def _strata(
    y_true: np.ndarray, scored: np.ndarray, max_per_species: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """The rows of each scored species, at most ``max_per_species`` of them (drawn)."""
    strata = []
    for cls in scored:
        members = np.flatnonzero(y_true == cls)
        if len(members) > max_per_species:
            members = rng.choice(members, size=max_per_species, replace=False)
        strata.append(members)
    return strata


def _resampled(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    strata: list[np.ndarray],
    n_classes: int,
    resamples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-species F1 (resamples x classes) and accuracy (resamples) of ``resamples``
    stratified resamples, drawn in chunks of about two million rows."""
    f1s: list[np.ndarray] = []
    accs: list[np.ndarray] = []
    chunk = max(1, 2_000_000 // max(sum(len(m) for m in strata), 1))
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        idx = np.concatenate([m[rng.integers(0, len(m), size=(r, len(m)))] for m in strata], axis=1)
        t, p = y_true[idx], y_pred[idx]
        f1s.append(_f1_from_counts(*_counts(t, p, n_classes)))
        accs.append((t == p).mean(axis=1))
    return np.concatenate(f1s), np.concatenate(accs)


def bootstrap_f1(
    true_species: Sequence[str],
    predicted_species: Sequence[str],
    resamples: int = 1000,
    max_per_species: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Stratified bootstrap of per-species F1 (plus accuracy and macro F1).

    Point values are computed on all the given predictions; intervals on ``resamples``
    stratified resamples of at most ``max_per_species`` images per true species.
    """
    if len(true_species) != len(predicted_species):
        raise ValueError("true and predicted species differ in length")
    if len(true_species) == 0:
        raise ValueError("no predictions to bootstrap")
    names = sorted(set(true_species) | set(predicted_species))
    index = {n: i for i, n in enumerate(names)}
    y_true = np.asarray([index[s] for s in true_species], dtype=np.int64)
    y_pred = np.asarray([index[s] for s in predicted_species], dtype=np.int64)
    n_classes = len(names)
    scored = np.unique(y_true)  # species with test images

    tp, fp, fn = _counts(y_true[None, :], y_pred[None, :], n_classes)
    point_f1 = _f1_from_counts(tp, fp, fn)[0]
    point_acc = float((y_true == y_pred).mean())
    point_macro = float(point_f1[scored].mean())

    rng = np.random.default_rng(seed)
    strata = _strata(y_true, scored, max_per_species, rng)
    f1, acc = _resampled(y_true, y_pred, strata, n_classes, resamples, rng)
    macro = f1[:, scored].mean(axis=1)
    tail = 100 * (1 - confidence) / 2

    def interval(value: float, samples: np.ndarray) -> Interval:
        low, high = np.percentile(samples, [tail, 100 - tail])
        return Interval(float(value), float(low), float(high))

    return BootstrapResult(
        per_species_f1={names[c]: interval(point_f1[c], f1[:, c]) for c in scored},
        accuracy=interval(point_acc, acc),
        macro_f1=interval(point_macro, macro),
        resamples=resamples,
        max_per_species=max_per_species,
    )
