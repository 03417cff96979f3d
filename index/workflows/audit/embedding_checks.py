"""Audit checks on embeddings: near duplicates, likely mislabels, off-domain images and
outliers. Numpy in, findings out; vectors are L2-normalised rows, one per readable image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedder.vectors import l2_normalise


@dataclass
class NeighbourTable:
    """``k`` nearest other images of each image (cosine), and pairs above a similarity."""

    index: np.ndarray  # (n, k) neighbour rows, most similar first
    similarity: np.ndarray  # (n, k)
    close_pairs: list[tuple[int, int, float]]  # (i, j, cosine) with i < j


def nearest_neighbours(
    vectors: np.ndarray,
    k: int,
    pair_threshold: float,
    copy_id: Sequence[int] | None = None,
    block: int = 1024,
) -> NeighbourTable:
    """Exact k-NN by cosine, skipping each image itself and its byte-identical copies
    (same ``copy_id``), plus every pair whose cosine is at least ``pair_threshold``."""
    x = l2_normalise(np.asarray(vectors, dtype=np.float32))
    n = len(x)
    k = max(0, min(k, n - 1))
    ids = np.asarray(copy_id) if copy_id is not None else np.arange(n)
    index = np.zeros((n, k), dtype=np.int64)
    similarity = np.zeros((n, k), dtype=np.float32)
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(sims.shape[0])
        same_copy = ids[start : start + block, None] == ids[None, :]
        sims[same_copy] = -np.inf
        sims[rows, start + rows] = -np.inf
        hi_r, hi_c = np.nonzero(sims >= pair_threshold)
        pairs += [
            (start + r, c, float(sims[r, c]))
            for r, c in zip(hi_r.tolist(), hi_c.tolist(), strict=True)
            if start + r < c
        ]
        if k:
            top = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
            top = np.take_along_axis(top, order, axis=1)
            index[start : start + len(rows)] = top
            similarity[start : start + len(rows)] = np.take_along_axis(sims, top, axis=1)
    similarity[~np.isfinite(similarity)] = np.nan  # fewer distinct images than k
    return NeighbourTable(index, similarity, pairs)


@dataclass
class CentroidSimilarity:
    """Each image's cosine to its own species' centre (leave-one-out) and to the closest
    other species' centre."""

    own: np.ndarray  # (n,) NaN for a species' only image
    best_other: np.ndarray  # (n,)
    best_other_species: list[str]


def centroid_similarity(vectors: np.ndarray, species: Sequence[str]) -> CentroidSimilarity:
    """Leave-one-out centroid similarity (the image itself does not pull its centre)."""
    x = l2_normalise(np.asarray(vectors, dtype=np.float64))
    labels = np.asarray(species)
    names = sorted(set(species))
    col = {s: i for i, s in enumerate(names)}
    y = np.asarray([col[s] for s in labels])
    sums = np.zeros((len(names), x.shape[1]))
    np.add.at(sums, y, x)
    counts = np.bincount(y, minlength=len(names))
    own_sum = sums[y] - x
    own_n = counts[y] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(own_n > 0, np.einsum("ij,ij->i", x, l2_normalise(own_sum)), np.nan)
    to_centres = x @ l2_normalise(sums).T
    to_centres[np.arange(len(x)), y] = -np.inf
    if len(names) > 1:
        best = to_centres.argmax(axis=1)
        best_sim = to_centres[np.arange(len(x)), best]
        best_names = [names[b] for b in best]
    else:
        best_sim = np.full(len(x), np.nan)
        best_names = [""] * len(x)
    return CentroidSimilarity(own, best_sim, best_names)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value − median) / (1.4826 · MAD); MAD floored so a very tight collection does not
    turn tiny differences into huge scores."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if len(finite) == 0:
        return np.zeros_like(v)
    median = np.median(finite)
    mad = 1.4826 * np.median(np.abs(finite - median))
    scale = max(mad, 0.01 * max(abs(median), 1e-6), 1e-6)
    return (v - median) / scale


def mislabel_candidates(
    table: NeighbourTable, species: Sequence[str], centres: CentroidSimilarity
) -> list[tuple[int, str, int]]:
    """Images whose k nearest neighbours all belong to ONE other species that is also closer
    (by centroid) than their own: ``(row, suspected species, nearest neighbour row)``."""
    labels = np.asarray(species)
    found: list[tuple[int, str, int]] = []
    if table.index.shape[1] == 0:
        return found
    for i, neighbours in enumerate(table.index):
        valid = neighbours[np.isfinite(table.similarity[i])]
        if len(valid) < table.index.shape[1]:
            continue
        others = set(labels[valid].tolist())
        if len(others) != 1:
            continue
        other = others.pop()
        if other == labels[i]:
            continue
        own = centres.own[i]
        if centres.best_other_species[i] == other and (
            not np.isfinite(own) or centres.best_other[i] > own
        ):
            found.append((i, str(other), int(valid[0])))
    return found


def off_domain_scores(table: NeighbourTable) -> np.ndarray:
    """Robust z-score of each image's mean similarity to its k nearest neighbours (very
    negative = unlike anything else in the collection)."""
    if table.similarity.shape[1] == 0:
        return np.zeros(len(table.similarity))
    mean_sim = np.nanmean(np.where(np.isfinite(table.similarity), table.similarity, np.nan), axis=1)
    return robust_z(mean_sim)


def outlier_mask(centres: CentroidSimilarity, percentile: float, min_z: float = 3.0) -> np.ndarray:
    """Images beyond the ``percentile`` of the collection's distances to their species centre
    and at least ``min_z`` robust SDs above the median distance (so a tight collection flags
    nothing)."""
    distance = 1.0 - centres.own
    finite = np.isfinite(distance)
    if finite.sum() < 3:
        return np.zeros(len(distance), dtype=bool)
    limit = np.percentile(distance[finite], percentile)
    z = robust_z(distance)
    return finite & (distance > limit) & (z >= min_z)
