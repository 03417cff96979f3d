"""Within-species whitening: how the enrolled photos themselves say which directions of the
embedding separate species, with no retraining.

Species scores are cosine similarities to the species prototypes *after* mapping both through
``x -> diag(scale) @ basis.T @ x``, the inverse square root of the within-species covariance
(over specimens, in the centred CL2N space) shrunk toward a target:

    Sigma = (1 - a) * S_within + a * target,    a = d / (d + dof)

``dof`` = specimens - species: the degrees of freedom the covariance is estimated from. The
target is isotropic, ``(trace(S_within) / d) * I``, unless the model carries a
:class:`WithinSpeciesPrior` (the within-species covariance of its training data, itself shrunk
toward isotropic by the same rule with its own dof). With one specimen per species ``a = 1``:
the scores are exactly the prototype cosines (SimpleShot) without a prior, and the prior's
whitened cosines with one. The more specimens, the more the collection's own covariance counts
(shared by every species, so a species enrolled with one photo benefits from the others'
variation, as in shrinkage LDA). The rule has no tuned constant; benchmarks/decision_benchmark.py
measures it against fixed shrinkages, k-NN, a logistic-regression probe and with a prior.

The covariance is estimated from at most ``max_specimens`` specimens (a seeded sample), so a
refit costs the same at 10^4 and 10^6 vectors apart from the per-species means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .config import IdentifierConfig
from .prototypes import centre, l2_normalise, power_normalise

#: specimens sampled for the covariance at most (bounded refit cost on huge collections).
MAX_COVARIANCE_SPECIMENS = 20_000
#: principal directions a :class:`WithinSpeciesPrior` keeps (the rest share one variance).
PRIOR_COMPONENTS = 64


@dataclass(frozen=True)
class WithinSpeciesPrior:
    """The within-species covariance of a model's training data, low-rank plus isotropic:
    ``basis @ diag(variances) @ basis.T + rest * (I - basis @ basis.T)``, scaled so its mean
    variance per dimension is 1. Stored in the model file (see :meth:`to_arrays`)."""

    basis: np.ndarray  # (d, k) orthonormal principal directions
    variances: np.ndarray  # (k,) their variances
    rest: float  # the variance of every other direction
    dof: int  # specimens - species of the training data

    @property
    def shrinkage(self) -> float:
        """Toward isotropic, by the same rule as a collection's covariance."""
        dim = self.basis.shape[0]
        return dim / (dim + self.dof)

    @classmethod
    def fit(
        cls,
        centred: np.ndarray,
        species: np.ndarray,
        specimens: np.ndarray,
        components: int = PRIOR_COMPONENTS,
        max_specimens: int = MAX_COVARIANCE_SPECIMENS,
        seed: int = 0,
    ) -> WithinSpeciesPrior | None:
        """The prior of centred unit vectors of training data (as :meth:`Whitening.fit`);
        None when no species has two specimens."""
        within = _within_species(centred, species, specimens, max_specimens, seed)
        if within is None:
            return None
        variances, basis, dof = within
        dim = basis.shape[0]
        order = np.argsort(variances)[::-1][:components]
        total = float(variances.sum())
        if total <= 0:
            return None
        kept = variances[order]
        rest = max(total - float(kept.sum()), 0.0) / max(dim - kept.size, 1)
        per_dim = total / dim
        return cls(
            basis[:, order].astype(np.float32),
            (kept / per_dim).astype(np.float32),
            rest / per_dim,
            dof,
        )

    @classmethod
    def of_collection(
        cls,
        vectors: np.ndarray,
        species: np.ndarray,
        specimens: np.ndarray,
        components: int = PRIOR_COMPONENTS,
        config: IdentifierConfig | None = None,
    ) -> WithinSpeciesPrior | None:
        """The prior of a labelled collection's embeddings, mapped and centred as an identifier
        with ``config`` (default: the default one) maps and centres an enrolled collection
        (``feature_power``, then CL2N on its own mean)."""
        vectors = power_normalise(vectors, (config or IdentifierConfig()).feature_power)
        if len(vectors) == 0:
            return None
        return cls.fit(centre(vectors, vectors.mean(axis=0)), species, specimens, components)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays, for a model file."""
        return {
            "basis": self.basis,
            "variances": self.variances,
            "rest": np.asarray(self.rest, np.float32),
            "dof": np.asarray(self.dof, np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WithinSpeciesPrior:
        """Inverse of :meth:`to_arrays`; raises ValueError on arrays that do not fit."""
        try:
            basis = np.asarray(arrays["basis"], np.float32)
            variances = np.asarray(arrays["variances"], np.float32)
            rest, dof = float(arrays["rest"]), int(arrays["dof"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a within-species prior ({exc})") from None
        if basis.ndim != 2 or variances.shape != (basis.shape[1],) or rest < 0 or dof < 1:
            raise ValueError("not a within-species prior (shapes or values do not fit)")
        return cls(basis, variances, rest, dof)


@dataclass(frozen=True)
class Whitening:
    """The linear map to the whitened space (``identity`` when nothing can be estimated)."""

    basis: np.ndarray  # (d, k) eigenvectors of the shrunk covariance (columns)
    scale: np.ndarray  # (k,) their factors, relative to 1 for the rest of the space
    shrinkage: float  # a in [0, 1]; 1 = the target alone
    dof: int  # specimens - species the covariance was estimated from

    @classmethod
    def identity(cls, dim: int) -> Whitening:
        """The map that changes nothing (one specimen per species, or nothing enrolled)."""
        return cls(np.zeros((dim, 0), np.float32), np.zeros(0, np.float32), 1.0, 0)

    @property
    def is_identity(self) -> bool:
        return self.basis.shape[1] == 0

    @classmethod
    def fit(
        cls,
        centred: np.ndarray,
        species: np.ndarray,
        specimens: np.ndarray,
        max_specimens: int = MAX_COVARIANCE_SPECIMENS,
        seed: int = 0,
        prior: WithinSpeciesPrior | None = None,
    ) -> Whitening:
        """Estimate the map from centred unit vectors (n, d), their species index (n,) and
        specimen index (n,): views of one specimen are averaged first, so a specimen
        photographed ten times counts once. ``prior`` replaces the isotropic target."""
        centred = np.asarray(centred, np.float32)
        dim = centred.shape[1]
        within = _within_species(centred, species, specimens, max_specimens, seed)
        if within is None:
            variances, basis, dof, level = np.zeros(0), np.zeros((dim, 0)), 0, 1.0
        else:
            variances, basis, dof = within
            level = float(variances.sum()) / dim
        if level <= 0 or (dof == 0 and prior is None):
            return cls.identity(dim)
        shrinkage = dim / (dim + dof)
        # Sigma = (1 - a) S + a * level * target; the target's isotropic part goes to `floor`
        parts = [(basis, (1.0 - shrinkage) * variances)]
        floor = shrinkage * level
        if prior is not None:
            if prior.basis.shape[0] != dim:
                raise ValueError(f"the prior is {prior.basis.shape[0]}-d, the vectors {dim}-d")
            b = prior.shrinkage
            parts.append((prior.basis, floor * (1.0 - b) * (prior.variances - prior.rest)))
            floor *= (1.0 - b) * prior.rest + b
        eigenvalues, directions = _low_rank_eigen(parts)
        covariance = eigenvalues + floor  # outside `directions` the covariance is `floor`
        keep = covariance > 0
        scale = np.sqrt(floor / covariance[keep])
        return cls(directions[:, keep].astype(np.float32), scale.astype(np.float32), shrinkage, dof)

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised rows (cosine in this space is the species score)."""
        vectors = np.asarray(vectors, np.float32)
        if self.is_identity:
            return l2_normalise(vectors)
        along = (vectors @ self.basis) * (self.scale - 1.0)
        return l2_normalise(vectors + along @ self.basis.T)


