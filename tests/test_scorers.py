"""Species, unknown and OOD scorers over enrolled rows, by hand on small synthetic vectors;
held-out scores never use the query's own specimen (or species)."""

from __future__ import annotations

import numpy as np
import pytest

from index import scorers
from index.config import IdentifierConfig
from index.enrolled import EnrolledRows
from index.open_set.out_of_domain import OutOfDomainScore as OodScorer
from index.open_set.out_of_domain import topk_mean
from index.open_set.unknown_species import unknown_scores
from index.rows import SpecimenRows
from index.scorers import (
    Cl2n,
    MeanScorer,
    NearestSpecimenScorer,
    PrototypeScorer,
    species_scorer,
)
from tests.clusters import specimens_around, unit

DIM = 16
#: the whole collection mean subtracted, as in a collection of many species
CONFIG = IdentifierConfig(use_gpu=False, centre_full_species=1)


def world(config: IdentifierConfig = CONFIG, species: int = 4, specimens: int = 3):
    """``species`` clusters of ``specimens`` specimens with 2 views each, fitted CL2N."""
    rng = np.random.default_rng(1)
    centres = unit(rng.normal(size=(species, DIM)))
    vectors, labels, groups = specimens_around(
        centres, [specimens] * species, rng, 0.3, 0.05, lambda s: f"Genus_s{s}"
    )
    rows = EnrolledRows(DIM)
    rows.add(SpecimenRows(vectors, labels, groups=groups))
    cl2n = Cl2n(rows, config)
    cl2n.fit()
    queries = unit(centres + 0.3 * rng.normal(size=centres.shape)).astype(np.float32)
    return rows, cl2n, queries


def centred_by_hand(rows: EnrolledRows, x: np.ndarray) -> np.ndarray:
    mean = rows.vectors.mean(axis=0)
    return unit(unit(x) - mean)


def test_centring_fades_in_with_the_number_of_species():
    """The whole collection mean from ``centre_full_species`` species on; a share of it below
    (none with one species), so no enrolment switches the centring on at once."""
    rows, cl2n, queries = world(IdentifierConfig(use_gpu=False, centre_full_species=4))
    species = len(rows.species)
    assert np.allclose(cl2n(queries), centred_by_hand(rows, queries), atol=1e-6)
    few = Cl2n(rows, IdentifierConfig(centre_full_species=2 * species - 1, use_gpu=False))
    few.fit()
    assert few.mean is not None
    assert np.allclose(few.mean, 0.5 * rows.vectors.mean(axis=0), atol=1e-6)
    weights = [few.weight(s) for s in range(1, 2 * species + 1)]
    assert weights[0] == 0.0 and weights[-1] == 1.0
    steps = np.diff(weights)
    assert (steps >= 0).all() and (steps <= 1.0 / (2 * species - 2) + 1e-9).all()


def test_prototype_scores_are_cosines_to_the_centred_species_means():
    rows, cl2n, queries = world()
    scorer = PrototypeScorer(rows, cl2n, CONFIG)
    scorer.fit()
    centred = centred_by_hand(rows, rows.vectors)
    protos = unit(np.stack([centred[rows.y == s].mean(axis=0) for s in range(len(rows.species))]))
    expected = centred_by_hand(rows, queries) @ protos.T
    assert np.allclose(scorer.scores(queries), expected, atol=1e-5)


def test_nearest_specimen_scores_take_the_best_row_of_each_species():
    rows, cl2n, queries = world()
    scorer = NearestSpecimenScorer(rows, cl2n, CONFIG)
    dense = centred_by_hand(rows, queries) @ centred_by_hand(rows, rows.vectors).T
    species = range(len(rows.species))
    expected = np.stack([dense[:, rows.y == s].max(axis=1) for s in species], axis=1)
    assert np.allclose(scorer.scores(queries), expected, atol=1e-5)


def test_the_faiss_rescoring_path_agrees_when_its_candidates_cover_the_collection(monkeypatch):
    rows, cl2n, queries = world()
    exact = NearestSpecimenScorer(rows, cl2n, CONFIG).scores(queries)
    monkeypatch.setattr(scorers, "EXACT_KNN_LIMIT", 0)
    covering = IdentifierConfig(knn_candidates=len(rows), use_gpu=False)
    rescored = NearestSpecimenScorer(rows, cl2n, covering).scores(queries)
    assert np.allclose(rescored, exact, atol=1e-6)
    # with 2 candidates: at least 2 species are missing and share a floor below the candidates,
    # whose scores can only be lower than the exact ones (fewer rows seen)
    few = NearestSpecimenScorer(rows, cl2n, IdentifierConfig(knn_candidates=2, use_gpu=False))
    for got, full in zip(few.scores(queries), exact, strict=True):
        floor = got.min()
        assert (got == floor).sum() >= 2
        assert np.all(got[got > floor] <= full[got > floor] + 1e-6)


