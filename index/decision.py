"""The decision policy (scores -> one answer per query) and the species filters of a query.

Order of the checks: ``out_of_domain`` (OOD score above its threshold, or no neighbour),
``unknown_species`` (unknown score above its threshold), then the most specific taxon whose
probability passes its threshold: ``species``, ``genus`` (species probabilities summed per
genus), ``family``; else ``uncertain``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from .enrolled import EnrolledRows, regions_of
from .errors import InvalidQueryError
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


class DecisionPolicy:
    """Decisions over ``species`` with their ``genus`` and ``family`` ('' = not known)."""

    def __init__(self, species: list[str], genus: list[str], family: list[str]) -> None:
        self.species = list(species)
        self.genus_map, self.genus_names = rollup_matrix(genus)
        self.family_map, self.family_names = rollup_matrix(family)

    @classmethod
    def of(cls, rows: EnrolledRows) -> DecisionPolicy:
        return cls(rows.species, rows.genus, rows.family)

    def decide(
        self,
        probabilities: np.ndarray,
        unknown: np.ndarray,
        ood: np.ndarray,
        thresholds: Thresholds,
    ) -> list[tuple[Decision, str | None, float]]:
        """Per query: (decision, named taxon or None, its probability)."""
        th = thresholds
        genus_probs = (self.genus_map.T @ probabilities.T).T if self.genus_names else None
        family_probs = (self.family_map.T @ probabilities.T).T if self.family_names else None
        out: list[tuple[Decision, str | None, float]] = []
        for i in range(probabilities.shape[0]):
            if not ood[i] <= th.ood:  # NaN (no neighbour) counts as off-domain
                out.append(("out_of_domain", None, 0.0))
                continue
            if unknown[i] > th.unknown:
                out.append(("unknown_species", None, 0.0))
                continue
            top = int(np.argmax(probabilities[i]))
            if probabilities[i, top] >= th.species_probability:
                out.append(("species", self.species[top], float(probabilities[i, top])))
                continue
            if genus_probs is not None:
                g = int(np.argmax(genus_probs[i]))
                if genus_probs[i, g] >= th.genus_probability:
                    out.append(("genus", self.genus_names[g], float(genus_probs[i, g])))
                    continue
            if family_probs is not None:
                f = int(np.argmax(family_probs[i]))
                if family_probs[i, f] >= th.family_probability:
                    out.append(("family", self.family_names[f], float(family_probs[i, f])))
                    continue
            out.append(("uncertain", None, 0.0))
        return out


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
