"""The calibration procedure: held-out scores of enrolled images -> :class:`Thresholds`.

Held-out queries are enrolled images scored as if their specimen (group) had never been
enrolled. Known-species samples (their species keeps other specimens) set the unknown-species
threshold; leave-one-species-out samples (own species removed) set the OOD threshold, so
in-domain but unknown species are answered ``unknown_species`` rather than ``out_of_domain``.
Together the two thresholds accept ``target_recall`` of the known-species samples. Then the
softmax temperature is fitted on the known samples (smoothed minimum NLL); answers put the
species in one softmax with a "none of these" outcome scored at the unknown threshold. The
leave-one-species-out scores also fit the placement map (:mod:`index.placement`).
Collections too small for a step keep a documented fallback (see ``stats.notes``). The maths
lives in :mod:`index.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import (
    acceptance_threshold,
    auroc,
    cap_confidence,
    expected_calibration_error,
    fit_temperature,
    open_set_probabilities,
)
from .config import IdentifierConfig
from .enrolled import EnrolledRows
from .placement import fit_placement
from .results import CalibrationStats, Thresholds
from .scorers import OodScorer, SpeciesScorer, WhitenedScorer, unknown_scores

#: floating-point operations allowed for one calibration (caps held-out queries on big stores).
CALIBRATION_FLOPS = 6e10
#: below this many held-out images the OOD threshold is never stricter than the fallback.
MIN_OOD_SAMPLES = 20


def default_thresholds(config: IdentifierConfig) -> Thresholds:
    """The thresholds of an uncalibrated identifier (the config's fallbacks)."""
    return Thresholds(
        temperature=config.fallback_temperature,
        ood=1.0 - config.fallback_ood_similarity,
        unknown=float("inf"),
        species_probability=config.species_probability,
        genus_probability=config.genus_probability,
        family_probability=config.family_probability,
        target_recall=config.target_recall,
        source="default",
    )


def calibration_rows(rows: EnrolledRows, max_queries: int, rng: np.random.Generator) -> np.ndarray:
    """Held-out query rows: whole groups, round-robin over species, up to ``max_queries``."""
    by_species: list[list[np.ndarray]] = []
    for species_rows in rows.rows_by_species:
        groups = [species_rows[rows.g[species_rows] == g] for g in np.unique(rows.g[species_rows])]
        order = rng.permutation(len(groups))
        by_species.append([groups[i] for i in order])
    chosen: list[np.ndarray] = []
    total, depth = 0, 0
    while total < max_queries and any(depth < len(g) for g in by_species):
        for groups in by_species:
            if depth < len(groups) and total < max_queries:
                chosen.append(groups[depth])
                total += len(groups[depth])
        depth += 1
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


@dataclass
class HeldOutScores:
    """Scores of held-out enrolled images: as a new specimen of its species (``sims``,
    ``ood_known``; ``known`` marks the images whose species keeps another specimen) and as an
    image of a species the collection lacks (``sims_unknown``, ``ood_unknown``)."""

    sims: np.ndarray  # (m, S) species scores, own group held out
    sims_unknown: np.ndarray  # the same with the own species removed
    ood_known: np.ndarray  # (m,) OOD score without the own group
    ood_unknown: np.ndarray  # (m,) OOD score without the own species
    y: np.ndarray  # (m,) species of each image
    known: np.ndarray  # (m,) bool
    n_species: int
    rows: np.ndarray  # (m,) the enrolled rows held out

    @classmethod
    def of(
        cls,
        rows: EnrolledRows,
        scorer: SpeciesScorer,
        ood_scorer: OodScorer,
        config: IdentifierConfig,
    ) -> HeldOutScores:
        """Scores of up to ``calibration_queries`` images (fewer when the flops budget says)."""
        budget = int(CALIBRATION_FLOPS / max(1, len(rows) * rows.dim * scorer.held_out_cost))
        rng = np.random.default_rng(config.seed)
        queries = calibration_rows(rows, max(50, min(config.calibration_queries, budget)), rng)
        sims = scorer.held_out_scores(queries)
        ood_known, ood_unknown = ood_scorer.held_out_scores(queries)
        y = rows.y[queries]
        m = np.arange(len(queries))
        known = (rows.group_counts[y] > 1) & np.isfinite(sims[m, y])
        sims_unknown = sims.copy()
        sims_unknown[m, y] = -np.inf
        return cls(sims, sims_unknown, ood_known, ood_unknown, y, known, len(rows.species), queries)

    def passes_ood(self, th: Thresholds, species: list[str]) -> np.ndarray:
        """Which known images the OOD filter lets through (``th.ood``, or their species' own
        wider threshold: ``th.ood_by_species``; ``species``: the enrolled names)."""
        limit = np.array([th.ood_by_species.get(name, th.ood) for name in species] + [th.ood])
        known = self.ood_known[self.known]
        return np.nan_to_num(known, nan=np.inf) <= limit[self.y[self.known]]


def calibrate(
    rows: EnrolledRows,
    scorer: SpeciesScorer,
    ood_scorer: OodScorer,
    config: IdentifierConfig,
    target_recall: float | None = None,
) -> Thresholds:
    """Thresholds fitted on held-out scores of the enrolled ``rows`` (see the module doc)."""
    target = float(target_recall if target_recall is not None else config.target_recall)
    if not 0.5 < target < 1.0:
        raise ValueError("target_recall must be between 0.5 and 1")
    th = default_thresholds(config).model_copy(update={"target_recall": target})
    notes: list[str] = []
    if len(rows) == 0:
        notes.append("empty collection: default thresholds")
        return th.model_copy(update={"stats": CalibrationStats(notes=notes)})
    scores = HeldOutScores.of(rows, scorer, ood_scorer, config)
    stats = CalibrationStats(
        known_queries=int(scores.known.sum()),
        unknown_queries=len(scores.y) if scores.n_species > 1 else 0,
    )
    fitted = [
        _fit_ood(th, scores, config, notes) and _fit_species_ood(th, scores, rows, config),
        _fit_unknown(th, scores, rows.species, notes),
        _fit_temperature(th, scores, config, stats, notes),
    ]
    _measure(th, scores, stats, rows.species)
    th.placement = fit_placement(
        _unseen_species_scores(rows, scorer, scores),
        scores.y,
        {"genus": list(rows.genus), "family": list(rows.family)},
        th.temperature,
        config.placement_precision,
    )
    stats.notes = notes
    th.source = "calibrated" if all(fitted) else "fallback"
    th.stats = stats
    return th


def _unseen_species_scores(
    rows: EnrolledRows, scorer: SpeciesScorer, scores: HeldOutScores
) -> np.ndarray:
    """Species scores of the held-out images as photos of species the collection lacks: for
    the whitened scorer refit without their species (:meth:`WhitenedScorer.
    held_out_species_scores`), else their species' column removed (the other scorers keep
    nothing of a species but its own rows)."""
    if isinstance(scorer, WhitenedScorer) and scores.n_species > 1:
        return scorer.held_out_species_scores(scores.rows)
    return scores.sims_unknown


def _fit_ood(
    th: Thresholds, scores: HeldOutScores, cfg: IdentifierConfig, notes: list[str]
) -> bool:
    """The OOD threshold: stranger than ``ood_in_domain_share`` of the in-domain images of
    species the collection would not know (leave-one-species-out), and rejecting at most
    ``ood_miss_share`` of the allowed misses among known-species images. False: fallback."""
    miss = 1.0 - th.target_recall
    in_domain = (
        scores.ood_unknown[np.isfinite(scores.ood_unknown)] if scores.n_species > 1 else np.zeros(0)
    )
    known_ood = scores.ood_known[scores.known & np.isfinite(scores.ood_known)]
    candidates = []
    if in_domain.size >= 5:
        candidates.append(acceptance_threshold(in_domain, cfg.ood_in_domain_share))
    if known_ood.size >= 5:
        candidates.append(acceptance_threshold(known_ood, 1.0 - cfg.ood_miss_share * miss))
    if not candidates:
        seen = np.concatenate([in_domain, scores.ood_known[np.isfinite(scores.ood_known)]])
        th.ood = max([th.ood, *seen.tolist()])
        notes.append(
            f"ood: fallback mean similarity {cfg.fallback_ood_similarity} (fewer than 5 "
            "held-out images)"
        )
        return False
    th.ood = max(candidates)
    if in_domain.size < 5:
        notes.append("ood: from known-species samples only (one species enrolled)")
    if in_domain.size + known_ood.size < MIN_OOD_SAMPLES:
        th.ood = max(th.ood, 1.0 - cfg.fallback_ood_similarity)
        notes.append(
            f"ood: fewer than {MIN_OOD_SAMPLES} held-out images, so at least the "
            f"fallback (mean similarity {cfg.fallback_ood_similarity})"
        )
    return True


def _fit_species_ood(
    th: Thresholds, scores: HeldOutScores, rows: EnrolledRows, cfg: IdentifierConfig
) -> bool:
    """Per-species OOD thresholds, by the known-species rule of :func:`_fit_ood` applied to
    each species' own held-out photos (``ood_species_photos`` or more of them): kept where
    they exceed the collection's. A species photographed unlike the rest (underwater fish
    among studio shells) widens the domain around itself instead of having its new photos
    answered out_of_domain. Always True (nothing to fall back from)."""
    miss = 1.0 - th.target_recall
    own = np.nan_to_num(scores.ood_known, nan=np.inf)
    widened: dict[str, float] = {}
    for s in np.unique(scores.y[scores.known]):
        mine = own[scores.known & (scores.y == s)]
        mine = mine[np.isfinite(mine)]
        if mine.size < cfg.ood_species_photos:
            continue
        threshold = acceptance_threshold(mine, 1.0 - cfg.ood_miss_share * miss)
        if threshold > th.ood:
            widened[rows.species[int(s)]] = threshold
    th.ood_by_species = widened
    return True


def _fit_unknown(
    th: Thresholds, scores: HeldOutScores, species: list[str], notes: list[str]
) -> bool:
    """The unknown threshold: on the known images passing OOD, so that both filters together
    keep ``target_recall``. False: no unknown_species decisions (fallback)."""
    passed = scores.passes_ood(th, species)
    if passed.sum() < 3:
        notes.append(
            "unknown: no unknown_species decisions (needs 3+ images of species with 2+ "
            "specimens to learn how far a new specimen of a known species can be)"
        )
        return False
    needed = th.target_recall / max(passed.mean(), 1e-9)
    if needed >= 1.0:
        th.unknown = float("inf")
        notes.append("unknown: the OOD filter alone already rejects the allowed share")
    else:
        th.unknown = acceptance_threshold(unknown_scores(scores.sims[scores.known])[passed], needed)
    return True


def _fit_temperature(
    th: Thresholds,
    scores: HeldOutScores,
    cfg: IdentifierConfig,
    stats: CalibrationStats,
    notes: list[str],
) -> bool:
    """The temperature among the species, fitted on the known images and never claiming more
    than their Laplace-smoothed accuracy (no collapse); "none of these" then shares the mass
    at the unknown threshold (see open_set_probabilities, config.none_temperature)."""
    known = scores.known
    if not (scores.n_species > 1 and known.sum() >= 5):
        notes.append(
            f"temperature: fallback {cfg.fallback_temperature} (needs 2+ species and 5+ "
            "images of species with 2+ specimens)"
        )
        return False
    sims, y = scores.sims[known], scores.y[known]
    th.temperature = cap_confidence(sims, y, fit_temperature(sims, y))
    correct = np.argmax(sims, axis=1) == y
    stats.known_top1 = round(float(correct.mean()), 4)
    for field, temperature in (
        ("ece_before", cfg.fallback_temperature),
        ("ece_after", th.temperature),
    ):
        probs, _ = open_set_probabilities(sims, temperature, 1.0 - th.unknown, cfg.none_temperature)
        setattr(stats, field, round(expected_calibration_error(probs.max(axis=1), correct), 4))
    return True


def _measure(
    th: Thresholds, scores: HeldOutScores, stats: CalibrationStats, species: list[str]
) -> None:
    """What the thresholds achieve on the held-out images (recall, rejection, AUROC)."""
    unknown_known = unknown_scores(scores.sims[scores.known])
    if scores.known.any():
        accepted = scores.passes_ood(th, species) & (unknown_known <= th.unknown)
        stats.known_recall = round(float(accepted.mean()), 4)
    if scores.n_species > 1:
        unknown_unknown = unknown_scores(scores.sims_unknown)
        rejected = (np.nan_to_num(scores.ood_unknown, nan=np.inf) > th.ood) | (
            unknown_unknown > th.unknown
        )
        stats.unknown_rejection = round(float(rejected.mean()), 4)
        value = auroc(unknown_known, unknown_unknown)
        stats.unknown_auroc = None if value is None else round(value, 4)
