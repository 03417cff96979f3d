"""The decision policy (out_of_domain -> unknown_species -> species / genus / family roll-up ->
uncertain) and the species filters."""

from __future__ import annotations

import numpy as np
import pytest

from index.config import IdentifierConfig
from index.decision import DecisionPolicy, candidate_mask, rollup_matrix
from index.enrolled import EnrolledRows
from index.errors import InvalidQueryError
from index.results import Thresholds
from index.rows import SpecimenRows

SPECIES = ["Conus_a", "Conus_b", "Murex_c", "Oliva_d"]
GENUS = ["Conus", "Conus", "Murex", ""]
FAMILY = ["Conidae", "Conidae", "Muricidae", "Olividae"]
TH = Thresholds(
    temperature=0.05,
    ood=0.5,
    unknown=0.6,
    species_probability=0.6,
    genus_probability=0.6,
    family_probability=0.6,
    target_recall=0.95,
    source="default",
)


def decide(probabilities, unknown=0.1, ood=0.1):
    policy = DecisionPolicy(SPECIES, GENUS, FAMILY)
    probs = np.atleast_2d(np.asarray(probabilities, np.float32))
    m = probs.shape[0]
    return policy.decide(probs, {"unknown": np.full(m, unknown), "ood": np.full(m, ood)}, TH)


def test_off_domain_comes_before_every_other_check():
    assert decide([1, 0, 0, 0], unknown=0.9, ood=0.7) == [("out_of_domain", None, 0.0)]


def test_a_query_without_neighbours_is_off_domain():
    assert decide([1, 0, 0, 0], ood=np.nan)[0][0] == "out_of_domain"


def test_unknown_species_when_the_best_species_is_too_far():
    assert decide([1, 0, 0, 0], unknown=0.61) == [("unknown_species", None, 0.0)]


def test_species_when_its_probability_passes_the_threshold():
    (decision, taxon, p) = decide([0.1, 0.7, 0.1, 0.1])[0]
    assert (decision, taxon) == ("species", "Conus_b") and p == pytest.approx(0.7)


def test_genus_roll_up_sums_the_species_probabilities():
    (decision, taxon, p) = decide([0.35, 0.35, 0.2, 0.1])[0]
    assert (decision, taxon) == ("genus", "Conus") and p == pytest.approx(0.7)


def test_family_roll_up_when_no_genus_passes():
    policy = DecisionPolicy(["A_x", "B_y", "C_z"], ["A", "B", "C"], ["Fam", "Fam", "Other"])
    out = policy.decide(
        np.array([[0.4, 0.3, 0.3]]), {"unknown": np.array([0.1]), "ood": np.array([0.1])}, TH
    )
    assert out[0][:2] == ("family", "Fam") and out[0][2] == pytest.approx(0.7)


def test_uncertain_when_no_taxon_passes():
    assert decide([0.3, 0.05, 0.35, 0.3]) == [("uncertain", None, 0.0)]


def test_species_without_a_genus_never_roll_up_into_one():
    # together the two genus-less species would pass 0.6 as a genus ''
    policy = DecisionPolicy(["a", "b", "Murex_c"], ["", "", "Murex"], ["F1", "F2", "F3"])
    out = policy.decide(
        np.array([[0.35, 0.35, 0.3]]), {"unknown": np.array([0.1]), "ood": np.array([0.1])}, TH
    )
    assert out == [("uncertain", None, 0.0)]
    matrix, names = rollup_matrix(GENUS)
    assert names == ["Conus", "Murex"]
    assert matrix.toarray().tolist() == [[1, 0], [1, 0], [0, 1], [0, 0]]


def test_decisions_are_made_per_query():
    out = decide([[0.1, 0.7, 0.1, 0.1], [0.3, 0.05, 0.35, 0.3]])
    assert [d for d, _, _ in out] == ["species", "uncertain"]


def rows() -> EnrolledRows:
    enrolled = EnrolledRows(4)
    enrolled.add(
        SpecimenRows(
            np.eye(4),
            SPECIES,
            taxonomy={
                "Conus_a": {"family": "Conidae", "region": "Red Sea; Indo-Pacific"},
                "Conus_b": {"family": "Conidae"},
                "Murex_c": {"family": "Muricidae", "region": "Atlantic"},
                "Oliva_d": {"family": "Olividae"},
            },
            regions=["", "red sea", "", ""],
        )
    )
    return enrolled