def test_the_mean_scorer_averages_its_parts():
    rows, cl2n, queries = world()
    scorer = species_scorer(rows, cl2n, IdentifierConfig(use_gpu=False, method="prototype+knn"))
    assert isinstance(scorer, MeanScorer)
    scorer.fit()
    proto, nearest = scorer.parts
    expected = 0.5 * (proto.scores(queries) + nearest.scores(queries))
    assert np.array_equal(scorer.scores(queries), expected)
    held = np.arange(6)
    assert np.array_equal(
        scorer.held_out_scores(held),
        0.5 * (proto.held_out_scores(held) + nearest.held_out_scores(held)),
    )
    assert scorer.held_out_cost == 3


@pytest.mark.parametrize(
    ("method", "kind", "cost"),
    [("prototype", PrototypeScorer, 2), ("knn", NearestSpecimenScorer, 3)],
)
def test_species_scorer_follows_the_configured_method(method, kind, cost):
    rows, cl2n, _ = world()
    scorer = species_scorer(rows, cl2n, IdentifierConfig(method=method, use_gpu=False))
    assert isinstance(scorer, kind) and scorer.held_out_cost == cost


def test_held_out_prototype_scores_leave_the_own_specimen_out_of_its_species_mean():
    rows, cl2n, _ = world()
    scorer = PrototypeScorer(rows, cl2n, CONFIG)
    scorer.fit()
    held = np.arange(len(rows))
    scores = scorer.held_out_scores(held)
    centred = centred_by_hand(rows, rows.vectors)
    for r in (0, 7, 20):
        y = rows.y[r]
        rest = (rows.y == y) & (rows.g != rows.g[r])
        own = float(centred[r] @ unit(centred[rest].mean(axis=0)))
        assert scores[r, y] == pytest.approx(own, abs=1e-5)
        other = (y + 1) % 4
        full = scorer.scores(rows.vectors[r : r + 1])[0, other]
        assert scores[r, other] == pytest.approx(full, abs=1e-6)


def test_held_out_scores_of_a_species_with_one_specimen_are_minus_infinity():
    rows, cl2n, _ = world(specimens=1)
    for kind in (PrototypeScorer, NearestSpecimenScorer):
        scorer = kind(rows, cl2n, CONFIG)
        scorer.fit()
        scores = scorer.held_out_scores(np.arange(len(rows)))
        assert np.all(np.isneginf(scores[np.arange(len(rows)), rows.y]))


def test_held_out_nearest_scores_never_match_the_other_view_of_the_own_specimen():
    rows, cl2n, _ = world()
    scorer = NearestSpecimenScorer(rows, cl2n, CONFIG)
    held = np.arange(len(rows))
    scores = scorer.held_out_scores(held)
    centred = centred_by_hand(rows, rows.vectors)
    for r in (0, 9):
        y = rows.y[r]
        others = (rows.y == y) & (rows.g != rows.g[r])
        assert scores[r, y] == pytest.approx(float((centred[others] @ centred[r]).max()), abs=1e-5)
    # a row's own twin view would score far higher than any other specimen
    assert np.all(scores[held, rows.y[held]] < 0.99)


def test_ood_scores_are_one_minus_the_mean_of_the_k_nearest_raw_similarities():
    rows, _, queries = world()
    ood = OodScorer(rows, IdentifierConfig(ood_k=3, use_gpu=False))
    raw = unit(queries) @ rows.vectors.T
    expected = 1.0 - np.sort(raw, axis=1)[:, -3:].mean(axis=1)
    assert np.allclose(ood.scores(queries), expected, atol=1e-5)


def test_held_out_ood_scores_leave_out_the_own_specimen_and_the_own_species():
    rows, _, _ = world()
    ood = OodScorer(rows, IdentifierConfig(ood_k=2, use_gpu=False))
    known, unknown = ood.held_out_scores(np.array([0, 13]))
    raw = rows.vectors @ rows.vectors.T
    for i, r in enumerate((0, 13)):
        no_group = raw[r][rows.g != rows.g[r]]
        no_species = raw[r][rows.y != rows.y[r]]
        assert known[i] == pytest.approx(1 - np.sort(no_group)[-2:].mean(), abs=1e-5)
        assert unknown[i] == pytest.approx(1 - np.sort(no_species)[-2:].mean(), abs=1e-5)
    assert np.all(unknown >= known)


def test_unknown_score_is_one_minus_the_best_species_score():
    sims = np.array([[0.2, 0.7, -np.inf], [-np.inf, -np.inf, -np.inf]])
    assert unknown_scores(sims).tolist() == pytest.approx([0.3, 2.0])
    assert unknown_scores(np.zeros((2, 0))).tolist() == [2.0, 2.0]


def test_topk_mean_ignores_missing_values():
    values = np.array([[1.0, 3.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    out = topk_mean(values, 2)
    assert out[0] == pytest.approx(2.0) and np.isnan(out[1])