def _within_species(
    centred: np.ndarray,
    species: np.ndarray,
    specimens: np.ndarray,
    max_specimens: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(variances (k,), directions (d, k), dof)``: the non-zero eigenpairs of the
    within-species covariance over specimens; None when no species has two specimens."""
    centred = np.asarray(centred, np.float32)
    n = centred.shape[0]
    if n == 0:
        return None
    _, specimen_of = np.unique(np.asarray(specimens), return_inverse=True)
    n_specimens = int(specimen_of.max()) + 1
    views = np.bincount(specimen_of, minlength=n_specimens).astype(np.float64)
    specimen_species = np.zeros(n_specimens, np.int64)
    specimen_species[specimen_of] = np.unique(np.asarray(species), return_inverse=True)[1]
    per_species = np.bincount(specimen_species).astype(np.float64)
    dof = int(n_specimens - np.count_nonzero(per_species))
    if dof < 1:
        return None
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
    variances, directions = _eigen(residuals, max(1.0, dof * chosen.size / n_specimens))
    return variances, directions, dof


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


def _low_rank_eigen(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of ``sum(B @ diag(w) @ B.T)`` over ``(B (d, k), w (k,))`` parts, each ``B``
    orthonormal: through one QR of the stacked bases, so the cost is d (sum k)^2."""
    parts = [(np.asarray(b, np.float64), np.asarray(w, np.float64)) for b, w in parts if w.size]
    if not parts:
        return np.zeros(0), np.zeros((0, 0))
    if len(parts) == 1:
        return parts[0][1], parts[0][0]
    stacked = np.concatenate([b for b, _ in parts], axis=1)
    q, r = np.linalg.qr(stacked)
    weights = np.concatenate([w for _, w in parts])
    small = (r * weights) @ r.T
    eigenvalues, vectors = np.linalg.eigh((small + small.T) / 2)
    return eigenvalues, q @ vectors