def test_candidate_mask_filters_case_insensitively():
    enrolled = rows()
    assert candidate_mask(enrolled).tolist() == [True] * 4
    assert candidate_mask(enrolled, genus=" conus ").tolist() == [True, True, False, False]
    assert candidate_mask(enrolled, family="MURICIDAE").tolist() == [False, False, True, False]
    assert candidate_mask(enrolled, region="Red Sea").tolist() == [True, True, False, False]
    assert candidate_mask(enrolled, region="red sea", genus="Conus", family="Conidae").sum() == 2


def test_candidate_mask_raises_naming_the_filters_when_nothing_passes():
    with pytest.raises(InvalidQueryError, match="region='Atlantic', genus='Conus'"):
        candidate_mask(rows(), region="Atlantic", genus="Conus")


def test_candidate_mask_names_the_closest_known_value_of_an_unknown_one():
    with pytest.raises(
        InvalidQueryError, match=r"unknown region 'Atlantik' \(closest known: 'Atlantic'\)"
    ):
        candidate_mask(rows(), region="Atlantik", genus="Conus")
    with pytest.raises(InvalidQueryError, match=r"unknown region 'Arctic' \(known: 'Atlantic', "):
        candidate_mask(rows(), region="Arctic")  # nothing close: the known ones
    with pytest.raises(InvalidQueryError, match=r"unknown family 'Olivdae'.*'Olividae'"):
        candidate_mask(rows(), family="Olivdae")


def _random_collection(rng: np.random.Generator):
    from index import VectorIdentifier

    dim = int(rng.integers(8, 33))
    species = int(rng.integers(2, 9))
    centres = rng.normal(size=(species, dim))
    spread = float(rng.uniform(0.1, 1.5))
    vectors, labels, groups = [], [], []
    for s in range(species):
        for p in range(int(rng.integers(1, 7))):
            specimen = centres[s] + spread * rng.normal(size=dim)
            for _ in range(int(rng.integers(1, 3))):
                vectors.append(specimen + 0.05 * rng.normal(size=dim))
                labels.append(f"Genus{s % 3}_species{s}")
                groups.append(f"p{p}")
    identifier = VectorIdentifier.fit(
        SpecimenRows(np.array(vectors), labels, groups=groups),
        config=IdentifierConfig(use_gpu=False),
    )
    if rng.random() < 0.3:  # a user's overrides must not break the story either
        identifier.set_overrides(
            unknown=float(rng.uniform(0.0, 1.0)), species_probability=float(rng.uniform(0.3, 1))
        )
    near = centres[rng.integers(species, size=8)] + spread * rng.normal(size=(8, dim))
    queries = np.concatenate([near, 3 * rng.normal(size=(4, dim)), -centres[:2]])
    return identifier, queries


@pytest.mark.parametrize("seed", range(40))
def test_a_rejection_never_shows_a_candidate_as_probable(seed):
    """Property over random collections: ``unknown_species`` / ``out_of_domain`` answers give
    candidates similarities only; every other answer's probabilities leave room for "none of
    these" and never rank "none" above the named species."""
    rng = np.random.default_rng(seed)
    identifier, queries = _random_collection(rng)
    batch = identifier.score_batch(queries)
    for i, query in enumerate(queries):
        answer = identifier.identify(query, top_k=10)
        assert answer.decision == batch.decisions[i]
        probabilities = [c.probability for c in answer.candidates]
        if answer.decision in ("unknown_species", "out_of_domain"):
            assert all(p is None for p in probabilities), answer
            assert answer.confidence == 0.0
            if answer.decision == "unknown_species":
                assert batch.none_probability[i] >= batch.probabilities[i].max() - 1e-6
            continue
        assert all(p is not None for p in probabilities)
        assert answer.none_probability is not None
        # float32 probabilities, none rounded to 6 decimals
        assert sum(batch.probabilities[i]) + answer.none_probability == pytest.approx(1, abs=1e-4)
        assert batch.probabilities[i].max() >= answer.none_probability - 1e-6
        if answer.decision == "species":
            assert answer.confidence == pytest.approx(answer.candidates[0].probability, abs=1e-5)
