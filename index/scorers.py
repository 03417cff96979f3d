"""Species scores of queries against enrolled rows (the open-set scores: :mod:`index.open_set`).

A species scorer turns raw (unit) query vectors into an ``(m, S)`` array over
:attr:`EnrolledRows.species` (``-inf`` = species cannot be scored) with :meth:`scores`, and
scores enrolled rows as if their own specimen (group) had never been enrolled with
:meth:`held_out_scores` (what calibration needs). :func:`species_scorer` builds the one
:data:`SCORERS` registers under ``IdentifierConfig.method``; another scorer only has to follow
:class:`SpeciesScorer` and be registered there.

- :class:`Cl2n`: the CL2N centring shared by the scorers (collection mean, centred rows).
- :class:`PrototypeScorer`: cosine similarity to the species' CL2N prototype(s).
- :class:`NearestSpecimenScorer`: cosine similarity to the species' nearest enrolled row
  (exact up to :data:`EXACT_KNN_LIMIT` rows, else FAISS candidates re-scored).
- :class:`MeanScorer`: the mean of several scorers (``"prototype+knn"``).
- :class:`WhitenedScorer`: cosine similarity to the prototypes in the collection's
  within-species whitened space (``"whitened"``, the default; see :mod:`index.whitening`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from embedder.registry import Registry, UnknownNameError

from .config import IdentifierConfig
from .enrolled import EnrolledRows
from .prototypes import (
    centre,
    centred_species_sums,
    l2_normalise,
    max_by_owner,
    species_prototypes,
)
from .search import VectorIndex
from .whitening import Whitening, WithinSpeciesPrior

#: collections up to this size get exact nearest-specimen scores (dense product).
EXACT_KNN_LIMIT = 20_000
#: enrolled rows scored per block when scoring held-out rows.
HELD_OUT_BLOCK = 256
#: folds of specimens for the whitened scorer's held-out scores (one whitening fit each).
HELD_OUT_FOLDS = 5


class Cl2n:
    """CL2N centring of a collection: the mean of its rows (scaled down while it has fewer
    than ``centre_full_species`` species: :meth:`weight`) and the rows centred on it. Call
    :meth:`fit` after the rows change.

    The mean comes from the rows' running sum (O(d) per change); the centred copy of the rows
    is made only when something asks for it (calibration, the whitening's refit, the
    nearest-specimen scorer), not on every enrolment: prototypes need only their sums
    (:func:`index.prototypes.centred_species_sums`)."""

    def __init__(self, rows: EnrolledRows, config: IdentifierConfig) -> None:
        self.rows = rows
        self.config = config
        self.mean: np.ndarray | None = None
        self._centred: np.ndarray | None = None
        self._centred_of: tuple[np.ndarray, np.ndarray | None] | None = None

    def fit(self) -> None:
        cfg, rows = self.config, self.rows
        self.mean = None
        weight = self.weight(len(rows.species))
        if cfg.centre and weight > 0 and len(rows):
            self.mean = (weight * rows.vector_sum / len(rows)).astype(np.float32)
        self._centred = None
        self._centred_of = None

    def weight(self, species: int) -> float:
        """The share of the collection mean subtracted with ``species`` species enrolled: 0 for
        one, rising linearly to 1 at ``config.centre_full_species``."""
        full = self.config.centre_full_species
        return 1.0 if full <= 1 else float(np.clip((species - 1) / (full - 1), 0.0, 1.0))

    @property
    def centred(self) -> np.ndarray:
        """The rows centred on :attr:`mean` (made on first use after a change, then kept)."""
        vectors, mean = self.rows.vectors, self.mean
        done = self._centred_of
        if self._centred is None or done is None or done[0] is not vectors or done[1] is not mean:
            self._centred = centre(vectors, mean) if len(vectors) else vectors
            self._centred_of = (vectors, mean)
        return self._centred

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        """Queries in the centred space."""
        return centre(queries, self.mean)


class SpeciesScorer(Protocol):
    """What the identifier and calibration need from a species scorer."""

    #: multiply-adds per enrolled value and held-out query (OOD scores included), for
    #: sizing calibration.
    held_out_cost: int

    def fit(self) -> None:
        """Recompute the scorer's state after the enrolled rows (and :class:`Cl2n`) changed."""
        ...

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        """``(m, d)`` unit queries -> ``(m, S)`` species scores."""
        ...

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        """Species scores of enrolled ``rows`` as queries, each row's own group left out."""
        ...


