"""VectorIdentifier on synthetic vectors: prototypes, calibration, open-set decisions, roll-up,
filters, multi-view fusion, tiny collections."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from index import EmptyCollectionError, IdentifierConfig, InvalidQueryError, VectorIdentifier
from index.calibration import auroc, fit_temperature, softmax
from index.prototypes import fuse_views, l2_normalise, power_normalise
from index.rows import SpecimenRows

DIM = 32


def clustered(
    seed: int = 0,
    species: int = 10,
    specimens: int = 6,
    views: int = 2,
    spread: float = 0.25,
    view_noise: float = 0.1,
):
    """A synthetic 'domain': species centres share a common direction (as photos of shells
    share shell-ness); specimens scatter around their species centre, views around those."""
    rng = np.random.default_rng(seed)
    centres = species_centres(rng, species)
    vectors, names, groups = [], [], []
    for s in range(species):
        for p in range(specimens):
            specimen = centres[s] + spread * rng.normal(size=DIM) / np.sqrt(DIM) * 3
            for _ in range(views):
                vectors.append(specimen + view_noise * rng.normal(size=DIM) / np.sqrt(DIM) * 3)
                names.append(f"Genus{s // 2}_species{s}")
                groups.append(f"{s}-{p}")
    return l2_normalise(np.array(vectors)), names, groups, centres


DOMAIN = l2_normalise(np.random.default_rng(99).normal(size=DIM))


def species_centres(rng: np.random.Generator, count: int) -> np.ndarray:
    return l2_normalise(DOMAIN + 0.9 * l2_normalise(rng.normal(size=(count, DIM))))


def new_specimens(centres: np.ndarray, index: int, count: int, seed: int, spread: float = 0.25):
    rng = np.random.default_rng(seed)
    x = centres[index] + spread * rng.normal(size=(count, DIM)) / np.sqrt(DIM) * 3
    return l2_normalise(x)


@pytest.fixture(scope="module")
def world():
    vectors, names, groups, centres = clustered()
    known = [n for n in sorted(set(names)) if int(n.rsplit("species", 1)[1]) < 7]
    keep = np.isin(names, known)
    identifier = VectorIdentifier.fit(
        SpecimenRows(
            vectors[keep],
            list(np.array(names)[keep]),
            groups=list(np.array(groups)[keep]),
            taxonomy={
                "Genus0_species0": {"region": "Japan", "family": "Conidae"},
                "Genus0_species1": {"region": "Red Sea", "family": "Conidae"},
            },
        )
    )
    return identifier, centres


def test_new_specimens_of_enrolled_species_are_named(world):
    identifier, centres = world
    queries = np.concatenate([new_specimens(centres, s, 20, seed=100 + s) for s in range(7)])
    truth = [f"Genus{s // 2}_species{s}" for s in range(7) for _ in range(20)]
    batch = identifier.score_batch(queries)
    top1 = np.mean([t[0] == y for t, y in zip(batch.top(1), truth, strict=True)])
    accepted = np.mean([d not in ("unknown_species", "out_of_domain") for d in batch.decisions])
    assert top1 >= 0.85
    assert accepted >= 0.85  # calibrated for 0.95 on held-out specimens
    assert batch.probabilities.shape == (140, 7)
    # species probabilities and "none of these" share one distribution
    np.testing.assert_allclose(
        batch.probabilities.sum(axis=1) + batch.none_probability, 1.0, atol=1e-5
    )


def test_never_enrolled_species_is_rejected_as_unknown(world):
    identifier, centres = world
    queries = np.concatenate([new_specimens(centres, s, 20, seed=200 + s) for s in (7, 8, 9)])
    decisions = Counter(identifier.score_batch(queries).decisions)
    assert decisions["unknown_species"] / 60 >= 0.8, decisions


def test_vectors_from_another_domain_are_out_of_domain(world):
    identifier, _ = world
    rng = np.random.default_rng(5)
    others = l2_normalise(-DOMAIN + 0.9 * l2_normalise(rng.normal(size=(30, DIM))))
    decisions = identifier.score_batch(others).decisions
    assert decisions.count("out_of_domain") >= 27, Counter(decisions)


def test_calibration_reports_what_it_achieves(world):
    identifier, _ = world
    th = identifier.thresholds
    assert th.source == "calibrated"
    assert 0.9 <= th.stats.known_recall <= 1.0
    assert th.stats.unknown_auroc > 0.9
    assert np.isfinite(th.unknown) and np.isfinite(th.ood)
    assert th.stats.known_queries > 0 and th.stats.unknown_queries > 0


def test_higher_target_recall_gives_looser_thresholds():
    vectors, names, groups, _ = clustered(seed=3)
    strict = VectorIdentifier.fit(
        SpecimenRows(vectors, names, groups=groups), config=IdentifierConfig(target_recall=0.8)
    )
    loose = VectorIdentifier.fit(
        SpecimenRows(vectors, names, groups=groups), config=IdentifierConfig(target_recall=0.99)
    )
    assert loose.thresholds.unknown >= strict.thresholds.unknown
    assert loose.thresholds.stats.known_recall >= strict.thresholds.stats.known_recall


def test_overrides_survive_recalibration():
    vectors, names, groups, _ = clustered(seed=1)
    other = VectorIdentifier.fit(SpecimenRows(vectors, names, groups=groups))
    other.set_overrides(unknown=0.123)
    other.calibrate()
    assert other.thresholds.unknown == pytest.approx(0.123)
    assert "unknown" in other.thresholds.overridden
    other.set_overrides(unknown=None)
    assert other.thresholds.unknown != pytest.approx(0.123)


def test_temperature_fit_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    sims = rng.uniform(-0.2, 0.8, size=(4000, 12))
    true_t = 0.07
    probs = softmax(sims, true_t)
    targets = np.array([rng.choice(12, p=p / p.sum()) for p in probs.astype(np.float64)])
    assert fit_temperature(sims, targets) == pytest.approx(true_t, rel=0.15)


def test_auroc_orders_scores():
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert auroc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([]), np.array([0.1])) is None


def test_look_alike_species_of_one_genus_roll_up_to_the_genus():
    rng = np.random.default_rng(0)
    centres = species_centres(rng, 3)
    # three Conus species that look the same, two distinct others
    plan = [("Conus_a", 0), ("Conus_b", 0), ("Conus_c", 0), ("Murex_d", 1), ("Oliva_e", 2)]
    vectors, labels, groups = [], [], []
    for name, c in plan:
        for p in range(6):
            vectors.append(centres[c] + 0.25 * rng.normal(size=DIM) / np.sqrt(DIM) * 3)
            labels.append(name)
            groups.append(f"{name}-{p}")
    # vectors as given (feature_power 1): the signed power map spreads these synthetic
    # near-zero components, and look-alikes built in raw cosine would drift apart by chance
    identifier = VectorIdentifier.fit(
        SpecimenRows(l2_normalise(np.array(vectors)), labels, groups=groups),
        config=IdentifierConfig(feature_power=1.0),
    )
    result = identifier.identify(centres[:1])
    assert result.decision == "genus"
    assert result.genus == "Conus" and result.species is None
    assert result.confidence >= 0.5
    assert {c.species for c in result.candidates[:3]} == {"Conus_a", "Conus_b", "Conus_c"}


def test_filters_restrict_the_candidates(world):
    identifier, centres = world
    query = new_specimens(centres, 0, 1, seed=7)
    assert identifier.identify(query, genus="genus0").candidates[0].species == "Genus0_species0"
    only_red_sea = identifier.identify(query, region="red sea")
    assert {c.species for c in only_red_sea.candidates} == {"Genus0_species1"}
    assert all(s.species == "Genus0_species1" for s in only_red_sea.similar)
    assert {c.species for c in identifier.identify(query, family="Conidae").candidates} == {
        "Genus0_species0",
        "Genus0_species1",
    }
    with pytest.raises(InvalidQueryError, match="unknown region 'Peru'"):
        identifier.identify(query, region="Peru")
    # each value known, but no species has both
    with pytest.raises(InvalidQueryError, match="no enrolled species matches"):
        identifier.identify(query, region="Japan", genus="genus1")


def test_region_is_voted_by_the_nearest_specimens(world):
    identifier, centres = world
    result = identifier.identify(new_specimens(centres, 0, 1, seed=8))
    assert result.region == "Japan"
    assert result.region_votes["Japan"] == max(result.region_votes.values())


def test_views_of_one_specimen_are_fused():
    vectors, names, groups, centres = clustered(seed=4, species=3)
    # the three species fully centred, as in a bigger collection (fusion is what is checked)
    config = IdentifierConfig(centre_full_species=3)
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, names, groups=groups), config=config)
    a, b, c = centres
    view1 = l2_normalise(0.55 * a + 0.45 * b)
    view2 = l2_normalise(0.55 * a + 0.45 * c)
    fused = identifier.identify(np.stack([view1, view2]))
    singles = [identifier.identify(v[None, :]) for v in (view1, view2)]
    assert fused.candidates[0].species == "Genus0_species0"
    top = {c.species: c.probability for c in fused.candidates}["Genus0_species0"]
    for single in singles:
        assert top > {c.species: c.probability for c in single.candidates}["Genus0_species0"]
    np.testing.assert_allclose(
        fuse_views(np.stack([view1, view2])), l2_normalise(view1 + view2), atol=1e-6
    )


def test_several_prototypes_capture_a_species_with_two_forms():
    rng = np.random.default_rng(1)
    form1, form2, *others = species_centres(rng, 5)
    middle = l2_normalise(form1 + form2)  # a species where one mean of both forms would sit
    vectors, labels, groups = [], [], []
    plan = [("Bimodal_a", [form1, form2]), ("Middle_b", [middle])]
    plan += [(f"Other_{i}", [c]) for i, c in enumerate(others)]
    for name, centres in plan:
        for p in range(8):
            vectors.append(
                centres[p % len(centres)] + 0.15 * rng.normal(size=DIM) / np.sqrt(DIM) * 3
            )
            labels.append(name)
            groups.append(f"{name}-{p}")
    vectors = l2_normalise(np.array(vectors))
    queries = l2_normalise(form2 + 0.15 * rng.normal(size=(30, DIM)) / np.sqrt(DIM) * 3)
    single = VectorIdentifier.fit(
        SpecimenRows(vectors, labels, groups=groups), config=IdentifierConfig(method="prototype")
    )
    multi = VectorIdentifier.fit(
        SpecimenRows(vectors, labels, groups=groups),
        config=IdentifierConfig(method="prototype", prototypes_per_species=2),
    )

    def accuracy(identifier):
        return np.mean([t[0] == "Bimodal_a" for t in identifier.score_batch(queries).top(1)])

    assert accuracy(multi) >= 0.95
    assert accuracy(multi) >= accuracy(single) + 0.1


@pytest.mark.parametrize("method", ["prototype", "knn"])
def test_single_score_methods_identify_too(method, world):
    _, centres = world
    vectors, names, groups, _ = clustered()
    identifier = VectorIdentifier.fit(
        SpecimenRows(vectors, names, groups=groups), config=IdentifierConfig(method=method)
    )
    batch = identifier.score_batch(new_specimens(centres, 3, 10, seed=9))
    assert [t[0] for t in batch.top(1)].count("Genus1_species3") >= 9
    assert identifier.thresholds.source == "calibrated"


def test_one_species_one_image_still_answers_with_fallbacks():
    identifier = VectorIdentifier.fit(SpecimenRows(l2_normalise(np.ones((1, DIM))), ["Conus_solo"]))
    assert identifier.thresholds.source == "fallback"
    assert identifier.thresholds.stats.notes
    same = identifier.identify(l2_normalise(np.ones((1, DIM))))
    assert same.decision == "species" and same.species == "Conus_solo"
    opposite = identifier.identify(-l2_normalise(np.ones((1, DIM))))
    assert opposite.decision == "out_of_domain"


def test_one_image_per_species_gives_no_unknown_decisions():
    rng = np.random.default_rng(2)
    identifier = VectorIdentifier.fit(
        SpecimenRows(l2_normalise(rng.normal(size=(4, DIM))), ["A_a", "B_b", "C_c", "D_d"])
    )
    assert identifier.thresholds.unknown == float("inf")
    assert any("unknown" in note for note in identifier.thresholds.stats.notes)


def test_empty_identifier_refuses_queries():
    with pytest.raises(EmptyCollectionError):
        VectorIdentifier(DIM).identify(np.ones((1, DIM)))


def test_wrong_query_size_is_a_clear_error(world):
    identifier, _ = world
    with pytest.raises(InvalidQueryError, match=f"size {DIM}"):
        identifier.identify(np.ones((1, DIM + 1)))


def test_removal_updates_candidates_and_search():
    vectors, names, groups, centres = clustered(seed=6, species=4)
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, names, groups=groups))
    query = new_specimens(centres, 0, 1, seed=10)
    nearest = identifier.search(query, k=1)[0].specimen_id
    identifier.remove([nearest])
    assert nearest not in {s.specimen_id for s in identifier.search(query, k=50)}
    identifier.remove_species("Genus0_species0")
    assert "Genus0_species0" not in {c.species for c in identifier.identify(query).candidates}
    assert len(identifier.species) == 3


def test_the_hellinger_map_keeps_signs_and_unit_length_and_tames_a_bursty_component():
    raw = np.array([[16.0, -4.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    mapped = power_normalise(raw, 0.5)
    np.testing.assert_allclose(
        mapped[0], np.array([4.0, -2.0, 1.0, 0.0]) / np.sqrt(21.0), rtol=1e-6
    )
    assert np.all(mapped[1] == 0.0)  # a zero vector stays zero
    np.testing.assert_allclose(power_normalise(raw, 1.0), l2_normalise(raw))
    # two photos sharing one dominant component but nothing else: near-identical in raw
    # cosine, told apart once the map evens the components out
    a = np.array([10.0, 1.0, 0.0, 0.0], np.float32)
    b = np.array([10.0, 0.0, 1.0, 0.0], np.float32)
    raw_cos = float(l2_normalise(a) @ l2_normalise(b))
    mapped_cos = float(power_normalise(a, 0.5) @ power_normalise(b, 0.5))
    assert raw_cos > 0.99 and 1.0 - mapped_cos > 5 * (1.0 - raw_cos)


def test_queries_are_compared_in_the_space_the_rows_are_stored_in():
    rng = np.random.default_rng(5)
    vectors = np.abs(rng.normal(size=(12, DIM))).astype(np.float32)  # pooled ReLU-like
    names = [f"Genus_s{i % 4}" for i in range(12)]
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, names), calibrate=False)
    assert identifier.config.feature_power == 0.5  # the default maps
    np.testing.assert_allclose(identifier.vectors, power_normalise(vectors, 0.5), atol=1e-6)
    for row in (0, 7):
        best = identifier.search(vectors[row] * 3.0, k=1)[0]  # scale does not matter
        assert best.specimen_id == str(row) and best.score == pytest.approx(1.0, abs=1e-5)
