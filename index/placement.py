"""Placement: the genus (else family) a photo's species most likely belongs to, enrolled or not.

A species that is not in the collection still sits somewhere in the tree: its photos tend to be
closest to the species of its own genus. The placement score of a query at a rank (genus or
family) is the taxon with the most species probability (softmax over the enrolled species at
the calibrated temperature, summed per taxon), described by three features: the logit of that
summed probability, the best species score and the log of the taxon's number of species (a big
taxon gathers probability by its size alone). A logistic map of the features (Platt scaling
with a Gaussian prior centred on "probability = summed probability", so that few samples shrink
toward it) turns them into P(the taxon is right).

The map is fitted leave-one-species-out on the collection itself (:func:`fit_placement`, from
the held-out scores :mod:`index.calibrate` computes anyway): each held-out photo is scored with
its own species removed, and the question is whether the taxon with the most probability is its
own. Photos of species alone in their taxon count too, as placements that can only be wrong:
the collection's own share of such species is its best guess at how often a species it lacks
belongs to a taxon it lacks too (a map fitted without them names the biggest taxon for
everything). A rank needs photos of two or more species with an enrolled relative. A taxon is
named when its probability reaches the rank's threshold, the lowest at which the held-out
placements are right at least ``target_precision`` of the time (Laplace-smoothed), judged on
probabilities from maps fitted without the photo's species (5 folds of species). With no
taxonomy, or too few samples, there is no placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import expected_calibration_error, softmax
from .decision import rollup_matrix
from .results import Placement, PlacementCalibration, RankCalibration

#: ranks placed, most specific first.
PLACEMENT_RANKS: tuple[str, ...] = ("genus", "family")
#: fewest held-out photos (and species) a rank's map is fitted on; below it, no placement.
MIN_PLACEMENT_SAMPLES = 10
MIN_PLACEMENT_SPECIES = 2
#: folds of species the threshold is chosen on (out-of-fold probabilities).
MAP_FOLDS = 5
#: standard deviation of the Gaussian prior on each weight (in feature units: logit, z-score).
PRIOR_SCALE = 1.0
#: the prior's weights: probability = the taxon's summed probability.
PRIOR_WEIGHTS = np.array([1.0, 0.0, 0.0, 0.0])
_EPS = 1e-4


@dataclass
class TaxonFeatures:
    """Per query: the taxon with the most species probability (``best``, -1 where no species
    with a taxon can be scored), that probability (``mass``), the best species score
    (``score``) and how many scorable species the taxon has (``size``: a big taxon gathers
    probability by its size alone)."""

    best: np.ndarray
    mass: np.ndarray
    score: np.ndarray
    size: np.ndarray
    names: list[str]

    def design(self, centre: float, scale: float) -> np.ndarray:
        """The map's inputs: logit of the mass, z-scored best score, log size, 1."""
        p = np.clip(self.mass, _EPS, 1 - _EPS)
        score = np.where(np.isfinite(self.score), self.score, centre)
        return np.column_stack(
            [
                np.log(p / (1 - p)),
                (score - centre) / max(scale, 1e-6),
                np.log(np.maximum(self.size, 1)),
                np.ones_like(p),
            ]
        )


def taxon_features(sims: np.ndarray, parents: list[str], temperature: float) -> TaxonFeatures:
    """:class:`TaxonFeatures` of species scores ``sims`` (m, S) (``-inf`` = not a candidate)
    at the rank whose taxon of every species is ``parents``."""
    matrix, names = rollup_matrix(parents)
    m = sims.shape[0]
    if not names or sims.shape[1] == 0:
        return TaxonFeatures(np.full(m, -1), np.zeros(m), np.full(m, -np.inf), np.zeros(m), names)
    probs = softmax(sims, temperature).astype(np.float64)
    mass = np.asarray((matrix.T @ probs.T).T)
    best = np.argmax(mass, axis=1)
    top = mass[np.arange(m), best]
    finite = np.isfinite(sims)
    sizes = np.asarray((matrix.T @ finite.T.astype(np.float64)).T)
    score = np.where(finite, sims, -np.inf).max(axis=1)
    best = np.where((top > 0) & np.isfinite(score), best, -1)
    return TaxonFeatures(best, top, score, sizes[np.arange(m), best], names)


def _fit_weights(x: np.ndarray, right: np.ndarray) -> np.ndarray:
    """MAP logistic weights: NLL plus a Gaussian prior around :data:`PRIOR_WEIGHTS`."""
    from scipy.optimize import minimize  # imported when calibrating, not on the answer path

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(np.logaddexp(0.0, z) - right * z)
        penalty = 0.5 * np.sum((w - PRIOR_WEIGHTS) ** 2) / PRIOR_SCALE**2
        grad = x.T @ (p - right) + (w - PRIOR_WEIGHTS) / PRIOR_SCALE**2
        return float(nll + penalty), grad

    return np.asarray(minimize(loss, PRIOR_WEIGHTS.copy(), jac=True, method="L-BFGS-B").x)


def _out_of_fold(x: np.ndarray, right: np.ndarray, species: np.ndarray) -> np.ndarray:
    """Each sample's probability under a map fitted on the other :data:`MAP_FOLDS` folds of
    species (a map judged on the photos it was fitted on looks better than it is)."""
    names = np.unique(species)
    fold = np.random.default_rng(0).permutation(names.size) % MAP_FOLDS
    of_sample = fold[np.searchsorted(names, species)]
    probability = np.zeros(len(right))
    for f in range(MAP_FOLDS):
        test = of_sample == f
        if not test.any():
            continue
        train = ~test
        weights = _fit_weights(x[train], right[train]) if train.any() else PRIOR_WEIGHTS
        probability[test] = 1.0 / (1.0 + np.exp(-(x[test] @ weights)))
    return probability