class PrototypeScorer:
    """Cosine similarity to the species' CL2N prototype(s) (k-means forms when
    ``prototypes_per_species`` > 1)."""

    held_out_cost = 2

    def __init__(self, rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig) -> None:
        self.rows = rows
        self.cl2n = cl2n
        self.config = config
        self.index = VectorIndex(
            rows.dim, ann_threshold=10**9, use_gpu=config.use_gpu, threads=config.faiss_threads
        )
        self.protos = np.zeros((0, rows.dim), np.float32)
        self.owner = np.zeros(0, np.int64)

    def fit(self) -> None:
        cfg, rows = self.config, self.rows
        if cfg.prototypes_per_species <= 1:  # the species means, without centring every row
            sums = centred_species_sums(rows.vectors, self.cl2n.mean, rows.y, len(rows.species))
            present = rows.counts > 0
            self.protos = l2_normalise(sums[present])
            self.owner = np.flatnonzero(present).astype(np.int64)
        else:
            self.protos, self.owner = species_prototypes(
                self.cl2n.centred,
                rows.y,
                len(rows.species),
                rows.g,
                cfg.prototypes_per_species,
                cfg.min_specimens_per_prototype,
                cfg.seed,
            )
        self.index.reset(self.protos, np.arange(len(self.owner), dtype=np.int64))

    def restore(self, protos: np.ndarray, owner: np.ndarray) -> None:
        """Install prototypes saved from an identical collection (a snapshot)."""
        self.protos, self.owner = protos, owner
        self.index.reset(protos, np.arange(len(owner), dtype=np.int64))

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        return self._scores(self.cl2n(raw_queries))

    def _scores(self, centred_queries: np.ndarray) -> np.ndarray:
        P = len(self.owner)
        scores, ids = self.index.search(centred_queries, P)
        full = np.full((centred_queries.shape[0], P), -np.inf, np.float32)
        np.put_along_axis(full, np.clip(ids, 0, None), scores, axis=1)
        return max_by_owner(full, self.owner, len(self.rows.species))

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        """Each row's own group left out of its species' prototype(s); species left without
        images get ``-inf``."""
        cfg, enrolled, centred = self.config, self.rows, self.cl2n.centred
        S = len(enrolled.species)
        queries = centred[rows]
        sims = max_by_owner(queries @ self.protos.T, self.owner, S)
        multi = np.bincount(self.owner, minlength=S) > 1
        sums = np.zeros((S, enrolled.dim), np.float64)
        np.add.at(sums, enrolled.y, centred)
        group_sums = np.zeros((int(enrolled.g.max()) + 1, enrolled.dim), np.float64)
        np.add.at(group_sums, enrolled.g, centred)
        y, g = enrolled.y[rows], enrolled.g[rows]
        rest = sums[y] - group_sums[g]
        norms = np.linalg.norm(rest, axis=1)
        own = np.einsum("ij,ij->i", queries, rest / np.maximum(norms, 1e-12)[:, None])
        own = np.where(norms > 1e-6 * np.maximum(1, enrolled.counts[y]), own, -np.inf)
        for i in np.flatnonzero(multi[y]):  # species with k-means prototypes: recompute them
            keep = (enrolled.y == y[i]) & (enrolled.g != g[i])
            if not keep.any():
                own[i] = -np.inf
                continue
            protos, _ = species_prototypes(
                centred[keep],
                np.zeros(int(keep.sum()), np.int64),
                1,
                enrolled.g[keep],
                cfg.prototypes_per_species,
                cfg.min_specimens_per_prototype,
                cfg.seed + int(y[i]),
            )
            own[i] = float(np.max(protos @ queries[i]))
        sims[np.arange(len(rows)), y] = own
        return sims


class NearestSpecimenScorer:
    """Cosine similarity (CL2N space) to each species' nearest enrolled row."""

    held_out_cost = 3

    def __init__(self, rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig) -> None:
        self.rows = rows
        self.cl2n = cl2n
        self.config = config

    def fit(self) -> None:
        """Nothing to fit: the rows and their centring are the model."""

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        rows, centred = self.rows, self.cl2n.centred
        centred_queries = self.cl2n(raw_queries)
        if len(rows) <= EXACT_KNN_LIMIT:
            return rows.per_species_max(centred_queries @ centred.T)
        # large collections: re-score the nearest specimens found by FAISS in raw space
        _, keys = rows.index.search(raw_queries, self.config.knn_candidates)
        out = np.full((raw_queries.shape[0], len(rows.species)), -np.inf, np.float32)
        for i in range(raw_queries.shape[0]):
            found = rows.rows_of_keys(keys[i][keys[i] >= 0])
            sims = centred[found] @ centred_queries[i]
            floor = float(sims.min()) - 1e-3 if sims.size else -1.0
            out[i, :] = floor
            np.maximum.at(out[i], rows.y[found], sims)
        return out

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        """Exact scores with every row of the query's own group left out."""
        enrolled, centred = self.rows, self.cl2n.centred
        sims = np.zeros((len(rows), len(enrolled.species)), np.float32)
        for start in range(0, len(rows), HELD_OUT_BLOCK):
            block = rows[start : start + HELD_OUT_BLOCK]
            own_group = enrolled.g[None, :] == enrolled.g[block][:, None]
            dense = np.where(own_group, -np.inf, centred[block] @ centred.T)
            sims[start : start + HELD_OUT_BLOCK] = enrolled.per_species_max(
                dense.astype(np.float32)
            )
        return sims


