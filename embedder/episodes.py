"""Few-shot measurement on embeddings: episodic N-way K-shot accuracy with prototypes (CL2N,
as SimpleShot), all-way K-shot, and Recall@K retrieval. Numpy in, numpy out; used for model
selection during training, by the benchmarks and by ``shellid evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeResult:
    """Mean accuracy over episodes with its 95 % confidence half-width."""

    mean: float
    ci95: float
    episodes: int
    n_way: int
    k_shot: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.ci95:.1f} %"

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "ci95": self.ci95,
            "episodes": self.episodes,
            "n_way": self.n_way,
            "k_shot": self.k_shot,
        }


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def cl2n(
    support: np.ndarray, query: np.ndarray, center: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre on ``center`` (default: the support mean) then L2-normalise (SimpleShot CL2N)."""
    mean = support.mean(axis=0) if center is None else center
    return l2_normalize(support - mean), l2_normalize(query - mean)


def _groups_of(labels: np.ndarray, groups: Sequence[str] | None) -> np.ndarray:
    return np.asarray(groups) if groups is not None else np.arange(len(labels)).astype(str)


def episodic_accuracy(
    vectors: np.ndarray,
    labels: Sequence[str],
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    center: np.ndarray | None = None,
) -> EpisodeResult:
    """N-way K-shot accuracy of nearest-prototype classification over random episodes.

    Each episode draws ``n_way`` classes with at least ``k_shot + 1`` groups, ``k_shot``
    support images from distinct groups and up to ``n_query`` queries from *other* groups of
    the same class (no specimen or track on both sides). Features are CL2N-normalised with the
    support mean (or ``center``, e.g. the base-class mean).
    """
    x = np.asarray(vectors, dtype=np.float32)
    y = np.asarray(labels)
    g = _groups_of(y, groups)
    rng = np.random.default_rng(seed)
    by_class: dict[str, dict[str, np.ndarray]] = {}
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        cls_groups: dict[str, list[int]] = {}
        for i in idx:
            cls_groups.setdefault(str(g[i]), []).append(int(i))
        if len(cls_groups) >= k_shot + 1:
            by_class[str(cls)] = {k: np.asarray(v) for k, v in cls_groups.items()}
    classes = sorted(by_class)
    if len(classes) < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot needs {n_way} classes with ≥ {k_shot + 1} groups; "
            f"only {len(classes)} have enough"
        )
    accuracies = np.empty(episodes)
    for e in range(episodes):
        chosen = rng.choice(len(classes), size=n_way, replace=False)
        support_idx, query_idx, query_y = [], [], []
        for way, c in enumerate(chosen):
            cls_groups = by_class[classes[c]]
            names = list(cls_groups)
            order = rng.permutation(len(names))
            shot_groups = [names[i] for i in order[:k_shot]]
            rest = np.concatenate([cls_groups[names[i]] for i in order[k_shot:]])
            support_idx.append([int(rng.choice(cls_groups[s])) for s in shot_groups])
            q = rng.choice(rest, size=min(n_query, len(rest)), replace=False)
            query_idx.extend(q.tolist())
            query_y.extend([way] * len(q))
        support = x[np.asarray(support_idx).reshape(-1)]
        query = x[np.asarray(query_idx)]
        support, query = cl2n(support, query, center)
        prototypes = l2_normalize(support.reshape(n_way, k_shot, -1).mean(axis=1))
        predicted = (query @ prototypes.T).argmax(axis=1)
        accuracies[e] = float((predicted == np.asarray(query_y)).mean())
    ci = 1.96 * accuracies.std(ddof=1) / np.sqrt(episodes) if episodes > 1 else 0.0
    return EpisodeResult(float(accuracies.mean()), float(ci), episodes, n_way, k_shot)


def recall_at_k(
    vectors: np.ndarray,
    labels: Sequence[str],
    ks: Sequence[int] = (1, 2, 4, 8),
    groups: Sequence[str] | None = None,
    center: bool = False,
) -> dict[int, float]:
    """Recall@K retrieval (each image queries all others; images of its own group excluded)."""
    x = np.asarray(vectors, dtype=np.float32)
    if center:
        x = x - x.mean(axis=0)
    x = l2_normalize(x)
    y = np.asarray(labels)
    g = _groups_of(y, groups)
    kmax = max(ks)
    hits = {k: 0 for k in ks}
    for start in range(0, len(x), 1024):
        sims = x[start : start + 1024] @ x.T
        rows = np.arange(sims.shape[0])
        same_group = g[start : start + 1024, None] == g[None, :]
        sims[same_group] = -np.inf
        sims[rows, start + rows] = -np.inf
        top = np.argpartition(-sims, kth=min(kmax, sims.shape[1] - 1), axis=1)[:, :kmax]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        match = y[top] == y[start : start + 1024, None]
        for k in ks:
            hits[k] += int(match[:, :k].any(axis=1).sum())
    return {k: hits[k] / len(x) for k in ks}
