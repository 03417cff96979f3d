"""The within-species prior a model carries from its training data (index/whitening.py):
what it does to a 1-shot collection, its arrays, the model file, the store and ``shellid prior``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from api.cli import main
from api.remedies import user_message
from embedder import EmbeddingModel, create_backbone
from index import VectorIdentifier
from index.config import IdentifierConfig, IndexSettings
from index.errors import StoreError
from index.rows import SpecimenRows
from index.store import SpecimenStore
from index.whitening import Whitening, WithinSpeciesPrior
from index.workflows.collection import Collection
from tests.clusters import unit
from tests.conftest import GENERATED_SPECIES, make_collection
from tests.fake_embedder import FakeEmbedder

DIM = 24
#: vectors as given (feature_power 1): the domain below is built in raw cosine.
CONFIG = IdentifierConfig(use_gpu=False, feature_power=1.0)
#: one direction every species varies along (say, lighting): large within-species spread.
NUISANCE = np.eye(DIM)[3]


def domain(species: int, specimens: int, seed: int):
    """Species of one kind of photo: random means, specimens spread far along NUISANCE."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(species, DIM)) * 0.35 + np.eye(DIM)[0] * 3.0
    vectors, labels, groups = [], [], []
    for s in range(species):
        for p in range(specimens):
            vectors.append(means[s] + rng.normal(size=DIM) * 0.1 + NUISANCE * rng.normal() * 1.5)
            labels.append(f"Genus_s{seed}_{s}")
            groups.append(f"p{p}")
    return unit(np.array(vectors)), np.array(labels), np.array(groups)


def training_prior(seed: int = 0) -> WithinSpeciesPrior:
    vectors, labels, groups = domain(30, 6, seed)
    prior = WithinSpeciesPrior.of_collection(
        vectors, labels, np.char.add(labels, groups), config=CONFIG
    )
    assert prior is not None
    return prior


def one_shot_accuracy(prior: WithinSpeciesPrior | None, seed: int) -> float:
    vectors, labels, groups = domain(12, 8, seed)
    first = groups == "p0"  # one photo per species enrolled, the other specimens asked
    identifier = VectorIdentifier.fit(
        SpecimenRows(vectors[first], list(labels[first]), groups=list(groups[first])),
        config=CONFIG,
        prior=prior,
    )
    answers = identifier.score_batch(vectors[~first])
    best = np.asarray(answers.species)[answers.similarities.argmax(axis=1)]
    return float(np.mean(best == labels[~first]))


def test_a_prior_from_other_species_lifts_one_shot_accuracy():
    prior = training_prior()
    without = np.mean([one_shot_accuracy(None, seed) for seed in (1, 2, 3)])
    with_prior = np.mean([one_shot_accuracy(prior, seed) for seed in (1, 2, 3)])
    assert with_prior > without + 0.15, (without, with_prior)


def test_the_prior_finds_the_shared_direction_and_whitens_a_one_specimen_collection():
    prior = training_prior()
    assert abs(float(prior.basis[:, 0] @ NUISANCE)) > 0.9  # the largest variance is NUISANCE
    assert prior.variances[0] > 10 * prior.rest
    vectors, labels, groups = domain(5, 1, seed=4)
    alone = Whitening.fit(vectors, labels, groups)
    whitened = Whitening.fit(vectors, labels, groups, prior=prior)
    assert alone.is_identity and not whitened.is_identity and whitened.dof == 0
    # along NUISANCE the map shrinks most
    assert whitened.scale.min() == pytest.approx(
        whitened.scale[np.argmax(np.abs(NUISANCE @ whitened.basis))]
    )


def test_many_specimens_outweigh_the_prior():
    prior = training_prior()
    vectors, labels, groups = domain(10, 200, seed=5)
    specimens = np.char.add(labels, groups)
    with_prior = Whitening.fit(vectors, labels, specimens, prior=prior)
    alone = Whitening.fit(vectors, labels, specimens)
    assert with_prior.shrinkage == alone.shrinkage < 0.5
    probe = vectors[:50]
    gap_with = np.abs(with_prior.apply(probe) - alone.apply(probe)).max()
    gap_few = np.abs(
        Whitening.fit(vectors[:30], labels[:30], specimens[:30], prior=prior).apply(probe)
        - Whitening.fit(vectors[:30], labels[:30], specimens[:30]).apply(probe)
    ).max()
    assert gap_with < gap_few


def test_prior_arrays_round_trip_and_bad_ones_are_refused():
    prior = training_prior()
    again = WithinSpeciesPrior.from_arrays(prior.to_arrays())
    np.testing.assert_array_equal(again.basis, prior.basis)
    assert (again.rest, again.dof) == (prior.rest, prior.dof)
    broken = prior.to_arrays() | {"variances": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match="not a within-species prior"):
        WithinSpeciesPrior.from_arrays(broken)
    with pytest.raises(ValueError, match="not a within-species prior"):
        WithinSpeciesPrior.from_arrays({"basis": prior.basis})
    with pytest.raises(ValueError, match="24-d"):
        VectorIdentifier(DIM + 1, CONFIG, prior)


