"""Contrastive training on cached features: feature cache, stage split, training loop,
MODEL.pt round trip and the ``shellid train`` command (generated images, small inputs)."""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from api.cli import main
from embedder import (
    Embedder,
    EmbeddingModel,
    create_backbone,
    eval_transform,
    load_image,
    scan_collection,
    stages,
)
from embedder.backbones import BackboneError
from embedder.episodes import prototype_top1
from embedder.feature_cache import FeatureCache
from embedder.model import create_head
from embedder.training import (
    TrainingConfig,
    TrainingError,
    embed_cached,
    split_validation_classes,
    train_embedder,
)
from embedder.transforms import PreprocessConfig
from embedder.validation import split_validation_photos
from tests.conftest import make_collection

SMALL = 64  # input size for tests: 12x fewer operations than 224


def small_backbone(weights: str | None = None):
    """Lite0 at 64 px input (random weights unless asked): fast, same architecture."""
    backbone = create_backbone(weights=weights)
    backbone.preprocess = PreprocessConfig(**{**backbone.preprocess.to_dict(), "input_size": SMALL})
    return backbone


@pytest.fixture
def records(generated_collection):
    return scan_collection(generated_collection, group_pattern="specimen")


def quick_config(**overrides) -> TrainingConfig:
    settings = dict(
        epochs=4, views=1, batch_size=12, m_per_class=4, lr=1e-3, val_episodes=40, patience=10
    )
    settings.update(overrides)
    return TrainingConfig(**settings)


# ---------------------------------------------------------------------- stage split and cache
def test_trunk_then_tail_equals_the_whole_backbone():
    backbone = create_backbone(weights=None).eval()
    images = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        whole = backbone(images)
        for unfreeze in (0, 1, 3):
            split = stages.tail(backbone, unfreeze)(stages.trunk(backbone, unfreeze)(images))
            torch.testing.assert_close(split, whole)
        carried = stages.bridge(backbone, 3, 1)(stages.trunk(backbone, 3)(images))
        torch.testing.assert_close(carried, stages.trunk(backbone, 1)(images))


def test_unfreeze_beyond_the_block_stages_is_a_clear_error():
    backbone = create_backbone(weights=None)
    with pytest.raises(BackboneError, match="has 7 block stages"):
        stages.check_unfreeze(backbone, 8)


def test_cached_clean_view_matches_the_direct_forward(records, tmp_path):
    backbone = small_backbone().eval()
    paths = [r.path for r in records[:4]]
    cached = FeatureCache(tmp_path, backbone, 1).get(paths, (0,), progress=False)
    assert cached.features.dtype == np.float16 and cached.features.shape[:2] == (4, 1)
    transform = eval_transform(backbone.preprocess)
    images = torch.stack([transform(load_image(p)) for p in paths])
    with torch.no_grad():
        direct = backbone(images).numpy()
        via_cache = stages.tail(backbone, 1)(
            torch.from_numpy(cached.features[:, 0].astype(np.float32))
        )
    np.testing.assert_allclose(via_cache.numpy(), direct, atol=2e-2, rtol=2e-2)


def test_cache_is_reused_and_carried_forward_from_an_earlier_split(records, tmp_path, monkeypatch):
    backbone = small_backbone().eval()
    paths = [r.path for r in records[:3]]
    deep = FeatureCache(tmp_path, backbone, 2).get(paths, (0, 1), progress=False)
    direct_u1 = FeatureCache(tmp_path / "other", backbone, 1).get(paths, (0, 1), progress=False)

    def no_decoding(*args, **kwargs):
        raise AssertionError("photos were decoded again")

    monkeypatch.setattr(FeatureCache, "_compute", no_decoding)
    again = FeatureCache(tmp_path, backbone, 2).get(paths, (0, 1), progress=False)
    np.testing.assert_array_equal(again.features, deep.features)
    carried = FeatureCache(tmp_path, backbone, 1).get(paths, (0, 1), progress=False)
    np.testing.assert_allclose(
        carried.features.astype(np.float32), direct_u1.features.astype(np.float32), atol=2e-2
    )


