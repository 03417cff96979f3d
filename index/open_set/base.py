"""What an open-set score is (:class:`OpenSetScore`), the registry of them
(:data:`OPEN_SET_SCORES`) and the fitted scores of one identifier (:class:`OpenSetScores`).

An open-set score gives every query a number, higher = less like the enrolled species, and
rejects the query with its ``decision`` (``out_of_domain``, ``unknown_species``) when the
number passes the score's calibrated threshold (``Thresholds.open_set[name]``; NaN always
passes it). The decision policy checks the scores in registration order, calibration fits
them in that order (each on the held-out images the earlier ones accept), evaluation reports
each one's figures. A new score is one class following the protocol plus one registration
line: ``@OPEN_SET_SCORES.register("name")``.

This module stays light (numpy only): ``index.results`` reads the registered names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from embedder.registry import Registry

if TYPE_CHECKING:
    from ..config import IdentifierConfig
    from ..enrolled import EnrolledRows
    from ..results import CalibrationStats, Decision, Thresholds

__all__ = [
    "OPEN_SET_SCORES",
    "HeldOutImages",
    "HeldOutOpenSet",
    "OpenSetScore",
    "OpenSetScores",
    "reject",
]


def reject(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Where ``scores`` pass ``threshold`` (NaN, a query the score cannot place, always does)."""
    return ~(np.asarray(scores) <= threshold)


@dataclass(frozen=True)
class HeldOutImages:
    """Enrolled images held out by calibration (:mod:`index.calibrate`): the ``rows``, their
    species ``y``, which are ``known`` samples (their species keeps another specimen), and
    their species scores as a new specimen of their species (``sims``) and as photos of a
    species the collection lacks (``sims_unknown``: their own species' column removed)."""

    rows: np.ndarray
    y: np.ndarray
    known: np.ndarray
    sims: np.ndarray
    sims_unknown: np.ndarray
    species: list[str]  # the enrolled names

    @property
    def n_species(self) -> int:
        return len(self.species)


@dataclass(frozen=True)
class HeldOutOpenSet:
    """One open-set score of the held-out images: as a new specimen of a known species
    (``known``) and as a photo of a species the collection lacks (``unknown``); (m,) each."""

    known: np.ndarray
    unknown: np.ndarray


class OpenSetScore(Protocol):
    """An open-set score over one collection's enrolled rows (made with ``(rows, config)``,
    reading the rows as they change). The methods with a body are defaults a score may
    inherit by subclassing this protocol."""

    #: the answer of a query whose score passes the threshold
    decision: ClassVar[Decision]

    def __init__(self, rows: EnrolledRows, config: IdentifierConfig) -> None: ...

    @staticmethod
    def default_threshold(config: IdentifierConfig) -> float:
        """The threshold of an uncalibrated identifier."""
        ...

    def query_scores(
        self, queries: np.ndarray, sims: np.ndarray, threshold: float, thresholds: Thresholds
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(score, gated)`` of (mapped) ``queries`` whose species scores are ``sims``: the
        score answers report, and the one the decision compares with ``threshold``."""
        ...

    def held_out(self, images: HeldOutImages) -> HeldOutOpenSet:
        """The score of the held-out images (see :class:`HeldOutOpenSet`)."""
        ...

    def fit(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        accepted: np.ndarray,
        thresholds: Thresholds,
        notes: list[str],
    ) -> tuple[float, bool]:
        """``(threshold, calibrated)`` from the held-out ``scores``; ``accepted``: the known
        images (``images.known``) the scores before this one let through; ``thresholds``: the
        calibration so far (this score's default threshold in place). False: a fallback,
        explained in ``notes``. May record more on ``thresholds`` (the OOD score does)."""
        ...

    def accepts_known(
        self,
        images: HeldOutImages,
        scores: HeldOutOpenSet,
        threshold: float,
        thresholds: Thresholds,
    ) -> np.ndarray:
        """Which known images (``images.known``) the threshold lets through."""
        return np.nan_to_num(scores.known[images.known], nan=np.inf) <= threshold

    def rejects_unknown(self, scores: HeldOutOpenSet, threshold: float) -> np.ndarray:
        """Which held-out images, as photos of a species the collection lacks, it rejects."""
        return np.nan_to_num(scores.unknown, nan=np.inf) > threshold

    def record(
        self, images: HeldOutImages, scores: HeldOutOpenSet, stats: CalibrationStats
    ) -> None:
        """Record what the score achieves on the held-out images (default: nothing)."""

    def none_score(self, threshold: float) -> float | None:
        """The species score at which "none of these" competes with the species in the
        answer's probabilities, or None (default) when this score sets none."""
        return None


#: the open-set scores, in the order the decision policy checks them and calibration fits them
OPEN_SET_SCORES: Registry[type[OpenSetScore]] = Registry("open-set score")


class OpenSetScores:
    """The registered open-set scores made for one collection's rows (name -> score, in
    registration order as it was when made)."""

    def __init__(self, scores: dict[str, OpenSetScore]) -> None:
        self.scores = scores

    @classmethod
    def of(cls, rows: EnrolledRows, config: IdentifierConfig) -> OpenSetScores:
        return cls({name: score(rows, config) for name, score in OPEN_SET_SCORES.items()})

    def __iter__(self) -> Iterator[tuple[str, OpenSetScore]]:
        return iter(self.scores.items())

    def names(self) -> list[str]:
        return list(self.scores)

    def decisions(self) -> list[tuple[str, Decision]]:
        """(name, decision) of every score, in order (the decision policy's open-set rules)."""
        return [(name, score.decision) for name, score in self]

    def default_thresholds(self, config: IdentifierConfig) -> dict[str, float]:
        """name -> the threshold of an uncalibrated identifier."""
        return {name: score.default_threshold(config) for name, score in self}

    def query_scores(
        self, queries: np.ndarray, sims: np.ndarray, thresholds: Thresholds
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """name -> ``(score, gated)`` of every score (:meth:`OpenSetScore.query_scores`)."""
        return {
            name: score.query_scores(queries, sims, thresholds.open_set_threshold(name), thresholds)
            for name, score in self
        }

    def none_score(self, thresholds: Thresholds) -> float:
        """The species score "none of these" is scored at (``-inf``: it gets nothing)."""
        values = [
            value
            for name, score in self
            if (value := score.none_score(thresholds.open_set_threshold(name))) is not None
        ]
        return max(values, default=float("-inf"))