def precision_threshold(probability: np.ndarray, right: np.ndarray, target: float) -> float:
    """The lowest probability at which placing every sample at or above it keeps the
    Laplace-smoothed precision ``(right + 1) / (placed + 2)`` at ``target`` or more (inf: no
    such cut). The most samples placed at the stated precision."""
    order = np.argsort(-probability, kind="stable")
    hits = np.cumsum(right[order])
    placed = np.arange(1, order.size + 1)
    good = (hits + 1.0) / (placed + 2.0) >= target
    # a cut must not split equal probabilities: keep only the last sample of each run
    last = np.r_[probability[order][1:] != probability[order][:-1], True]
    ok = np.flatnonzero(good & last)
    return float(probability[order][ok[-1]]) if ok.size else float("inf")


def _fit_rank(
    rank: str,
    sims_without_own: np.ndarray,
    y: np.ndarray,
    parents: list[str],
    temperature: float,
    target: float,
    notes: list[str],
) -> RankCalibration | None:
    own = np.asarray([parents[s] for s in y], dtype=object)
    members = {p: sum(1 for q in parents if q == p) for p in set(parents) if p}
    # photos of every species with a taxon; those alone in theirs can only be placed wrong
    eligible = np.asarray([bool(t) for t in own], bool)
    features = taxon_features(sims_without_own[eligible], parents, temperature)
    scored = features.best >= 0
    mates = np.asarray([members.get(t, 0) > 1 for t in own[eligible]], bool)
    species = np.unique(y[eligible][scored & mates]).size
    if (scored & mates).sum() < MIN_PLACEMENT_SAMPLES or species < MIN_PLACEMENT_SPECIES:
        notes.append(
            f"{rank}: no placement (needs {MIN_PLACEMENT_SAMPLES}+ photos of "
            f"{MIN_PLACEMENT_SPECIES}+ species whose {rank} has another enrolled species)"
        )
        return None
    named = np.asarray(features.names, dtype=object)[features.best[scored]]
    right = (named == own[eligible][scored]).astype(np.float64)
    score = features.score[scored]
    centre, scale = float(np.mean(score)), float(np.std(score) or 1.0)
    x = features.design(centre, scale)[scored]
    weights = _fit_weights(x, right)
    # the threshold and the figures come from maps fitted without the photo's species
    probability = _out_of_fold(x, right, y[eligible][scored])
    threshold = precision_threshold(probability, right, target)
    placed = probability >= threshold
    return RankCalibration(
        rank=rank,
        weights=[round(float(w), 6) for w in weights],
        score_centre=centre,
        score_scale=scale,
        threshold=threshold,
        samples=int(scored.sum()),
        species=int(species),
        coverage=round(float(placed.mean()), 4),
        precision=round(float(right[placed].mean()), 4) if placed.any() else None,
        nearest_right=round(float(right.mean()), 4),
        ece=round(expected_calibration_error(probability, right), 4),
    )


def fit_placement(
    sims_without_own: np.ndarray,
    y: np.ndarray,
    taxa: dict[str, list[str]],
    temperature: float,
    target_precision: float,
) -> PlacementCalibration | None:
    """The placement calibration from leave-one-species-out species scores (``y``: each row's
    own species, whose column is ``-inf``); ``taxa``: rank -> the taxon of every enrolled
    species ('' = unknown). None when no rank has a taxonomy."""
    if not any(any(parents) for parents in taxa.values()):
        return None
    notes: list[str] = []
    ranks = [
        fitted
        for rank in PLACEMENT_RANKS
        if any(taxa.get(rank, []))
        and (
            fitted := _fit_rank(
                rank, sims_without_own, y, taxa[rank], temperature, target_precision, notes
            )
        )
        is not None
    ]
    return PlacementCalibration(
        target_precision=target_precision, temperature=temperature, ranks=ranks, notes=notes
    )


def rank_probability(
    calibration: RankCalibration, sims: np.ndarray, parents: list[str], temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(best taxon name or '' (m,), its calibrated probability (m,))`` at one rank."""
    features = taxon_features(sims, parents, temperature)
    x = features.design(calibration.score_centre, calibration.score_scale)
    probability = 1.0 / (1.0 + np.exp(-(x @ np.asarray(calibration.weights))))
    best = features.best
    named = np.asarray([features.names[b] if b >= 0 else "" for b in best], dtype=object)
    return named, np.where(best >= 0, probability, 0.0)


def place(
    calibration: PlacementCalibration | None, sims: np.ndarray, taxa: dict[str, list[str]]
) -> list[Placement | None]:
    """The placement of every query with species scores ``sims`` (m, S): the most specific
    rank whose calibrated probability reaches its threshold, else None."""
    out: list[Placement | None] = [None] * sims.shape[0]
    if calibration is None:
        return out
    for fitted in calibration.ranks:
        parents = taxa.get(fitted.rank, [])
        if not any(parents):
            continue
        named, probability = rank_probability(fitted, sims, parents, calibration.temperature)
        for i in range(sims.shape[0]):
            if out[i] is None and named[i] and probability[i] >= fitted.threshold:
                out[i] = Placement(
                    rank=fitted.rank,
                    name=str(named[i]),
                    probability=round(float(probability[i]), 6),
                )
    return out
