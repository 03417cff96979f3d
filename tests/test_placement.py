"""Placement of photos in the tree (index.placement): the genus (else family) a photo's species
most likely belongs to, enrolled or not, with a probability calibrated by holding each enrolled
species out; generated collections with a known tree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.wording import words_for
from index import VectorIdentifier
from index.calibration import expected_calibration_error
from index.placement import fit_placement, precision_threshold
from index.results import Identification, Placement
from index.rows import SpecimenRows
from tests.clusters import specimens_around, unit

DIM = 64
GENERA, PER_GENUS = 6, 4


def tree(seed: int = 0, species_spread: float = 1.0, per_species: int = 6):
    """A two-level tree: genera around random centres, species around their genus, specimens
    around their species. Returns (vectors, species labels, groups, taxonomy)."""
    rng = np.random.default_rng(seed)
    genus_centres = unit(rng.normal(size=(GENERA, DIM)))
    centres, names, taxonomy = [], [], {}
    for g in range(GENERA):
        for s in range(PER_GENUS):
            centres.append(genus_centres[g] + species_spread * unit(rng.normal(size=DIM)))
            name = f"Genus{g}_species{s}"
            names.append(name)
            taxonomy[name] = {"genus": f"Genus{g}", "family": f"Family{g // 2}"}
    vectors, labels, groups = specimens_around(
        unit(np.array(centres)),
        [per_species] * len(names),
        rng,
        specimen_noise=0.25 / np.sqrt(DIM) * 4,
        view_noise=0.02,
        label=lambda s: names[s],
    )
    return unit(vectors), labels, groups, taxonomy


def family_of(genus: str) -> str:
    return f"Family{int(genus[5:]) // 2}"


def held_out_split(labels, unseen):
    keep = np.array([label not in unseen for label in labels])
    return keep


@pytest.fixture(scope="module")
def unseen_setting():
    """An identifier without one species of every genus, and those species' photos."""
    vectors, labels, groups, taxonomy = tree()
    unseen = {f"Genus{g}_species0" for g in range(GENERA)}
    keep = held_out_split(labels, unseen)
    identifier = VectorIdentifier.fit(
        SpecimenRows(
            vectors[keep],
            [x for x, k in zip(labels, keep, strict=True) if k],
            taxonomy={s: t for s, t in taxonomy.items() if s not in unseen},
            groups=[x for x, k in zip(groups, keep, strict=True) if k],
        )
    )
    truth = [taxonomy[x]["genus"] for x, k in zip(labels, keep, strict=True) if not k]
    return identifier, vectors[~keep], truth


def test_photos_of_unseen_species_are_placed_in_their_own_genus(unseen_setting):
    identifier, queries, truth = unseen_setting
    batch = identifier.score_batch(queries)
    shown = [
        (p, t)
        for p, t, d in zip(batch.placements, truth, batch.decisions, strict=True)
        if d not in ("species", "out_of_domain")
    ]
    placed = [(p, t) for p, t in shown if p is not None]
    assert len(shown) >= 0.5 * len(truth)
    assert len(placed) >= 0.7 * len(shown)
    right = np.mean([p.name == (t if p.rank == "genus" else family_of(t)) for p, t in placed])
    assert right >= 0.8
    assert sum(p.rank == "genus" for p, _ in placed) >= 0.8 * len(placed)


def test_placement_probability_is_calibrated_on_unseen_species(unseen_setting):
    """The shown probability tracks how often the named genus is right (fitted on other
    species than these)."""
    identifier, queries, truth = unseen_setting
    batch = identifier.score_batch(queries)
    placed = [(p, t) for p, t in zip(batch.placements, truth, strict=True) if p is not None]
    probability = np.array([p.probability for p, _ in placed])
    right = np.array(
        [p.name == (t if p.rank == "genus" else family_of(t)) for p, t in placed], float
    )
    assert ((probability > 0) & (probability < 1)).all()
    assert expected_calibration_error(probability, right) < 0.2
    fitted = identifier.thresholds.placement
    assert fitted is not None and fitted.target_precision == 0.8
    genus = fitted.ranks[0]
    assert genus.rank == "genus" and genus.samples > 50 and genus.species >= 10
    assert genus.precision is not None and genus.precision >= 0.8


def test_identify_places_only_answers_that_name_no_species(unseen_setting):
    identifier, queries, _ = unseen_setting
    answers = [identifier.identify(q[None, :]) for q in queries[:40]]
    for answer in answers:
        if answer.decision in ("species", "out_of_domain"):
            assert answer.placement is None
    placed = [a for a in answers if a.placement is not None]
    assert placed, "some unseen photo is placed"
    assert {a.decision for a in placed} <= {"genus", "family", "uncertain", "unknown_species"}


def test_known_species_answers_carry_no_placement(unseen_setting):
    identifier, _, _ = unseen_setting
    enrolled = identifier.vectors[:10]
    for vector in enrolled:
        answer = identifier.identify(vector[None, :])
        assert answer.decision == "species" and answer.placement is None


def test_no_taxonomy_means_no_placement():
    """Names without a genus part and no taxonomy.csv: nothing to place in."""
    vectors, labels, groups, _ = tree(seed=1)
    plain = [label.replace("Genus", "g").lower() for label in labels]
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, plain, groups=groups))
    assert identifier.thresholds.placement is None
    assert all(p is None for p in identifier.score_batch(vectors[:20]).placements)


def test_too_few_species_sharing_a_genus_means_no_placement_at_that_rank():
    vectors, labels, groups, taxonomy = tree(seed=2)
    lonely = {s: {"genus": f"Lone{i}"} for i, s in enumerate(sorted(taxonomy))}
    identifier = VectorIdentifier.fit(SpecimenRows(vectors, labels, taxonomy=lonely, groups=groups))
    fitted = identifier.thresholds.placement
    assert fitted is not None and fitted.ranks == []
    assert any("genus: no placement" in note for note in fitted.notes)