def test_augmented_views_are_reproducible_and_differ_from_the_clean_view(records, tmp_path):
    backbone = small_backbone().eval()
    paths = [records[0].path]
    first = FeatureCache(tmp_path / "a", backbone, 0).get(paths, (0, 1, 2), progress=False).features
    second = (
        FeatureCache(tmp_path / "b", backbone, 0).get(paths, (0, 1, 2), progress=False).features
    )
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0, 0], first[0, 1])
    assert not np.allclose(first[0, 1], first[0, 2])


def test_cache_reports_unreadable_images_and_keeps_the_rest(records, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = [records[0].path, broken, tmp_path / "missing.png"]
    result = FeatureCache(tmp_path / "cache", small_backbone(), 1).get(paths, (0,), progress=False)
    assert result.paths == [records[0].path]
    assert set(result.errors) == {str(broken), str(tmp_path / "missing.png")}


# ---------------------------------------------------------------------- configuration
def test_validation_split_holds_out_whole_classes(records):
    train, val = split_validation_classes(records, 0.4, seed=0)
    assert len({r.species for r in val}) == 2 and len({r.species for r in train}) == 3
    assert not {r.species for r in train} & {r.species for r in val}
    assert len(train) + len(val) == len(records)


def test_validation_split_refuses_too_few_classes(records):
    three = [r for r in records if r.species in {"Conus_alpha", "Conus_beta", "Cypraea_gamma"}]
    with pytest.raises(TrainingError, match="too few"):
        split_validation_classes(three, 0.3, seed=0)


def test_photo_validation_holds_out_whole_specimens_of_every_species(records):
    train, val = split_validation_photos(records, 0.25, seed=0)
    assert len(train) + len(val) == len(records)
    species = {r.species for r in records}
    # 4 specimens each: one specimen (both its views) of every species is held out
    assert {r.species for r in val} == species and len(val) == 2 * len(species)
    assert {r.species for r in train} == species
    assert not {r.group for r in train} & {r.group for r in val}
    # seeded and independent of the records' order; another seed holds out other specimens
    assert split_validation_photos(records[::-1], 0.25, seed=0)[1] == val[::-1]
    assert {r.group for r in split_validation_photos(records, 0.25, seed=1)[1]} != {
        r.group for r in val
    }
    # a specimen enrolled later leaves the held-out ones held out (unless it ranks first)
    extra = [
        type(r)(r.path.with_name("new.png"), r.species, f"{r.species}/{r.species}_9")
        for r in records
        if r.group.endswith("_1")
    ]
    again = split_validation_photos([*records, *extra], 0.25, seed=0)[1]
    assert len({r.group for r in val} - {r.group for r in again}) <= 1


def test_photo_validation_trains_on_species_with_too_few_specimens_whole(records):
    two_specimens = [r for r in records if r.group.split("_")[-1] in ("1", "2")]
    assert len({r.group for r in two_specimens}) == 2 * len({r.species for r in records})
    train, val = split_validation_photos(two_specimens, 0.5, seed=0)
    assert val == [] and train == two_specimens
    assert split_validation_photos(records, 0.0, seed=0) == (list(records), [])


def test_seen_species_top1_is_the_share_of_queries_nearest_their_own_prototype():
    support = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1]], np.float32)
    labels = ["a", "a", "b", "b"]
    query = np.array([[1, 0.05, 0], [0.05, 1, 0], [0.2, 0.1, 0]], np.float32)
    assert prototype_top1(support, labels, query, ["a", "b", "b"]) == pytest.approx(2 / 3)
    assert math.isnan(prototype_top1(support, labels, query[:0], []))
    with pytest.raises(ValueError, match="without support"):
        prototype_top1(support, labels, query[:1], ["c"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss": "hinge"}, "unknown loss"),
        ({"head": "transformer"}, "unknown head"),
        ({"epochs": 0}, "epochs"),
        ({"m_per_class": 1}, "m_per_class"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"batch_size": 4}, "batch_size must hold at least two classes"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(overrides, message):
    with pytest.raises(ValidationError, match=message):
        TrainingConfig(**overrides)


def test_cli_defaults_are_the_training_config_and_the_names_the_registry():
    from api.commands import train_cmd
    from embedder.backbones import BACKBONES
    from embedder.settings import BACKBONE_NAMES

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    parsed = parser.parse_args(["DATA", "--out", "M.pt"])
    defaults = TrainingConfig()
    for name in ("backbone", "epochs", "views", "unfreeze", "loss", "head", "lr", "seed"):
        assert getattr(parsed, name) == getattr(defaults, name), name
    assert tuple(BACKBONES) == BACKBONE_NAMES  # the registry and the torch-free list agree


# ---------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_writes_a_loadable_model(records, tmp_path):
    train, val = split_validation_classes(records, 0.4, seed=0)
    out = tmp_path / "models" / "MODEL.pt"
    config = quick_config(unfreeze=0, head="linear", embedding_dim=32, epochs=6, patience=6)
    result = train_embedder(
        train,
        val,
        config,
        out=out,
        cache_dir=tmp_path / "cache",
        backbone=small_backbone(),
        progress=False,
        log=lambda _: None,
    )
    losses = [h.loss for h in result.history[1:]]
    assert math.isnan(result.history[0].loss) and len(losses) == 6
    assert losses[-1] < losses[0]
    assert out.is_file() and result.files["log"].is_file() and result.files["curves"].is_file()
    with result.files["log"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == list(range(7))

    loaded = EmbeddingModel.load(out)
    assert loaded.fingerprint == result.model.fingerprint
    assert loaded.dim == 32 and loaded.classes == sorted({r.species for r in train})
    assert loaded.training_config["head"] == "linear"
    assert loaded.metrics["best_epoch"] == result.best_epoch
    paths = [r.path for r in val]
    before = Embedder(result.model).embed_paths(paths, progress=False).embeddings
    after = Embedder(loaded).embed_paths(paths, progress=False).embeddings
    np.testing.assert_allclose(after, before, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)


def test_unfreeze_trains_the_last_stage_and_leaves_the_trunk_alone(records, tmp_path):
    train, _ = split_validation_classes(records, 0.4, seed=0)
    backbone = small_backbone()
    trunk_before = {k: v.clone() for k, v in stages.trunk(backbone, 1).state_dict().items()}
    tail_before = {k: v.clone() for k, v in stages.tail(backbone, 1).state_dict().items()}
    config = quick_config(
        unfreeze=1, head="residual", val_fraction=0.0, epochs=2, tail_lr_scale=1.0
    )
    result = train_embedder(
        train,
        [],
        config,
        out=tmp_path / "MODEL.pt",
        cache_dir=tmp_path / "cache",
        backbone=backbone,
        progress=False,
        log=lambda _: None,
    )
    assert result.best_epoch == 2  # without validation the last epoch is kept
    model = result.model
    for key, value in stages.trunk(model.backbone, 1).state_dict().items():
        torch.testing.assert_close(value, trunk_before[key])
    changed = [
        key
        for key, value in stages.tail(model.backbone, 1).state_dict().items()
        if value.dtype.is_floating_point and not torch.equal(value, tail_before[key])
    ]
    assert any(key.startswith("0.") for key in changed), "the last block stage was not trained"
    loaded = EmbeddingModel.load(tmp_path / "MODEL.pt")
    paths = [r.path for r in records[:4]]
    np.testing.assert_allclose(
        Embedder(loaded).embed_paths(paths, progress=False).embeddings,
        Embedder(model).embed_paths(paths, progress=False).embeddings,
        atol=1e-5,
    )


def test_best_epoch_weights_are_kept(records, tmp_path):
    train, val = split_validation_classes(records, 0.4, seed=0)
    result = train_embedder(
        train,
        val,
        quick_config(unfreeze=0, head="residual", epochs=3),
        cache_dir=tmp_path,
        backbone=small_backbone("offline"),
        progress=False,
        log=lambda _: None,
    )
    best = max(result.history, key=lambda h: h.val_1shot)
    assert result.history[result.best_epoch].val_1shot == best.val_1shot
    assert result.metrics["val_1shot"] == pytest.approx(best.val_1shot)


def test_photo_validation_selects_the_epoch_by_seen_species_top1(records, tmp_path):
    train, val = split_validation_photos(records, 0.25, seed=0)
    config = quick_config(unfreeze=0, head="residual", epochs=3, validation="photos")
    lines: list[str] = []
    epochs: list[int] = []
    result = train_embedder(
        train,
        val,
        config,
        cache_dir=tmp_path,
        backbone=small_backbone("offline"),
        progress=False,
        log=lines.append,
        on_epoch=lambda epoch, total: epochs.append(epoch),
    )
    metrics = result.metrics
    assert metrics["validation"] == "photos" and metrics["val_images"] == len(val)
    assert metrics["val_1shot"] is None and metrics["val_n_way"] == 0
    top1 = [h.val_top1 for h in result.history]
    assert all(0.0 <= t <= 1.0 for t in top1) and epochs == [0, 1, 2, 3]
    assert metrics["val_top1_before"] == top1[0]
    assert metrics["val_top1"] == top1[result.best_epoch] == max(top1)
    assert "val top-1" in lines[0] and "1-shot" not in lines[0]
    # the figure is the saved model's: its embeddings of the photos give the same top-1
    vectors, kept, _ = embed_cached(
        result.model, [r.path for r in train + val], 0, cache_dir=tmp_path, progress=False
    )
    assert kept == [r.path for r in train + val]
    n = len(train)
    again = prototype_top1(
        vectors[:n], [r.species for r in train], vectors[n:], [r.species for r in val]
    )
    assert again == pytest.approx(metrics["val_top1"])


@pytest.mark.parametrize(
    ("pick_val", "message"),
    [
        (lambda train, other: other, "must be of trained classes"),
        (lambda train, other: train[:2], "must not be training photos"),
    ],
)
def test_photo_validation_refuses_photos_it_cannot_score(records, tmp_path, pick_val, message):
    other = [r for r in records if r.species == "Conus_alpha"]
    train = [r for r in records if r.species != "Conus_alpha"]
    with pytest.raises(TrainingError, match=message):
        train_embedder(
            train,
            pick_val(train, other),
            quick_config(validation="photos"),
            cache_dir=tmp_path,
            backbone=small_backbone(),
            progress=False,
            log=lambda _: None,
        )


def test_cached_embeddings_equal_the_embedder_output(records, tmp_path):
    backbone = small_backbone()
    head = create_head("residual", backbone.num_features, backbone.num_features)
    torch.nn.init.normal_(head.proj.weight, std=0.01)
    model = EmbeddingModel(backbone, head, {"kind": "residual", "in_dim": 1280, "out_dim": 1280})
    paths = [r.path for r in records[:5]]
    cached, kept, errors = embed_cached(model, paths, 2, cache_dir=tmp_path, progress=False)
    assert kept == paths and not errors
    direct = Embedder(model).embed_paths(paths, progress=False).embeddings
    np.testing.assert_allclose(cached, direct, atol=5e-3)


def test_training_needs_two_classes(records, tmp_path):
    one_class = [r for r in records if r.species == "Conus_alpha"]
    with pytest.raises(TrainingError, match="at least 2 classes"):
        train_embedder(
            one_class,
            [],
            quick_config(),
            cache_dir=tmp_path,
            backbone=small_backbone(),
            progress=False,
            log=lambda _: None,
        )


# ---------------------------------------------------------------------- shellid train
def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_shellid_train_writes_model_log_and_curves(tmp_path, capsys):
    data = make_collection(tmp_path / "data", specimens=3, views=2, size=64)
    out = tmp_path / "out" / "MODEL.pt"
    code, stdout, stderr = run_cli(
        [
            "train",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--views",
            "1",
            "--batch-size",
            "8",
            "--val-fraction",
            "0.4",
            "--group-regex",
            "specimen",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, stderr
    assert "saved" in stdout and "validation on 2 held-out species" in stdout
    assert out.is_file()
    assert (tmp_path / "out" / "MODEL.training.csv").is_file()
    assert (tmp_path / "out" / "MODEL.training.png").is_file()
    model = EmbeddingModel.load(out)
    assert (
        model.training_config["group_pattern"] == "specimen"
        and model.training_config["unfreeze"] == TrainingConfig().unfreeze
    )
    # the training data's within-species prior travels with the model (5 species x 3 specimens)
    assert "carries a within-species prior from 30 photos of 5 species (10 degrees" in stdout
    assert model.within_species_prior is not None


def test_shellid_train_with_photo_validation_reports_seen_species_top1(tmp_path, capsys):
    data = make_collection(tmp_path / "data", specimens=3, views=2, size=64)
    out = tmp_path / "MODEL.pt"
    argv = ["train", str(data), "--out", str(out), "--epochs", "1", "--views", "0"]
    argv += ["--batch-size", "8", "--validation", "photos", "--group-regex", "specimen"]
    code, stdout, stderr = run_cli(
        [*argv, "--cache-dir", str(tmp_path / "cache"), "--quiet"], capsys
    )
    assert code == 0, stderr
    # 5 species x 3 specimens: one specimen (2 views) of each is held out
    assert "30 images of 5 classes: 5 to train on, 10 photos of 5 of them held out" in stdout
    assert "validation on 10 held-out photos of the trained species: top-1" in stdout
    assert "(before training" in stdout
    assert EmbeddingModel.load(out).metrics["validation"] == "photos"


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda root: [str(root / "missing"), "--out", str(root / "m.pt")], "is not a folder"),
        (lambda root: [str(root / "empty"), "--out", str(root / "m.pt")], "no images found"),
        (lambda root: [str(root / "one"), "--out", str(root / "m.pt")], "too few"),
        (lambda root: [str(root / "one"), "--out", str(root / "m.txt")], "expected a .pt file"),
        (lambda root: [str(root / "one"), "--out", str(root / "exists.pt")], "already exists"),
        (
            lambda root: [
                str(root / "one"),
                "--out",
                str(root / "m.pt"),
                "--loss",
                "supcon",
                "--epochs",
                "0",
            ],
            "invalid setting --epochs: Input should be greater than or equal to 1",
        ),
    ],
)
def test_shellid_train_bad_input_gives_one_clear_line(tmp_path, capsys, make_args, message):
    (tmp_path / "empty").mkdir()
    make_collection(
        tmp_path / "one", species={"Conus_alpha": ("ellipse", (200, 60, 40))}, specimens=2
    )
    (tmp_path / "exists.pt").write_bytes(b"keep me")
    code, _, stderr = run_cli(
        ["train", *make_args(tmp_path), "--cache-dir", str(tmp_path / "c")], capsys
    )
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shellid: error:") and message in lines[0]
    assert "Traceback" not in stderr
    assert (tmp_path / "exists.pt").read_bytes() == b"keep me"


def test_train_and_embed_commands_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, api.commands.train_cmd, api.commands.embed_cmd; "
        "sys.exit('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
    )


def test_train_cmd_parses_to_the_training_defaults():
    from api.commands import train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["data", "--out", "m.pt"])
    defaults = TrainingConfig()
    assert (args.unfreeze, args.views, args.head, args.loss) == (
        defaults.unfreeze,
        defaults.views,
        defaults.head,
        defaults.loss,
    )
