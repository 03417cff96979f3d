"""The decision policy (scores -> one answer per query) and the species filters of a query.

The policy walks an ordered list of rules, the first that answers deciding: one per open-set
score in registration order (:mod:`index.open_set`: ``out_of_domain`` when the OOD score is
above its threshold or there is no neighbour, ``unknown_species`` when the unknown score is),
then the most specific taxon whose probability passes its threshold: ``species``, ``genus``
(species probabilities summed per genus), ``family``; else ``uncertain``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse

from .enrolled import EnrolledRows, regions_of
from .errors import InvalidQueryError
from .open_set import OPEN_SET_SCORES
from .results import Decision, Thresholds
from .taxa import check_known, known_taxa, subset_mask


def rollup_matrix(parents: list[str]) -> tuple[sparse.csr_matrix, list[str]]:
    """``(S, P)`` 0/1 matrix mapping each species to its parent taxon (sorted names; species
    with an empty parent map to none), and the parent names."""
    names = sorted({p for p in parents if p})
    index = {p: i for i, p in enumerate(names)}
    rows = [s for s, p in enumerate(parents) if p]
    cols = [index[parents[s]] for s in rows]
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(parents), len(names))
    )
    return matrix, names


#: one answer: (decision, named taxon or None, its probability)
Verdict = tuple[Decision, str | None, float]


@dataclass(frozen=True)
class BatchView:
    """What the rules read for a batch of queries: species ``probabilities`` (m, S), the
    open-set scores as the decision compares them (name -> (m,)), the thresholds, and the
    probabilities rolled up per genus / family (None: no such rank enrolled)."""

    probabilities: np.ndarray
    open_set: Mapping[str, np.ndarray]
    thresholds: Thresholds
    rolled_up: Mapping[str, np.ndarray | None]


#: a rule answers query ``i`` of a batch, or passes it on (None) to the next rule
Rule = Callable[[BatchView, int], Verdict | None]


def open_set_rule(name: str, decision: Decision) -> Rule:
    """``decision`` where open-set score ``name`` passes its threshold (NaN always does)."""

    def rule(batch: BatchView, i: int) -> Verdict | None:
        if not batch.open_set[name][i] <= batch.thresholds.open_set_threshold(name):
            return (decision, None, 0.0)
        return None

    return rule


def species_rule(species: list[str]) -> Rule:
    """``species`` when the most probable one reaches ``species_probability``."""

    def rule(batch: BatchView, i: int) -> Verdict | None:
        probabilities = batch.probabilities[i]
        top = int(np.argmax(probabilities))
        if probabilities[top] >= batch.thresholds.species_probability:
            return ("species", species[top], float(probabilities[top]))
        return None

    return rule


def rollup_rule(rank: Literal["genus", "family"], names: list[str]) -> Rule:
    """``rank`` when the most probable taxon of that rank (its species' probabilities
    summed) reaches ``<rank>_probability``."""
    threshold_field = f"{rank}_probability"

    def rule(batch: BatchView, i: int) -> Verdict | None:
        rolled = batch.rolled_up[rank]
        if rolled is None:
            return None
        j = int(np.argmax(rolled[i]))
        if rolled[i, j] >= getattr(batch.thresholds, threshold_field):
            return (rank, names[j], float(rolled[i, j]))
        return None

    return rule


def uncertain_rule(batch: BatchView, i: int) -> Verdict:
    """Close to enrolled species, but none is likely enough."""
    return ("uncertain", None, 0.0)


class DecisionPolicy:
    """Decisions over ``species`` with their ``genus`` and ``family`` ('' = not known): the
    first of :attr:`rules` that answers a query decides it. ``open_set``: (score name,
    decision) of the open-set checks, first (default: every registered score, in order)."""

    def __init__(
        self,
        species: list[str],
        genus: list[str],
        family: list[str],
        open_set: Sequence[tuple[str, Decision]] | None = None,
    ) -> None:
        self.species = list(species)
        self.genus_map, self.genus_names = rollup_matrix(genus)
        self.family_map, self.family_names = rollup_matrix(family)
        if open_set is None:
            open_set = [(name, score.decision) for name, score in OPEN_SET_SCORES.items()]
        self.rules: list[Rule] = [
            *(open_set_rule(name, decision) for name, decision in open_set),
            species_rule(self.species),
            rollup_rule("genus", self.genus_names),
            rollup_rule("family", self.family_names),
            uncertain_rule,
        ]

    @classmethod
    def of(
        cls, rows: EnrolledRows, open_set: Sequence[tuple[str, Decision]] | None = None
    ) -> DecisionPolicy:
        return cls(rows.species, rows.genus, rows.family, open_set)

    def decide(
        self,
        probabilities: np.ndarray,
        open_set: Mapping[str, np.ndarray],
        thresholds: Thresholds,
    ) -> list[Verdict]:
        """Per query: (decision, named taxon or None, its probability); ``open_set``: score
        name -> the scores as the decision compares them (``OpenSetScore.query_scores``)."""
        batch = BatchView(
            probabilities,
            open_set,
            thresholds,
            {
                "genus": (self.genus_map.T @ probabilities.T).T if self.genus_names else None,
                "family": (self.family_map.T @ probabilities.T).T if self.family_names else None,
            },
        )
        return [self._first_answer(batch, i) for i in range(probabilities.shape[0])]

    def _first_answer(self, batch: BatchView, i: int) -> Verdict:
        for rule in self.rules:
            verdict = rule(batch, i)
            if verdict is not None:
                return verdict
        raise AssertionError("the last rule answers every query")


def candidate_mask(
    rows: EnrolledRows,
    region: str | None = None,
    genus: str | None = None,
    family: str | None = None,
    subset: Sequence[str] | None = None,
) -> np.ndarray:
    """Species allowed by the filters (case-insensitive) and by ``subset`` (species, genus or
    family names: any of them). A value the collection does not know raises
    InvalidQueryError naming the closest known ones (:mod:`index.taxa`); so does a set of
    known values that no enrolled species passes together."""
    mask = np.ones(len(rows.species), bool)
    if not (region or genus or family or subset is not None):
        return mask
    taxa = known_taxa(rows)
    check_known(taxa, region, genus, family)
    if subset is not None:
        mask &= subset_mask(taxa, subset)
    if genus:
        mask &= np.array([g.lower() == genus.strip().lower() for g in rows.genus], bool)
    if family:
        mask &= np.array([f.lower() == family.strip().lower() for f in rows.family], bool)
    if region:
        wanted = regions_of(region)
        mask &= np.array([bool(r & wanted) for r in rows.species_regions], bool)
    if not mask.any():
        asked = ", ".join(
            f"{k}={v!r}" for k, v in (("region", region), ("genus", genus), ("family", family)) if v
        )
        asked += " and the subset" if asked and subset is not None else ""
        raise InvalidQueryError(f"no enrolled species matches {asked or 'the subset'}")
    return mask
