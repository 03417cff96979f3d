"""Embedding vectors as numpy arrays: the project's one L2 normaliser."""

from __future__ import annotations

import numpy as np

#: norms below this count as zero (such rows stay zero instead of blowing up).
EPS = 1e-8


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as float32 (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, EPS)