def test_no_prior_from_a_collection_without_two_specimens_of_a_species():
    vectors, labels, groups = domain(4, 1, seed=6)
    assert WithinSpeciesPrior.of_collection(vectors, labels, groups) is None


def test_the_model_file_carries_the_prior_and_keeps_its_fingerprint(tmp_path):
    model = EmbeddingModel(create_backbone(weights=None))
    fingerprint = model.fingerprint
    arrays = WithinSpeciesPrior.of_collection(
        *_fake_prior_data(model.dim), components=8
    ).to_arrays()  # type: ignore[union-attr]
    model.within_species_prior = arrays
    model.save(tmp_path / "MODEL.pt")
    loaded = EmbeddingModel.load(tmp_path / "MODEL.pt")
    assert loaded.fingerprint == fingerprint
    assert loaded.within_species_prior is not None
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded.within_species_prior[key], value)


def _fake_prior_data(dim: int):
    rng = np.random.default_rng(0)
    vectors = unit(rng.normal(size=(40, dim)))
    labels = np.repeat([f"G_s{i}" for i in range(10)], 4)
    return vectors, labels, np.arange(40).astype(str)


class PriorEmbedder(FakeEmbedder):
    """The fake embedder with a within-species prior, like a model file made by shellid prior."""

    def __init__(self, prior: WithinSpeciesPrior | None) -> None:
        super().__init__()
        self.within_species_prior = None if prior is None else prior.to_arrays()


def test_the_store_records_the_models_prior_and_reopened_collections_use_it(tmp_path):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=48)
    data = FakeEmbedder()
    prior_vectors, prior_labels = [], []
    for folder in sorted(photos.iterdir()):
        for path in sorted(folder.iterdir()):
            prior_vectors.append(data.embed_images([Image.open(path)])[0])
            prior_labels.append(folder.name)
    labels = np.array(prior_labels)
    prior = WithinSpeciesPrior.of_collection(
        np.array(prior_vectors), labels, np.arange(len(labels)).astype(str)
    )
    store = tmp_path / "store"
    collection = Collection.open(store, model=PriorEmbedder(prior), settings=IndexSettings.load())
    name = next(iter(GENERATED_SPECIES))
    collection.enroll(name, sorted((photos / name).iterdir())[:1])
    assert collection.index.identifier is not None and collection.index.identifier.prior is not None
    reopened = Collection.open(
        store, model=FakeEmbedder(), need_model=False, settings=IndexSettings.load()
    )
    assert reopened.index.identifier is not None and reopened.index.identifier.prior is not None
    np.testing.assert_array_equal(reopened.index.identifier.prior.basis, prior.basis)  # type: ignore[union-attr]
    # a damaged prior is a clear store error, not a traceback from numpy
    SpecimenStore(store).write_prior({"basis": np.ones((3, 2), np.float32)})
    with pytest.raises(StoreError) as caught:
        Collection.open(
            store, model=FakeEmbedder(), need_model=False, settings=IndexSettings.load()
        )
    assert user_message(caught.value).endswith("; run shellid reindex")


def test_shellid_prior_writes_a_model_with_the_prior_of_the_photos(tmp_path, capsys):
    photos = make_collection(
        tmp_path / "tree", species=dict(list(GENERATED_SPECIES.items())[:3]), specimens=3, size=64
    )
    out = tmp_path / "with-prior.pt"
    code = main(["prior", str(photos), "--group-regex", "specimen", "--out", str(out), "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "within-species prior from 18 photos of 3 species (6 degrees of freedom" in stdout
    model = EmbeddingModel.load(out)
    assert model.within_species_prior is not None
    assert WithinSpeciesPrior.from_arrays(model.within_species_prior).dof == 6


def test_shellid_prior_needs_two_specimens_of_some_species(tmp_path, capsys):
    photos = make_collection(
        tmp_path / "tree", species=dict(list(GENERATED_SPECIES.items())[:2]), specimens=1, size=48
    )
    code = main(
        ["prior", str(photos), "--group-regex", "specimen", "--out", str(tmp_path / "m.pt")]
    )
    _, stderr = capsys.readouterr()
    assert code != 0
    assert "no species has photos of two specimens" in stderr
    assert not (tmp_path / "m.pt").exists()


def test_evaluate_scores_a_model_with_the_prior_it_carries(tmp_path, capsys):
    from index.workflows.evaluation import EvaluationConfig, evaluate_collection

    photos = make_collection(tmp_path / "tree", specimens=3, size=64)
    model = tmp_path / "with-prior.pt"
    assert main(["prior", str(photos), "--group-regex", "specimen", "--out", str(model)]) == 0
    capsys.readouterr()
    config = EvaluationConfig(
        group_pattern="specimen", shots=(1,), episodes=5, allway_repeats=2, bootstrap_resamples=20
    )
    result = evaluate_collection(
        photos, model, config, cache_dir=tmp_path / "cache", progress=False
    )
    methods = result.figures["methods"]
    assert "degrees of freedom" in methods["model"]["prior"]
    assert "prior" not in methods["frozen"]  # the frozen backbone has none
