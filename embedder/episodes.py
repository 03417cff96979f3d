"""Few-shot measurement on embeddings: episodic N-way K-shot accuracy with prototypes (CL2N,
as SimpleShot), all-way K-shot, seen-species nearest-prototype top-1, and Recall@K retrieval.
Numpy in, numpy out; used for model selection during training, by the benchmarks, by store
training and by ``shellid evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .vectors import l2_normalise


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


def summarize(values: Sequence[float] | np.ndarray, n_way: int, k_shot: int) -> EpisodeResult:
    """Mean and 95 % half-width (1.96 · sd / √n) of per-episode (or per-repeat) accuracies."""
    a = np.asarray(values, dtype=np.float64)
    ci = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
    return EpisodeResult(float(a.mean()), float(ci), len(a), n_way, k_shot)


def cl2n(
    support: np.ndarray, query: np.ndarray, center: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centre on ``center`` (default: the support mean) then L2-normalise (SimpleShot CL2N)."""
    mean = support.mean(axis=0) if center is None else center
    return l2_normalise(support - mean), l2_normalise(query - mean)


def _groups_of(labels: np.ndarray, groups: Sequence[str] | None) -> np.ndarray:
    return np.asarray(groups) if groups is not None else np.arange(len(labels)).astype(str)


@dataclass(frozen=True)
class Episode:
    """Indices of one episode: ``support`` is ``(n_way, k_shot)``; ``query_way`` the class
    position (0..n_way-1) of each query."""

    support: np.ndarray
    query: np.ndarray
    query_way: np.ndarray


def sample_episodes(
    labels: Sequence[str],
    groups: Sequence[str] | None,
    n_way: int,
    k_shot: int,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
) -> Iterator[Episode]:
    """Random N-way K-shot episodes: ``k_shot`` supports per class from distinct groups and up
    to ``n_query`` queries from *other* groups of the same class (no specimen or track on both
    sides). Only classes with at least ``k_shot + 1`` groups take part."""
    y = np.asarray(labels)
    g = _groups_of(y, groups)
    rng = np.random.default_rng(seed)
    by_class: dict[str, dict[str, np.ndarray]] = {}
    for cls in np.unique(y):
        cls_groups: dict[str, list[int]] = {}
        for i in np.flatnonzero(y == cls):
            cls_groups.setdefault(str(g[i]), []).append(int(i))
        if len(cls_groups) >= k_shot + 1:
            by_class[str(cls)] = {k: np.asarray(v) for k, v in cls_groups.items()}
    classes = sorted(by_class)
    if len(classes) < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot needs {n_way} species with at least {k_shot + 1} "
            f"specimens/groups each; only {len(classes)} have enough"
        )
    for _ in range(episodes):
        chosen = rng.choice(len(classes), size=n_way, replace=False)
        support, query, way_of = [], [], []
        for way, c in enumerate(chosen):
            members = by_class[classes[c]]
            names = list(members)
            order = rng.permutation(len(names))
            shot_groups = [names[i] for i in order[:k_shot]]
            rest = np.concatenate([members[names[i]] for i in order[k_shot:]])
            support.append([int(rng.choice(members[s])) for s in shot_groups])
            q = rng.choice(rest, size=min(n_query, len(rest)), replace=False)
            query.extend(q.tolist())
            way_of.extend([way] * len(q))
        yield Episode(np.asarray(support), np.asarray(query), np.asarray(way_of))


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
    """N-way K-shot accuracy of nearest-prototype classification over random episodes
    (:func:`sample_episodes`). Features are CL2N-normalised with the support mean (or
    ``center``, e.g. the base-class mean)."""
    x = np.asarray(vectors, dtype=np.float32)
    accuracies = np.empty(episodes)
    for e, episode in enumerate(
        sample_episodes(labels, groups, n_way, k_shot, n_query, episodes, seed)
    ):
        support = x[episode.support.reshape(-1)]
        query = x[episode.query]
        support, query = cl2n(support, query, center)
        prototypes = l2_normalise(support.reshape(n_way, k_shot, -1).mean(axis=1))
        predicted = (query @ prototypes.T).argmax(axis=1)
        accuracies[e] = float((predicted == episode.query_way).mean())
    return summarize(accuracies, n_way, k_shot)


def prototype_top1(
    support: np.ndarray,
    support_labels: Sequence[str],
    query: np.ndarray,
    query_labels: Sequence[str],
) -> float:
    """Seen-species top-1: the share of ``query`` vectors whose nearest prototype (mean of a
    species' ``support`` vectors, CL2N with the support mean) is their own species'. Every
    species of the support competes; a query species with no support raises ``ValueError``.
    NaN when there are no queries. The one measure of training's ``validation="photos"`` and
    of store training's before/after figures."""
    species = sorted(set(support_labels))
    missing = sorted(set(query_labels) - set(species))
    if missing:
        raise ValueError(f"query species without support vectors: {missing[:3]}")
    if len(query_labels) == 0:
        return float("nan")
    x, q = cl2n(np.asarray(support, np.float32), np.asarray(query, np.float32))
    labels = np.asarray(support_labels)
    prototypes = l2_normalise(np.stack([x[labels == s].mean(axis=0) for s in species]))
    predicted = np.asarray(species)[(q @ prototypes.T).argmax(axis=1)]
    return float((predicted == np.asarray(query_labels)).mean())


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
    x = l2_normalise(x)
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
