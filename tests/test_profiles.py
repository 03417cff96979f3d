"""Model profiles (``embedder.profiles``): frozen recipes over the packaged backbones that load
offline by name, run as one ONNX graph agreeing with PyTorch, carry their own fingerprint (so
a store built with one model refuses another, in one line naming ``shellid reindex``), and
survive a ``MODEL.pt`` round trip; old model files and names still open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from api.remedies import user_message
from embedder import (
    BACKBONES,
    BackboneError,
    Embedder,
    EmbeddingModel,
    ModelFileError,
    default_model,
    load_model,
)
from embedder.profiles import PROFILES, Profile, create_profile
from embedder.settings import BACKBONE_NAMES, DEFAULT_BACKBONE, MODEL_NAMES, PROFILE_NAMES
from index import ModelMismatchError
from index.config import IndexSettings
from index.workflows.collection import Collection
from tests.conftest import GENERATED_SPECIES, draw_specimen, make_collection

MIN_COSINE = 0.9999
LITE0, LITE1 = "tf_efficientnet_lite0", "tf_efficientnet_lite1"
#: Recipes beyond the shipped profiles, each exercising one part of the graph.
RECIPES = {
    "gem+stages+flip": Profile("test-recipe", (LITE0,), pooling="gem", stages=(5, 6), flip=True),
    "two sizes": Profile("test-pair", (LITE0, LITE1)),
}


def photos(count: int) -> list[Image.Image]:
    kinds = list(GENERATED_SPECIES.values())
    return [draw_specimen(*kinds[i % len(kinds)], seed=i, size=110 + 9 * i) for i in range(count)]


def frozen(profile: Profile | str) -> EmbeddingModel:
    return EmbeddingModel(create_profile(profile)).eval()


def test_profile_names_are_listed_without_torch_and_differ_from_backbones():
    assert tuple(PROFILES) == PROFILE_NAMES
    assert not set(PROFILE_NAMES) & set(BACKBONE_NAMES)
    assert MODEL_NAMES == BACKBONE_NAMES + PROFILE_NAMES
    for profile in PROFILES.values():
        assert profile.description and set(profile.members) <= set(BACKBONES)


def test_a_profile_takes_only_packaged_backbones_and_known_pooling():
    with pytest.raises(BackboneError, match="packaged backbones"):
        Profile("bad", ("resnet50",))
    with pytest.raises(BackboneError, match="pooling"):
        Profile("bad", (LITE0,), pooling="max")
    with pytest.raises(BackboneError, match="unknown profile"):
        create_profile("no-such-profile")


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_each_profile_loads_offline_by_name(name):
    model = load_model(name, device="cpu")
    profile = PROFILES[name]
    assert model.backbone.name == name and model.name == f"{name}/frozen"
    assert model.backbone.weights_source == "offline:profile"
    assert model.preprocess == profile.preprocess
    assert model.dim == model.backbone.num_features >= 1280 * len(profile.members)


@pytest.mark.parametrize("recipe", [*PROFILE_NAMES, *RECIPES])
def test_onnx_export_of_a_profile_agrees_with_pytorch(recipe, tmp_path):
    model = frozen(RECIPES.get(recipe, recipe))
    images = photos(4)
    torch_vectors = Embedder(model, runtime="torch").embed_images(images)
    onnx = Embedder(model, runtime="onnx", cache_dir=tmp_path)
    onnx_vectors = onnx.embed_images(images)
    assert onnx.runtime == "onnx"
    assert onnx_vectors.shape == (4, model.dim)
    assert np.allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    assert float((torch_vectors * onnx_vectors).sum(axis=1).min()) >= MIN_COSINE


def test_flip_recipe_gives_a_photo_and_its_mirror_image_the_same_vector():
    flipped = frozen(Profile("test-flip", (LITE0,), flip=True))
    plain = default_model()
    images = photos(3)
    mirrors = [ImageOps.mirror(image) for image in images]
    for model, invariant in ((flipped, True), (plain, False)):
        embedder = Embedder(model, runtime="torch")
        cosine = (embedder.embed_images(images) * embedder.embed_images(mirrors)).sum(axis=1)
        assert bool(cosine.min() >= MIN_COSINE) is invariant


def test_ensemble_similarity_is_the_mean_of_its_members_similarities():
    pair = frozen(Profile("test-pair-same-size", (LITE0, "efficientnet_lite0")))
    members = [default_model(LITE0), default_model("efficientnet_lite0")]
    images = photos(2)
    joint = Embedder(pair, runtime="torch").embed_images(images)
    # both members take 224 px photos; the legacy member's own mean/std differ, so give it
    # the profile's input (the profile normalises once, for every member)
    members[1].backbone.preprocess = pair.preprocess
    singles = [Embedder(m, runtime="torch").embed_images(images) for m in members]
    expected = np.mean([float(v[0] @ v[1]) for v in singles])
    assert float(joint[0] @ joint[1]) == pytest.approx(expected, abs=1e-5)


def test_every_model_name_and_recipe_has_its_own_fingerprint():
    prints = {default_model().fingerprint, default_model(LITE1).fingerprint}
    prints |= {frozen(name).fingerprint for name in PROFILE_NAMES}
    prints |= {frozen(recipe).fingerprint for recipe in RECIPES.values()}
    prints.add(frozen(Profile("test-recipe", (LITE0,), pooling="avg")).fingerprint)
    assert len(prints) == 3 + len(PROFILE_NAMES) + len(RECIPES)


def test_a_profile_model_file_round_trips(tmp_path):
    model = frozen(RECIPES["gem+stages+flip"])
    path = model.save(tmp_path / "MODEL.pt")
    loaded = EmbeddingModel.load(path)
    assert loaded.fingerprint == model.fingerprint and loaded.dim == model.dim
    images = photos(2)
    before = Embedder(model, runtime="torch").embed_images(images)
    after = Embedder(loaded, runtime="torch").embed_images(images)
    assert np.allclose(before, after, atol=1e-6)


def test_default_model_files_made_before_profiles_still_open(tmp_path):
    old = default_model()
    path = old.save(tmp_path / "MODEL.pt")
    assert load_model(path, device="cpu").fingerprint == old.fingerprint
    assert load_model(None, device="cpu").fingerprint == old.fingerprint


def test_an_unknown_model_name_lists_backbones_and_profiles():
    with pytest.raises(ModelFileError) as caught:
        load_model("lite9-ensemble", device="cpu")
    message = str(caught.value)
    assert "\n" not in message and all(name in message for name in MODEL_NAMES)


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory) -> dict[str, list[Path]]:
    species = dict(list(GENERATED_SPECIES.items())[:2])
    root = make_collection(tmp_path_factory.mktemp("profiles"), species, specimens=2, views=1)
    return {name: sorted((root / name).glob("*")) for name in species}


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_a_store_built_with_the_default_refuses_a_profile_until_reindexed(
    name, few_photos, tmp_path
):
    store = tmp_path / "store"
    collection = Collection.open(store, settings=IndexSettings.load())
    for species, files in few_photos.items():
        collection.enroll(species, files)
    query = [Image.open(next(iter(few_photos.values()))[0])]
    with pytest.raises(ModelMismatchError) as caught:
        Collection.open(store, model=name, settings=IndexSettings.load()).identify(
            query
        )  # the model is checked as it loads
    message = user_message(caught.value)
    assert "\n" not in message and "shellid reindex --model NEW" in message
    assert collection.reindex(name, progress=False) == 4
    reopened = Collection.open(store, model=name, settings=IndexSettings.load())
    assert reopened.identify(query).candidates[0].species in few_photos
    assert reopened.fingerprint == frozen(name).fingerprint
    default = Collection.open(store, settings=IndexSettings.load())  # no --model: the store's
    assert default.model_path == name and default.identify(query).candidates
    with pytest.raises(ModelMismatchError):  # and now the default is the other model
        Collection.open(store, model=DEFAULT_BACKBONE, settings=IndexSettings.load()).identify(
            query
        )


def test_the_command_line_takes_profile_names_and_lists_them_for_a_bad_one(tmp_path):
    from api.commands._collection import check_model_option

    for name in PROFILE_NAMES:
        check_model_option(name)  # no error: a known name, not a file
    with pytest.raises(FileNotFoundError) as caught:
        check_model_option(str(tmp_path / "lite9-ensemble"))
    assert all(name in str(caught.value) for name in MODEL_NAMES)
