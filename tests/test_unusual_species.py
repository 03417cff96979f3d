"""A species photographed unlike the rest of the collection (issue 22): its own held-out photos
widen the out-of-domain gate around it (``Thresholds.ood_by_species``), so its new photos are
named instead of answered out_of_domain, while photos far from everything still are."""

from __future__ import annotations

import numpy as np

from index import VectorIdentifier
from index.rows import SpecimenRows
from tests.clusters import specimens_around, unit

DIM = 64


def collection(seed: int = 0):
    """Eight tight species near one another (a studio domain) and one loose species far off
    with three specimens; and the loose species' other photos."""
    rng = np.random.default_rng(seed)
    domain = unit(rng.normal(size=DIM))
    centres = unit(domain + 0.08 * rng.normal(size=(8, DIM)))
    tight, labels, groups = specimens_around(
        centres, [6] * 8, rng, 0.04, 0.01, lambda s: f"Studio{s}_sp"
    )
    far = unit(rng.normal(size=DIM))
    loose = unit(far + 0.09 * rng.normal(size=(13, DIM)))
    vectors = np.vstack([unit(tight), loose[:3]])
    labels = [*labels, *["Reef_fish"] * 3]
    groups = [*groups, "t0", "t1", "t2"]
    return vectors, labels, groups, loose[3:], rng


def test_an_unusual_species_widens_the_domain_around_itself():
    vectors, labels, groups, others, rng = collection()
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups))
    assert "Reef_fish" in identifier.thresholds.ood_by_species
    assert identifier.thresholds.ood_by_species["Reef_fish"] > identifier.thresholds.ood
    batch = identifier.score_batch(others)
    top = batch.top(1)
    named = [
        d == "species" and t == ["Reef_fish"] for d, t in zip(batch.decisions, top, strict=True)
    ]
    assert np.mean(named) >= 0.9, batch.decisions
    # the widening is the species' own: far from every photo is still off-domain
    strangers = unit(rng.normal(size=(20, DIM)))
    assert all(d == "out_of_domain" for d in identifier.score_batch(strangers).decisions)


def test_tight_species_get_no_threshold_of_their_own():
    vectors, labels, groups, _, _ = collection(seed=1)
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups))
    assert not any(name.startswith("Studio") for name in identifier.thresholds.ood_by_species)