def test_family_placement_when_no_genus_is_likely_enough():
    """Genera that look alike but families that do not: family placements, right."""
    rng = np.random.default_rng(5)
    family_centres = unit(rng.normal(size=(4, DIM)))
    vectors, labels, groups, taxonomy = [], [], [], {}
    centres, names = [], []
    for f in range(4):
        for g in range(3):
            for s in range(2):
                name = f"G{f}x{g}_s{s}"
                centres.append(family_centres[f] + 0.5 * unit(rng.normal(size=DIM)))
                names.append(name)
                taxonomy[name] = {"genus": f"G{f}x{g}", "family": f"F{f}"}
    vectors, labels, groups = specimens_around(
        unit(np.array(centres)), [5] * len(names), rng, 0.12, 0.02, lambda s: names[s]
    )
    identifier = VectorIdentifier.fit(
        SpecimenRows(unit(vectors), labels, taxonomy=taxonomy, groups=groups)
    )
    fitted = identifier.thresholds.placement
    assert fitted is not None
    family = next(r for r in fitted.ranks if r.rank == "family")
    assert family.precision is not None and family.precision >= 0.8
    assert family.coverage is not None and family.coverage > 0.5


def test_precision_threshold_keeps_the_stated_precision():
    probability = np.array([0.95, 0.9, 0.85, 0.8, 0.6, 0.5, 0.4, 0.3])
    right = np.array([1, 1, 1, 1, 0, 1, 0, 0], float)
    threshold = precision_threshold(probability, right, 0.7)
    placed = probability >= threshold
    assert ((right[placed].sum() + 1) / (placed.sum() + 2)) >= 0.7
    assert threshold == 0.5  # the most placed at that precision
    assert precision_threshold(probability, np.zeros(8), 0.8) == float("inf")


def test_few_separable_samples_keep_a_bounded_map():
    """Ten held-out photos all placed right: the prior keeps the map finite (an unpenalised
    fit would drive every probability to 1) and below certainty."""
    rng = np.random.default_rng(3)
    sims = rng.normal(0.3, 0.02, size=(10, 4))
    y = np.repeat([0, 2], 5)
    sims[np.arange(10), y] = -np.inf
    sims[:5, 1] += 0.2  # species 0's photos closest to species 1 (genus A), right
    sims[5:, 3] += 0.2  # species 2's photos closest to species 3 (genus B), right
    fitted = fit_placement(sims, y, {"genus": ["A", "A", "B", "B"]}, 0.05, 0.8)
    assert fitted is not None
    rank = fitted.ranks[0]
    assert rank.samples == 10 and rank.species == 2 and rank.precision == 1.0
    assert max(abs(w) for w in rank.weights) < 5


def test_placement_survives_export_and_restore(unseen_setting):
    identifier, queries, _ = unseen_setting
    arrays, meta = identifier.export_state()
    meta = json.loads(json.dumps(meta))
    restored = VectorIdentifier.from_state(arrays, meta, identifier.config, identifier.prior)
    assert restored.thresholds.placement == identifier.thresholds.placement
    assert restored.score_batch(queries).placements == identifier.score_batch(queries).placements


def test_the_answer_says_where_it_is_placed_in_words():
    answer = Identification(
        decision="unknown_species",
        candidates=[],
        placement=Placement(rank="genus", name="Conus", probability=0.8),
    )
    words = words_for(answer)
    assert words.summary == "Not a species in this collection — probably a new Conus (genus, 80 %)"
    uncertain = answer.model_copy(update={"decision": "uncertain"})
    assert words_for(uncertain).summary == (
        "Uncertain — several species are possible; probably a Conus (genus, 80 %)"
    )
    genus = answer.model_copy(update={"decision": "genus", "genus": "Conus", "confidence": 0.7})
    assert words_for(genus).summary == "Probably genus Conus — species uncertain"
    family = answer.model_copy(
        update={
            "decision": "unknown_species",
            "placement": Placement(rank="family", name="Conidae", probability=0.9),
        }
    )
    assert words_for(family).summary.endswith("probably a new Conidae (family, 90 %)")


def test_an_unrelated_species_leaves_other_answers_and_similarities_alone():
    """Two enrolled species, then one photo of a far-away third (the centring fades in, so it
    is not switched on by the third species): the other answers keep their decisions and the
    exported similarity of every candidate is unchanged (it depends on no other species)."""
    rng = np.random.default_rng(11)
    centres = unit(rng.normal(size=(3, DIM)))
    vectors, labels, groups = specimens_around(
        centres[:2], [8, 8], rng, 0.35 / np.sqrt(DIM) * 4, 0.02, lambda s: f"Genus{s}_sp"
    )
    vectors = unit(vectors)
    queries = unit(centres[:2].repeat(20, axis=0) + 0.3 * rng.normal(size=(40, DIM)))
    before = VectorIdentifier.fit(SpecimenRows(vectors, labels, groups=groups))
    far = unit(centres[2] + 0.05 * rng.normal(size=DIM))[None, :]
    after = VectorIdentifier.fit(
        SpecimenRows(np.vstack([vectors, far]), [*labels, "Other_sp"], groups=[*groups, "far"])
    )
    changed = 0
    for q in queries:
        a, b = before.identify(q[None, :]), after.identify(q[None, :])
        changed += (a.decision, a.species) != (b.decision, b.species)
        similarity = {c.species: c.similarity for c in a.candidates}
        for c in b.candidates:
            if c.species in similarity:
                assert c.similarity == similarity[c.species]
    assert changed <= 1, f"{changed} of {len(queries)} answers changed"
