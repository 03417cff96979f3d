"""Synthetic enrolled vectors for the index's unit tests: species as clusters of specimens,
each specimen photographed as a few near-identical views."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32)."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def specimens_around(
    centres: np.ndarray,
    counts: Sequence[int],
    rng: np.random.Generator,
    specimen_noise: float,
    view_noise: float,
    label: Callable[[int], str],
    views: int = 2,
) -> tuple[np.ndarray, list[str], list[str]]:
    """``counts[s]`` specimens around ``centres[s]`` (``specimen_noise``), ``views`` views
    each (``view_noise``): ``(vectors, species labels, specimen groups p0, p1, ...)``."""
    dim = centres.shape[1]
    vectors, labels, groups = [], [], []
    for s, count in enumerate(counts):
        for p in range(count):
            specimen = centres[s] + specimen_noise * rng.normal(size=dim)
            for _ in range(views):
                vectors.append(specimen + view_noise * rng.normal(size=dim))
                labels.append(label(s))
                groups.append(f"p{p}")
    return np.array(vectors), labels, groups
