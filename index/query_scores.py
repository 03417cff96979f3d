"""One pass over a batch of (mapped) queries: species scores, probabilities with "none of
these", every open-set score and the decisions (:class:`Scored`, made by :func:`score`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import open_set_probabilities
from .decision import DecisionPolicy
from .errors import EmptyCollectionError, InvalidQueryError
from .open_set import OpenSetScores
from .results import Decision, Thresholds
from .scorers import SpeciesScorer


@dataclass(frozen=True)
class Scored:
    """Scores of a batch of (mapped) queries: species scores ``sims`` and ``probabilities``
    (m, S), the "none of these" probability (m,), every open-set score as answers report it
    (name -> (m,)) and the decision verdicts ``(decision, taxon, probability)``."""

    sims: np.ndarray
    probabilities: np.ndarray
    none: np.ndarray
    open_set: dict[str, np.ndarray]
    verdicts: list[tuple[Decision, str | None, float]]

    def answer_scores(self, i: int = 0) -> dict[str, float]:
        """``{name: value}`` of every open-set score of query ``i`` as the answer shows it
        (NaN as 2)."""
        return {
            name: round(float(np.nan_to_num(scores[i], nan=2.0)), 6)
            for name, scores in self.open_set.items()
        }


def score(
    queries: np.ndarray,
    scorer: SpeciesScorer,
    open_set: OpenSetScores,
    policy: DecisionPolicy,
    thresholds: Thresholds,
    none_temperature: float | None,
    mask: np.ndarray | None = None,
) -> Scored:
    """Score ``queries`` among the species ``mask`` allows (default all; the others score
    ``-inf``) and decide each under ``thresholds``."""
    sims = scorer.scores(queries)
    if mask is not None:
        sims[:, ~mask] = -np.inf
    probs, none = open_set_probabilities(
        sims, thresholds.temperature, open_set.none_score(thresholds), none_temperature
    )
    pairs = open_set.query_scores(queries, sims, thresholds)
    verdicts = policy.decide(probs, {name: pair[1] for name, pair in pairs.items()}, thresholds)
    return Scored(sims, probs, none, {name: pair[0] for name, pair in pairs.items()}, verdicts)


def checked_queries(queries: np.ndarray, dim: int, enrolled: int) -> np.ndarray:
    """``queries`` as a float32 ``(m, dim)`` array (one vector may come 1-d); InvalidQueryError
    for another size or a non-finite value, EmptyCollectionError when nothing is enrolled."""
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InvalidQueryError(
            f"query vectors must have size {dim} (this collection's model), got shape "
            f"{queries.shape}"
        )
    if not np.isfinite(queries).all():
        raise InvalidQueryError("query vectors contain NaN or infinite values")
    if enrolled == 0:
        raise EmptyCollectionError("the collection is empty: enroll some species first")
    return queries
