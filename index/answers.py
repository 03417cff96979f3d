"""The parts of one identification answer read from the enrolled rows: the ranked candidate
species, the taxon names of a decision, the most similar enrolled photos and the region vote
(:meth:`index.classifier.VectorIdentifier.identify` puts them together)."""

from __future__ import annotations

import numpy as np

from .enrolled import EnrolledRows
from .query_scores import Scored
from .results import Candidate, Decision, SimilarSpecimen


def closest_photo(rows: EnrolledRows, q: np.ndarray, species: int) -> float:
    """Cosine similarity of the (mapped) query to the species' closest enrolled photo."""
    mine = rows.rows_by_species[species]
    return float(np.max(rows.vectors[mine] @ q[0])) if len(mine) else float("nan")


def candidates(
    rows: EnrolledRows,
    q: np.ndarray,
    scored: Scored,
    mask: np.ndarray,
    top_k: int,
    rejected: bool,
) -> list[Candidate]:
    """The ``top_k`` (at least 1) allowed species by score for query ``q`` (1, d); without
    probabilities when the decision ``rejected`` every species."""
    sims, probs = scored.sims, scored.probabilities
    order = [j for j in np.argsort(-sims[0], kind="stable") if mask[j]][: max(1, top_k)]
    return [
        Candidate(
            species=rows.species[j],
            genus=rows.genus[j],
            family=rows.family[j],
            score=round(float(sims[0, j]), 6),
            probability=None if rejected else round(float(probs[0, j]), 6),
            similarity=round(closest_photo(rows, q, j), 6),
        )
        for j in order
    ]


def named_taxa(
    rows: EnrolledRows, decision: Decision, taxon: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(species, genus, family)`` an answer names for its decision and taxon: a species
    with its genus and family, a genus with its family when all its species share one."""
    if decision == "species":
        assert taxon is not None
        s = rows.species.index(taxon)
        return taxon, rows.genus[s] or None, rows.family[s] or None
    if decision == "genus":
        families = {
            rows.family[s] for s, g in enumerate(rows.genus) if g == taxon and rows.family[s]
        }
        return None, taxon, families.pop() if len(families) == 1 else None
    if decision == "family":
        return None, None, taxon
    return None, None, None


def similar(rows: EnrolledRows, q: np.ndarray, k: int, mask: np.ndarray) -> list[SimilarSpecimen]:
    """The ``k`` enrolled photos nearest to ``q`` among the allowed species."""
    found, scores = rows.nearest(q, k, mask)
    return [
        SimilarSpecimen(
            specimen_id=str(rows.ids[r]),
            species=rows.species[rows.y[r]],
            genus=rows.genus[rows.y[r]],
            score=round(float(s), 6),
            source=str(rows.sources[r]),
            region=str(rows.region_of_row(r)),
            specimen=rows.specimen_of_row(r),
        )
        for r, s in zip(found, scores, strict=True)
    ]


def region_votes(rows: EnrolledRows, q: np.ndarray, k: int, mask: np.ndarray) -> dict[str, float]:
    """Regions of the ``k`` nearest photos, weighted by similarity, as shares (largest first)."""
    found, scores = rows.nearest(q, k, mask)
    votes: dict[str, float] = {}
    for r, s in zip(found, scores, strict=True):
        text = rows.region_of_row(r)
        if text:
            votes[text] = votes.get(text, 0.0) + max(float(s), 0.0)
    total = sum(votes.values())
    if total <= 0:
        return {}
    return {k: round(v / total, 4) for k, v in sorted(votes.items(), key=lambda kv: -kv[1])}
