"""Within-species whitening (index/whitening.py) and the whitened scorer, the default method."""

from __future__ import annotations

import numpy as np

from index import VectorIdentifier
from index.config import IdentifierConfig
from index.enrolled import EnrolledRows
from index.rows import SpecimenRows
from index.scorers import Cl2n, PrototypeScorer, WhitenedScorer, species_scorer
from index.whitening import Whitening
from tests.clusters import unit

DIM = 16
CONFIG = IdentifierConfig(use_gpu=False)


def stretched(species: int, specimens: int, seed: int = 0, views: int = 1):
    """Species whose means differ a little along dims 0-3, with specimens spread far along a
    shared nuisance direction (dim 4): cosine to the mean is fooled, whitening is not."""
    rng = np.random.default_rng(seed)
    base = np.zeros(DIM)
    base[5] = 3.0
    means = base + np.eye(DIM)[np.arange(species) % 4] * 0.6
    vectors, labels, groups = [], [], []
    for s in range(species):
        for p in range(specimens):
            specimen = means[s] + rng.normal(size=DIM) * 0.08
            specimen[4] += rng.normal() * 2.5
            for _ in range(views):
                vectors.append(specimen + rng.normal(size=DIM) * 0.01)
                labels.append(f"Genus_s{s}")
                groups.append(f"p{p}")
    return unit(np.array(vectors)), labels, groups


def fitted(config: IdentifierConfig, vectors, labels, groups):
    rows = EnrolledRows(DIM)
    rows.add(SpecimenRows(vectors, labels, groups=groups))
    cl2n = Cl2n(rows, config)
    cl2n.fit()
    return rows, cl2n


def test_whitened_is_the_default_method():
    rows, cl2n = fitted(CONFIG, *stretched(4, 3))
    assert isinstance(species_scorer(rows, cl2n, CONFIG), WhitenedScorer)


def test_one_specimen_per_species_scores_exactly_like_the_prototypes():
    vectors, labels, groups = stretched(4, 1, views=3)  # views of one specimen add no dof
    rows, cl2n = fitted(CONFIG, vectors, labels, groups)
    whitened, plain = WhitenedScorer(rows, cl2n, CONFIG), PrototypeScorer(rows, cl2n, CONFIG)
    whitened.fit()
    plain.fit()
    estimate = whitened.estimate()
    assert estimate.is_identity and estimate.shrinkage == 1.0 and estimate.dof == 0
    whitened.use(estimate)
    queries, _, _ = stretched(4, 2, seed=5)
    np.testing.assert_allclose(whitened.scores(queries), plain.scores(queries), atol=1e-6)


def test_shrinkage_follows_the_specimens_not_the_photos():
    vectors, labels, groups = stretched(4, 5, views=3)
    y = np.unique(labels, return_inverse=True)[1]
    g = np.unique([f"{s}/{p}" for s, p in zip(labels, groups, strict=True)], return_inverse=True)
    whitening = Whitening.fit(vectors, y, g[1])
    assert whitening.dof == 4 * 5 - 4
    assert whitening.shrinkage == DIM / (DIM + 16)


def test_whitening_names_specimens_that_the_plain_prototypes_confuse():
    vectors, labels, groups = stretched(4, 30)
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups), config=CONFIG)
    plain = VectorIdentifier.fit(
        SpecimenRows(vectors, labels, groups=groups),
        config=IdentifierConfig(method="prototype", use_gpu=False),
    )
    queries, truth, _ = stretched(4, 40, seed=9)
    right = np.mean(
        [t[0] == y for t, y in zip(identifier.score_batch(queries).top(1), truth, strict=True)]
    )
    plain_right = np.mean(
        [t[0] == y for t, y in zip(plain.score_batch(queries).top(1), truth, strict=True)]
    )
    assert right >= 0.9
    assert right > plain_right + 0.15


def test_a_bounded_refit_samples_specimens_and_stays_close_to_the_full_one():
    vectors, labels, _ = stretched(4, 200)
    y = np.unique(labels, return_inverse=True)[1]
    g = np.arange(len(y))
    full = Whitening.fit(vectors, y, g)
    sampled = Whitening.fit(vectors, y, g, max_specimens=400, seed=1)
    again = Whitening.fit(vectors, y, g, max_specimens=400, seed=1)
    np.testing.assert_array_equal(sampled.scale, again.scale)  # seeded: reproducible
    assert sampled.dof == full.dof  # the shrinkage still counts every specimen
    probe = unit(np.random.default_rng(3).normal(size=(50, DIM)))
    full_cosines = full.apply(probe) @ full.apply(probe).T
    sampled_cosines = sampled.apply(probe) @ sampled.apply(probe).T
    assert np.abs(full_cosines - sampled_cosines).max() < 0.1


def test_held_out_scores_do_not_let_a_specimen_vouch_for_itself():
    vectors, labels, groups = stretched(4, 5)
    rows, cl2n = fitted(CONFIG, vectors, labels, groups)
    scorer = WhitenedScorer(rows, cl2n, CONFIG)
    scorer.fit()
    scorer.use(scorer.estimate())
    everything = np.arange(len(rows))
    own = np.arange(len(rows)), rows.y
    held_out = scorer.held_out_scores(everything)[own]
    in_sample = scorer.scores(rows.vectors)[own]
    assert np.all(np.isfinite(held_out))
    assert held_out.mean() < in_sample.mean() - 0.02


def test_a_refit_changes_nothing_until_it_is_applied_and_new_species_count_at_once():
    vectors, labels, groups = stretched(3, 20)
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups), config=CONFIG)
    queries, _, _ = stretched(3, 2, seed=4)
    newcomer, new_labels, new_groups = stretched(4, 3, seed=6)
    keep = [i for i, s in enumerate(new_labels) if s == "Genus_s3"]
    identifier.add(
        SpecimenRows(
            newcomer[keep], [new_labels[i] for i in keep], groups=[new_groups[i] for i in keep]
        ),
        calibrate=False,
    )
    # enrolled without a refit: answered at once, with the previous whitening
    probe = newcomer[keep][:1]
    assert identifier.score_batch(probe).top(1)[0][0] == "Genus_s3"
    before = identifier.score_batch(queries).similarities
    refit = identifier.prepare_refit()
    np.testing.assert_array_equal(identifier.score_batch(queries).similarities, before)
    identifier.apply_refit(refit)
    assert identifier.calibrated_thresholds == refit.thresholds
    assert not np.array_equal(identifier.score_batch(queries).similarities, before)
