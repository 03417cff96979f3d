"""Prototypes of species in embedding space (SimpleShot CL2N) and multi-view query fusion.

CL2N: subtract the collection mean from every L2-normalised embedding, L2-normalise again; a
species prototype is the normalised mean of its centred embeddings. Species with distinct forms
can get several prototypes (spherical k-means over their centred embeddings).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from embedder.vectors import EPS, l2_normalise


def power_normalise(vectors: np.ndarray, power: float) -> np.ndarray:
    """Each component raised to ``power`` with its sign kept, then L2-normalised (``power=1``:
    plain normalisation). At 0.5 this is the Hellinger map of non-negative (pooled ReLU)
    features: it evens out the few bursty components that dominate raw cosines."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if power == 1.0:
        return l2_normalise(vectors)
    mapped = np.abs(vectors)  # one copy, worked on in place (10^6 x 1280 is 5 GB)
    if power == 0.5:
        np.sqrt(mapped, out=mapped)  # the default; 3x faster than np.power
    else:
        np.power(mapped, np.float32(power), out=mapped)
    np.copysign(mapped, vectors, out=mapped)
    return l2_normalise(mapped)


def fuse_views(views: np.ndarray) -> np.ndarray:
    """One vector for several views of one specimen: mean of the normalised views, renormalised."""
    views = np.asarray(views, dtype=np.float32)
    if views.ndim == 1:
        views = views[None, :]
    if views.shape[0] == 0:
        raise ValueError("no view to fuse")
    return l2_normalise(l2_normalise(views).mean(axis=0))


def centre(vectors: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """CL2N transform: ``normalise(normalise(x) - mean)``; ``mean=None`` only normalises."""
    vectors = l2_normalise(vectors)
    if mean is None:
        return vectors
    return l2_normalise(vectors - mean.astype(np.float32))


def spherical_kmeans(
    vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 25
) -> np.ndarray:
    """``k`` unit-length centres of unit vectors (k-means++ start, cosine assignment)."""
    vectors = l2_normalise(vectors)
    n = vectors.shape[0]
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centres = [vectors[rng.integers(n)]]
    for _ in range(1, k):
        dist = 1.0 - np.max(vectors @ np.stack(centres).T, axis=1)
        dist = np.clip(dist, 0, None) ** 2
        total = dist.sum()
        pick = rng.choice(n, p=dist / total) if total > EPS else rng.integers(n)
        centres.append(vectors[pick])
    c = np.stack(centres)
    labels = np.full(n, -1)
    for _ in range(iterations):
        new_labels = np.argmax(vectors @ c.T, axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = vectors[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
        c = l2_normalise(c)
    return c


def species_prototypes(
    centred: np.ndarray,
    labels: np.ndarray,
    n_species: int,
    groups: np.ndarray | None = None,
    per_species: int = 1,
    min_groups_per_prototype: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Prototypes of centred embeddings: ``(prototypes (P, d), owner (P,) species index)``.

    A species gets ``min(per_species, groups // min_groups_per_prototype)`` k-means prototypes
    (at least one), counting distinct ``groups`` (specimens) rather than images, so two views of
    one shell never become two "forms". Species with no vector get none.
    """
    labels = np.asarray(labels)
    d = centred.shape[1]
    if per_species <= 1:
        sums = np.zeros((n_species, d), np.float64)
        np.add.at(sums, labels, centred)
        present = np.bincount(labels, minlength=n_species) > 0
        return l2_normalise(sums[present].astype(np.float32)), np.flatnonzero(present)
    protos: list[np.ndarray] = []
    owners: list[int] = []
    for s in range(n_species):
        rows = np.flatnonzero(labels == s)
        if rows.size == 0:
            continue
        n_groups = np.unique(groups[rows]).size if groups is not None else rows.size
        k = max(1, min(per_species, n_groups // max(1, min_groups_per_prototype)))
        if k == 1:
            centres = l2_normalise(centred[rows].mean(axis=0, keepdims=True))
        else:
            centres = spherical_kmeans(centred[rows], k, seed=seed + s)
        protos.append(centres)
        owners += [s] * centres.shape[0]
    if not protos:
        return np.zeros((0, d), np.float32), np.zeros(0, np.int64)
    return np.concatenate(protos).astype(np.float32), np.asarray(owners, np.int64)


def centred_species_sums(
    vectors: np.ndarray, mean: np.ndarray | None, labels: np.ndarray, n_species: int
) -> np.ndarray:
    """Per species, the sum of its rows' CL2N vectors ``normalise(x - mean)`` ``(S, d)``
    float32, without materialising the centred rows: for unit rows
    ``|x - mean|^2 = 1 - 2 x.mean + |mean|^2``, so the sum is ``sum(x / r) - mean * sum(1 / r)``
    (one matrix-vector product and one sparse product, O(n d) streaming instead of an
    (n, d) copy). ``mean=None``: sums of the normalised rows."""
    vectors = np.asarray(vectors, np.float32)
    n, d = vectors.shape
    if n == 0:
        return np.zeros((n_species, d), np.float32)
    if mean is None:
        weights = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), EPS)
    else:
        mean = np.asarray(mean, np.float32)
        squared = 1.0 - 2.0 * (vectors @ mean) + float(mean @ mean)
        weights = 1.0 / np.maximum(np.sqrt(np.maximum(squared, 0.0)), EPS)
    weights = weights.astype(np.float32)
    to_species = sparse.csc_matrix(
        (weights, (np.asarray(labels, np.int64), np.arange(n))), shape=(n_species, n)
    )
    sums = np.asarray(to_species @ vectors, np.float32)
    if mean is not None:
        totals = np.bincount(labels, weights=weights, minlength=n_species)
        sums -= totals[:, None].astype(np.float32) * mean[None, :]
    return sums


def max_by_owner(scores: np.ndarray, owner: np.ndarray, n_species: int) -> np.ndarray:
    """Per species, the best of its prototypes' scores: ``(m, P) -> (m, n_species)``; species
    without a prototype get ``-inf``."""
    out = np.full((scores.shape[0], n_species), -np.inf, np.float32)
    if scores.shape[1] == 0:
        return out
    if np.unique(owner).size == owner.size:  # one prototype per species: a plain scatter
        out[:, owner] = scores
        return out
    for p in range(scores.shape[1]):
        out[:, owner[p]] = np.maximum(out[:, owner[p]], scores[:, p])
    return out
