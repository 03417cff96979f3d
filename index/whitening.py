"""Within-species whitening: how the enrolled photos themselves say which directions of the
embedding separate species, with no retraining.

Species scores are cosine similarities to the species prototypes *after* mapping both through
``x -> diag(scale) @ basis.T @ x``, the inverse square root of the within-species covariance
(over specimens, in the centred CL2N space) shrunk toward the isotropic one:

    Sigma = (1 - a) * S_within + a * (trace(S_within) / d) * I,    a = d / (d + dof)

``dof`` = specimens - species: the degrees of freedom the covariance is estimated from. With one
specimen per species ``a = 1`` and the scores are exactly the prototype cosines (SimpleShot);
the more specimens, the more the collection's own covariance counts (shared by every species,
so a species enrolled with one photo benefits from the others' variation, as in shrinkage
LDA). The rule has no tuned constant; benchmarks/decision_benchmark.py measures it against
fixed shrinkages, k-NN and a logistic-regression probe.

The covariance is estimated from at most ``max_specimens`` specimens (a seeded sample), so a
refit costs the same at 10^4 and 10^6 vectors apart from the per-species means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .prototypes import l2_normalise

#: specimens sampled for the covariance at most (bounded refit cost on huge collections).
MAX_COVARIANCE_SPECIMENS = 20_000


@dataclass(frozen=True)
class Whitening:
    """The linear map to the whitened space (``identity`` when nothing can be estimated)."""

    basis: np.ndarray  # (d, k) eigenvectors of the within-species covariance (columns)
    scale: np.ndarray  # (k,) their factors, relative to 1 for the rest of the space
    shrinkage: float  # a in [0, 1]; 1 = isotropic (plain cosine)
    dof: int  # specimens - species the covariance was estimated from

    @classmethod
    def identity(cls, dim: int) -> Whitening:
        """The map that changes nothing (one specimen per species, or nothing enrolled)."""
        return cls(np.zeros((dim, 0), np.float32), np.zeros(0, np.float32), 1.0, 0)

    @property
    def is_identity(self) -> bool:
        return self.dof == 0

    @classmethod
    def fit(
        cls,
        centred: np.ndarray,
        species: np.ndarray,
        specimens: np.ndarray,
        max_specimens: int = MAX_COVARIANCE_SPECIMENS,
        seed: int = 0,
    ) -> Whitening:
        """Estimate the map from centred unit vectors (n, d), their species index (n,) and
        specimen index (n,): views of one specimen are averaged first, so a specimen
        photographed ten times counts once."""
        centred = np.asarray(centred, np.float32)
        n, dim = centred.shape
        if n == 0:
            return cls.identity(dim)
        _, specimen_of = np.unique(np.asarray(specimens), return_inverse=True)
        n_specimens = int(specimen_of.max()) + 1
        views = np.bincount(specimen_of, minlength=n_specimens).astype(np.float64)
        specimen_species = np.zeros(n_specimens, np.int64)
        specimen_species[specimen_of] = np.asarray(species, np.int64)
        per_species = np.bincount(specimen_species).astype(np.float64)
        dof = int(n_specimens - np.count_nonzero(per_species))
        if dof < 1:
            return cls.identity(dim)
        # species means of specimen means (each specimen weighs 1), as one sparse product
        weight = 1.0 / (views[specimen_of] * per_species[specimen_species[specimen_of]])
        to_species = sparse.csr_matrix(
            (weight, (specimen_species[specimen_of], np.arange(n))),
            shape=(per_species.size, n),
        )
        species_means = np.asarray(to_species @ centred, np.float64)
        chosen = np.arange(n_specimens)
        if n_specimens > max_specimens:  # bounded cost: a seeded sample of specimens
            chosen = np.sort(
                np.random.default_rng(seed).choice(n_specimens, max_specimens, replace=False)
            )
        slot = np.full(n_specimens, -1, np.int64)
        slot[chosen] = np.arange(chosen.size)
        rows = np.flatnonzero(slot[specimen_of] >= 0)
        to_specimen = sparse.csr_matrix(
            (1.0 / views[specimen_of[rows]], (slot[specimen_of[rows]], rows)),
            shape=(chosen.size, n),
        )
        residuals = (to_specimen @ centred) - species_means[specimen_species[chosen]]
        eigenvalues, basis = _eigen(residuals, max(1.0, dof * chosen.size / n_specimens))
        isotropic = float(eigenvalues.sum()) / dim
        if isotropic <= 0:
            return cls.identity(dim)
        shrinkage = dim / (dim + dof)
        shrunk = (1.0 - shrinkage) * eigenvalues + shrinkage * isotropic
        # outside the basis the covariance is the isotropic share alone: factor 1 there
        scale = np.sqrt(shrinkage * isotropic / shrunk)
        return cls(basis.astype(np.float32), scale.astype(np.float32), float(shrinkage), dof)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised rows (cosine in this space is the species score)."""
        vectors = np.asarray(vectors, np.float32)
        if self.is_identity:
            return l2_normalise(vectors)
        along = (vectors @ self.basis) * (self.scale - 1.0)
        return l2_normalise(vectors + along @ self.basis.T)


def _eigen(residuals: np.ndarray, dof: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero eigenvalues (k,) and eigenvectors (d, k) of ``residuals.T @ residuals / dof``;
    through the (m, m) Gram matrix when there are fewer residuals m than dimensions d, so a
    small collection's refit costs m^2 d instead of d^3."""
    m, dim = residuals.shape
    if m >= dim:
        eigenvalues, basis = np.linalg.eigh(residuals.T @ residuals / dof)
    else:
        gram_values, vectors = np.linalg.eigh(residuals @ residuals.T)
        keep = gram_values > gram_values.max(initial=0.0) * 1e-9
        gram_values, vectors = gram_values[keep], vectors[:, keep]
        basis = residuals.T @ vectors / np.sqrt(gram_values)
        eigenvalues = gram_values / dof
    keep = eigenvalues > 0
    return eigenvalues[keep], basis[:, keep]
