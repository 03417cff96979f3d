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
    cap_confidence,
    expected_calibration_error,
    fit_temperature,
    open_set_probabilities,
)
from .config import IdentifierConfig
from .enrolled import EnrolledRows
from .open_set import (
    OPEN_SET_SCORES,
    HeldOutImages,
    HeldOutOpenSet,
    OpenSetScores,
)
from .placement import fit_placement
from .results import CalibrationStats, Thresholds
from .scorers import SpeciesScorer, WhitenedScorer

#: floating-point operations allowed for one calibration (caps held-out queries on big stores).
CALIBRATION_FLOPS = 6e10


def default_thresholds(
    config: IdentifierConfig, open_set: OpenSetScores | None = None
) -> Thresholds:
    """The thresholds of an uncalibrated identifier (the config's fallbacks; ``open_set``:
    the scores, default every registered one)."""
    if open_set is None:
        defaults = {name: cls.default_threshold(config) for name, cls in OPEN_SET_SCORES.items()}
    else:
        defaults = open_set.default_thresholds(config)
    return Thresholds(
        temperature=config.fallback_temperature,
        open_set=defaults,
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
    """Scores of held-out enrolled images (:class:`HeldOutImages`: species scores as a new
    specimen of its species and as a photo of a species the collection lacks) and every
    open-set score of them (name -> :class:`HeldOutOpenSet`)."""

    images: HeldOutImages
    open_set: dict[str, HeldOutOpenSet]

    @classmethod
    def of(
        cls,
        rows: EnrolledRows,
        scorer: SpeciesScorer,
        open_set: OpenSetScores,
        config: IdentifierConfig,
    ) -> HeldOutScores:
        """Scores of up to ``calibration_queries`` images (fewer when the flops budget says)."""
        budget = int(CALIBRATION_FLOPS / max(1, len(rows) * rows.dim * scorer.held_out_cost))
        rng = np.random.default_rng(config.seed)
        queries = calibration_rows(rows, max(50, min(config.calibration_queries, budget)), rng)
        sims = scorer.held_out_scores(queries)
        y = rows.y[queries]
        m = np.arange(len(queries))
        known = (rows.group_counts[y] > 1) & np.isfinite(sims[m, y])
        sims_unknown = sims.copy()
        sims_unknown[m, y] = -np.inf
        images = HeldOutImages(queries, y, known, sims, sims_unknown, list(rows.species))
        return cls(images, {name: score.held_out(images) for name, score in open_set})


def calibrate(
    rows: EnrolledRows,
    scorer: SpeciesScorer,
    open_set: OpenSetScores,
    config: IdentifierConfig,
    target_recall: float | None = None,
) -> Thresholds:
    """Thresholds fitted on held-out scores of the enrolled ``rows`` (see the module doc)."""
    target = float(target_recall if target_recall is not None else config.target_recall)
    if not 0.5 < target < 1.0:
        raise ValueError("target_recall must be between 0.5 and 1")
    th = default_thresholds(config, open_set).model_copy(update={"target_recall": target})
    notes: list[str] = []
    if len(rows) == 0:
        notes.append("empty collection: default thresholds")
        return th.model_copy(update={"stats": CalibrationStats(notes=notes)})
    scores = HeldOutScores.of(rows, scorer, open_set, config)
    images = scores.images
    stats = CalibrationStats(
        known_queries=int(images.known.sum()),
        unknown_queries=len(images.y) if images.n_species > 1 else 0,
    )
    fitted = [
        *_fit_open_set(th, scores, open_set, notes),
        _fit_temperature(th, images, config, open_set, stats, notes),
    ]
    _measure(th, scores, open_set, stats)
    th.placement = fit_placement(
        _unseen_species_scores(scorer, images),
        images.y,
        {"genus": list(rows.genus), "family": list(rows.family)},
        th.temperature,
        config.placement_precision,
    )
    stats.notes = notes
    th.source = "calibrated" if all(fitted) else "fallback"
    th.stats = stats
    return th


def _unseen_species_scores(scorer: SpeciesScorer, images: HeldOutImages) -> np.ndarray:
    """Species scores of the held-out images as photos of species the collection lacks: for
    the whitened scorer refit without their species (:meth:`WhitenedScorer.
    held_out_species_scores`), else their species' column removed (the other scorers keep
    nothing of a species but its own rows)."""
    if isinstance(scorer, WhitenedScorer) and images.n_species > 1:
        return scorer.held_out_species_scores(images.rows)
    return images.sims_unknown


def _fit_open_set(
    th: Thresholds, scores: HeldOutScores, open_set: OpenSetScores, notes: list[str]
) -> list[bool]:
    """Each open-set score's threshold, in order, on the known images the scores before it
    accept; whether each was calibrated (False: a fallback)."""
    images = scores.images
    accepted = np.ones(int(images.known.sum()), bool)
    fitted = []
    for name, score in open_set:
        mine = scores.open_set[name]
        threshold, ok = score.fit(images, mine, accepted, th, notes)
        th.open_set[name] = threshold
        accepted &= score.accepts_known(images, mine, threshold, th)
        fitted.append(ok)
    return fitted


def _fit_temperature(
    th: Thresholds,
    images: HeldOutImages,
    cfg: IdentifierConfig,
    open_set: OpenSetScores,
    stats: CalibrationStats,
    notes: list[str],
) -> bool:
    """The temperature among the species, fitted on the known images and never claiming more
    than their Laplace-smoothed accuracy (no collapse); "none of these" then shares the mass
    at the open-set scores' none score (see open_set_probabilities, config.none_temperature)."""
    known = images.known
    if not (images.n_species > 1 and known.sum() >= 5):
        notes.append(
            f"temperature: fallback {cfg.fallback_temperature} (needs 2+ species and 5+ "
            "images of species with 2+ specimens)"
        )
        return False
    sims, y = images.sims[known], images.y[known]
    th.temperature = cap_confidence(sims, y, fit_temperature(sims, y))
    correct = np.argmax(sims, axis=1) == y
    stats.known_top1 = round(float(correct.mean()), 4)
    none_score = open_set.none_score(th)
    for field, temperature in (
        ("ece_before", cfg.fallback_temperature),
        ("ece_after", th.temperature),
    ):
        probs, _ = open_set_probabilities(sims, temperature, none_score, cfg.none_temperature)
        setattr(stats, field, round(expected_calibration_error(probs.max(axis=1), correct), 4))
    return True


def _measure(
    th: Thresholds, scores: HeldOutScores, open_set: OpenSetScores, stats: CalibrationStats
) -> None:
    """What the thresholds achieve on the held-out images (recall, rejection, each score's
    own figures)."""
    images = scores.images
    if images.known.any():
        accepted = np.ones(int(images.known.sum()), bool)
        for name, score in open_set:
            threshold = th.open_set_threshold(name)
            accepted &= score.accepts_known(images, scores.open_set[name], threshold, th)
        stats.known_recall = round(float(accepted.mean()), 4)
    if images.n_species > 1:
        rejected = np.zeros(len(images.y), bool)
        for name, score in open_set:
            threshold = th.open_set_threshold(name)
            rejected |= score.rejects_unknown(scores.open_set[name], threshold)
        stats.unknown_rejection = round(float(rejected.mean()), 4)
    for name, score in open_set:
        score.record(images, scores.open_set[name], stats)