class MeanScorer:
    """The mean of several scorers' species scores."""

    def __init__(self, parts: Sequence[SpeciesScorer]) -> None:
        self.parts = list(parts)
        self.held_out_cost = max(p.held_out_cost for p in self.parts)

    def fit(self) -> None:
        for part in self.parts:
            part.fit()

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        return self._mean([p.scores(raw_queries) for p in self.parts])

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        return self._mean([p.held_out_scores(rows) for p in self.parts])

    @staticmethod
    def _mean(scores: list[np.ndarray]) -> np.ndarray:
        total = scores[0]
        for more in scores[1:]:
            total = total + more
        return total / len(scores)


class WhitenedScorer:
    """Cosine similarity to the species' CL2N prototypes after within-species whitening.

    :meth:`fit` (run on every enrolment) rebuilds the prototypes and maps them with the
    current :class:`Whitening`; the whitening itself is re-estimated by :meth:`estimate`
    (the expensive part, off the request path: see :meth:`VectorIdentifier.prepare_refit`)
    and installed with :meth:`use`. Until then a new species is scored with the previous
    whitening, so it is identifiable as soon as it is enrolled.
    """

    held_out_cost = 3

    def __init__(
        self,
        rows: EnrolledRows,
        cl2n: Cl2n,
        config: IdentifierConfig,
        prior: WithinSpeciesPrior | None = None,
    ) -> None:
        self.rows = rows
        self.cl2n = cl2n
        self.config = config
        self.prior = prior  # the model's within-species covariance, the shrinkage target
        self.prototypes = PrototypeScorer(rows, cl2n, config)
        self.whitening = Whitening.identity(rows.dim)
        self.whitened = np.zeros((0, rows.dim), np.float32)

    def fit(self) -> None:
        self.prototypes.fit()
        self.whitened = self.whitening.apply(self.prototypes.protos)

    def estimate(self) -> Whitening:
        """The whitening the current rows call for (does not change the scorer)."""
        rows = self.rows
        if len(rows) == 0:
            return Whitening.identity(rows.dim)
        return Whitening.fit(
            self.cl2n.centred, rows.y, rows.g, seed=self.config.seed, prior=self.prior
        )

    def use(self, whitening: Whitening) -> None:
        """Score with ``whitening`` from now on."""
        self.whitened = whitening.apply(self.prototypes.protos)
        self.whitening = whitening

    def with_whitening(self, whitening: Whitening) -> WhitenedScorer:
        """A copy scoring with ``whitening`` (same rows and prototypes), for calibration."""
        other = copy.copy(self)
        other.use(whitening)
        return other

    def scores(self, raw_queries: np.ndarray) -> np.ndarray:
        whitening, whitened = self.whitening, self.whitened  # one consistent pair
        queries = whitening.apply(self.cl2n(raw_queries))
        return max_by_owner(queries @ whitened.T, self.prototypes.owner, len(self.rows.species))

    def held_out_scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of enrolled ``rows`` by :data:`HELD_OUT_FOLDS`-fold cross-fitting over
        specimens: each row is scored by prototypes *and* a whitening estimated without its
        fold (a species' specimens are dealt round-robin to the folds, so a species with two
        specimens keeps one). Refitting the whitening matters: with few specimens a covariance
        that has seen the query makes it look closer than a new specimen would be. The folds
        come from :func:`fold_of_rows` (enrolment order, not specimen ids, which may be
        random: the same collection enrolled in the same order gets the same thresholds)."""
        return self._held_out_in_folds(rows, fold_of_rows(self.rows, self.config.seed))

    def held_out_species_scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of enrolled ``rows`` as photos of species the collection lacks: species are
        dealt to :data:`HELD_OUT_FOLDS` folds and each row is scored by the prototypes and the
        whitening of the other folds' species (its own species' column is ``-inf``). What
        placement is calibrated on: a whitening that has seen the species makes its photos
        look closer to their relatives than an unseen species' are."""
        rng = np.random.default_rng(self.config.seed)
        species_fold = rng.permutation(len(self.rows.species)) % HELD_OUT_FOLDS
        return self._held_out_in_folds(rows, species_fold[self.rows.y])

    def _held_out_in_folds(self, rows: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """Held-out scores of ``rows`` with every enrolled row's fold given by ``fold``."""
        enrolled, centred = self.rows, self.cl2n.centred
        S = len(enrolled.species)
        sims = np.full((len(rows), S), -np.inf, np.float32)
        for f in np.unique(fold[rows]):
            train = fold != f
            if not train.any():
                continue
            whitening = Whitening.fit(
                centred[train],
                enrolled.y[train],
                enrolled.g[train],
                seed=self.config.seed,
                prior=self.prior,
            )
            sums = np.zeros((S, enrolled.dim), np.float64)
            np.add.at(sums, enrolled.y[train], centred[train])
            present = np.bincount(enrolled.y[train], minlength=S) > 0
            prototypes = whitening.apply(sums[present].astype(np.float32))
            here = np.flatnonzero(fold[rows] == f)
            queries = whitening.apply(centred[rows[here]])
            block = np.full((here.size, S), -np.inf, np.float32)
            block[:, present] = queries @ prototypes.T
            sims[here] = block
        return sims


def fold_of_rows(rows: EnrolledRows, seed: int) -> np.ndarray:
    """The fold (of :data:`HELD_OUT_FOLDS`) of every enrolled row, by specimen: within a
    species the specimens are taken in enrolment order (their first row), shuffled by a
    generator seeded with ``seed`` and dealt round-robin."""
    first_row = np.full(int(rows.g.max()) + 1 if rows.g.size else 0, len(rows.g), np.int64)
    np.minimum.at(first_row, rows.g, np.arange(len(rows.g)))
    rng = np.random.default_rng(seed)
    fold_of_group = np.zeros(first_row.size, np.int64)
    for species_rows in rows.rows_by_species:
        groups = np.unique(rows.g[species_rows])
        groups = groups[np.argsort(first_row[groups], kind="stable")]
        fold_of_group[groups[rng.permutation(groups.size)]] = (
            np.arange(groups.size) % HELD_OUT_FOLDS
        )
    return fold_of_group[rows.g]


class ScorerFactory(Protocol):
    """Builds a species scorer (not yet fitted) over a collection's rows and centring;
    ``prior``: the model's within-species covariance, for scorers that use one."""

    def __call__(
        self,
        rows: EnrolledRows,
        cl2n: Cl2n,
        config: IdentifierConfig,
        prior: WithinSpeciesPrior | None,
    ) -> SpeciesScorer: ...


#: Species scorer name (``IdentifierConfig.method``, ``SHELLID_METHOD``) -> its factory, in the
#: order the command line and docs/index.md list them. Adding a scorer is one decorated
#: function returning a :class:`SpeciesScorer`; the first line of its docstring describes it.
SCORERS: Registry[ScorerFactory] = Registry("species scorer")


@SCORERS.register("whitened")
def whitened_scorer(
    rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig, prior: WithinSpeciesPrior | None
) -> SpeciesScorer:
    """Cosine to the species' CL2N prototype in the collection's within-species whitened space
    (the default)."""
    return WhitenedScorer(rows, cl2n, config, prior)


@SCORERS.register("prototype")
def prototype_scorer(
    rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig, prior: WithinSpeciesPrior | None
) -> SpeciesScorer:
    """Cosine of the centred query to the species' (best) CL2N prototype."""
    return PrototypeScorer(rows, cl2n, config)


@SCORERS.register("knn")
def nearest_specimen_scorer(
    rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig, prior: WithinSpeciesPrior | None
) -> SpeciesScorer:
    """Cosine of the centred query to the species' nearest enrolled photo."""
    return NearestSpecimenScorer(rows, cl2n, config)


@SCORERS.register("prototype+knn")
def prototype_and_knn_scorer(
    rows: EnrolledRows, cl2n: Cl2n, config: IdentifierConfig, prior: WithinSpeciesPrior | None
) -> SpeciesScorer:
    """The mean of the ``prototype`` and ``knn`` scores (the default until issue #10)."""
    return MeanScorer(
        [PrototypeScorer(rows, cl2n, config), NearestSpecimenScorer(rows, cl2n, config)]
    )


def species_scorer(
    rows: EnrolledRows,
    cl2n: Cl2n,
    config: IdentifierConfig,
    prior: WithinSpeciesPrior | None = None,
) -> SpeciesScorer:
    """The scorer :data:`SCORERS` registers as ``config.method`` (not yet fitted); ``prior``
    serves the whitened one (the others have no covariance). :class:`ValueError` names the
    closest registered scorer for an unknown method."""
    try:
        factory = SCORERS[config.method]
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None
    return factory(rows, cl2n, config, prior)
