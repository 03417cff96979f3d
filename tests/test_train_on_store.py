"""Training on the photos a store holds: ``index.workflows.training.train_on_store`` and
``shellid train --store`` (real shells through the ``shared`` datasets, generated photos for
the refusals and the command line)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from api.cli import main
from embedder import EmbeddingModel, create_backbone, load_image
from embedder.datasets import ImageRecord, scan_collection
from embedder.episodes import prototype_top1
from embedder.model import create_head
from embedder.settings import TrainingConfig, TrainingError
from embedder.validation import split_validation_photos
from index.config import IndexSettings
from index.rows import SpecimenRows
from index.workflows.collection import Collection
from index.workflows.training import StoreTrainingReport, install_decision, train_on_store
from tests.conftest import make_collection

SPECIMENS = 4  # of each shells-zhang8 species: 8 species x 4 specimens x 2 views = 64 photos


def quick(**overrides) -> TrainingConfig:
    """A recipe small enough for a test: head only, clean views, two epochs."""
    settings = dict(
        epochs=2, views=0, unfreeze=0, batch_size=16, lr=1e-3, val_fraction=0.25, patience=10
    )
    return TrainingConfig(**{**settings, **overrides})


@pytest.fixture
def zhang8(shared) -> list[ImageRecord]:
    """The first four specimens of each shells-zhang8 species."""
    records = scan_collection(shared("shells-zhang8"), group_pattern="specimen")
    by_species: dict[str, set[str]] = defaultdict(set)
    for record in records:
        by_species[record.species].add(record.group)
    kept = {g for groups in by_species.values() for g in sorted(groups)[:SPECIMENS]}
    return [r for r in records if r.group in kept]


def enrolled(root: Path, model, records: list[ImageRecord]) -> Collection:
    """A store at ``root`` with ``records`` enrolled by ``model``, specimens as groups."""
    collection = Collection.open(root, model=model, settings=IndexSettings.load())
    for species in sorted({r.species for r in records}):
        mine = [r for r in records if r.species == species]
        collection.enroll(
            species,
            [r.path for r in mine],
            groups=[r.group.split("/")[-1] for r in mine],
            calibrate=False,
        )
    collection.index.calibrate()
    return collection


def weak_model() -> EmbeddingModel:
    """A backbone with random weights: a current model any trained one beats by far."""
    torch.manual_seed(0)
    backbone = create_backbone(weights=None)
    head = create_head("identity", backbone.num_features, backbone.num_features)
    dim = backbone.num_features
    return EmbeddingModel(backbone, head, {"kind": "identity", "in_dim": dim, "out_dim": dim})


def stored_top1(collection: Collection, config: TrainingConfig) -> tuple[float, int]:
    """Seen-species top-1 of the vectors the store holds now, on the held-out specimens the
    training chose (the split depends on species and specimens only)."""
    rows = SpecimenRows.from_table(collection.store.load_index())
    records = [
        ImageRecord(Path(i), s, f"{s}/{g}")
        for i, s, g in zip(rows.ids or [], rows.species, rows.groups or [], strict=True)
    ]
    train, val = split_validation_photos(records, config.val_fraction, config.seed)
    position = {r.path: k for k, r in enumerate(records)}
    vectors = rows.vectors
    return prototype_top1(
        vectors[[position[r.path] for r in train]],
        [r.species for r in train],
        vectors[[position[r.path] for r in val]],
        [r.species for r in val],
    ), len(val)


# ---------------------------------------------------------------------- the workflow
@pytest.mark.shared
def test_a_better_model_is_trained_on_the_store_and_installed(zhang8, tmp_path):
    collection = enrolled(tmp_path / "store", weak_model(), zhang8)
    old = collection.store.info()["fingerprint"]
    events: list[tuple[str, float]] = []
    config = quick()
    report = train_on_store(
        collection,
        config,
        cache_dir=tmp_path / "cache",
        on_progress=lambda stage, fraction: events.append((stage, fraction)),
        show_bars=False,
        log=lambda _: None,
    )
    assert report.installed and report.reason.startswith("installed")
    assert (report.species, report.photos, report.validation_photos) == (8, 64, 16)
    assert report.before is not None and report.after is not None
    assert report.after > report.before
    # the store now holds the new model's vectors, and they give the figure reported
    info = collection.store.info()
    assert info["fingerprint"] == report.fingerprint != old
    now, held = stored_top1(collection, config)
    assert held == report.validation_photos
    assert abs(now - report.after) <= 1 / held  # float16 trunk cache vs exact embedding
    # the store holds the model: opened with no model given, it is the one that answers
    reopened = Collection.open(tmp_path / "store", settings=IndexSettings.load())
    assert reopened.fingerprint == report.fingerprint
    answer = reopened.identify([load_image(zhang8[0].path)])
    assert answer.candidates[0].species == zhang8[0].species
    # progress: one monotonic fraction of the whole job, through every stage, ending at 1
    fractions = [f for _, f in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = [s for s, _ in events]
    for stage in ("exporting photos", "caching features", "epoch 2/2", "re-embedding the store"):
        assert stage in stages
    assert stages[-1] == "installed"
    # the exported photos are gone; the feature cache stays for the next training
    assert not list((tmp_path / "cache" / "store-photos").rglob("*.jpg"))


@pytest.mark.shared
def test_a_model_that_is_not_better_is_not_installed(zhang8, frozen_model, tmp_path):
    collection = enrolled(tmp_path / "store", frozen_model, zhang8)
    info, version = collection.store.info(), collection.store.latest_version()
    vectors = SpecimenRows.from_table(collection.store.load_index()).vectors
    # a learning rate too small to move the weights: the new model is the starting one, the
    # frozen backbone the store already uses, so it cannot name more photos right
    config = quick(epochs=1, lr=1e-12, tail_lr_scale=0.0)
    report = train_on_store(
        collection, config, cache_dir=tmp_path / "cache", show_bars=False, log=lambda _: None
    )
    assert not report.installed and report.fingerprint is None
    assert report.reason.startswith("not installed") and "keeps its model" in report.reason
    assert report.after == pytest.approx(report.before, abs=1 / report.validation_photos)
    assert collection.store.info()["fingerprint"] == info["fingerprint"]
    assert collection.store.latest_version() == version
    np.testing.assert_array_equal(
        SpecimenRows.from_table(collection.store.load_index()).vectors, vectors
    )


def test_the_install_rule_needs_one_more_photo_named_right():
    assert install_decision(0.5, 0.55, 20) == (True, install_decision(0.5, 0.55, 20)[1])
    assert "1 more of them right" in install_decision(0.5, 0.55, 20)[1]
    assert install_decision(0.5, 0.5, 20)[0] is False
    worse = install_decision(0.6, 0.5, 20)
    assert worse[0] is False and "2 fewer of them right" in worse[1]
    assert "50.0 % vs 60.0 % on 20 validation photos" in worse[1]


# ---------------------------------------------------------------------- stores it refuses
def small_store(tmp_path: Path, frozen_model, species: int, specimens: int) -> Collection:
    root = make_collection(tmp_path / "photos", specimens=specimens, views=2, size=64)
    records = scan_collection(root, group_pattern="specimen")
    names = sorted({r.species for r in records})[:species]
    return enrolled(tmp_path / "store", frozen_model, [r for r in records if r.species in names])


@pytest.mark.parametrize(
    ("species", "specimens", "overrides", "message"),
    [
        (0, 0, {}, "holds no photos to train on"),
        (1, 4, {}, "at least 2 species; the store .* holds 1 \\(8 photos\\)"),
        (2, 2, {}, "nothing to validate on: no species has 3 or more specimens"),
        (2, 4, {"val_fraction": 0.0}, "nothing to validate on: a validation fraction of 0"),
    ],
)
def test_a_store_it_cannot_train_on_is_one_clear_error(
    tmp_path, frozen_model, species, specimens, overrides, message
):
    if species:
        collection = small_store(tmp_path, frozen_model, species, specimens)
    else:
        collection = Collection.open(
            tmp_path / "store", model=frozen_model, settings=IndexSettings.load()
        )
    with pytest.raises(TrainingError, match=message) as caught:
        train_on_store(
            collection, quick(**overrides), cache_dir=tmp_path / "cache", show_bars=False
        )
    assert "\n" not in str(caught.value)
    assert not list((tmp_path / "cache").rglob("*.jpg"))  # nothing left behind


# ---------------------------------------------------------------------- shellid train --store
def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_shellid_train_store_prints_why_the_model_was_not_installed(tmp_path, frozen_model, capsys):
    store = small_store(tmp_path, frozen_model, 5, 4).store.uri
    argv = ["train", "--store", store, "--epochs", "1", "--views", "0", "--unfreeze", "0"]
    argv += ["--lr", "1e-12", "--tail-lr-scale", "0", "--batch-size", "16", "--quiet"]
    code, stdout, stderr = run_cli([*argv, "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 1, stderr
    lines = stdout.strip().splitlines()
    assert "40 photos of 5 species; seen-species top-1 on 10 held-out photos" in stdout
    assert lines[-2].startswith("not installed:") and lines[-1].endswith(" minutes")


def test_shellid_train_store_says_installed_and_exits_0(
    tmp_path, frozen_model, capsys, monkeypatch
):
    store = small_store(tmp_path, frozen_model, 2, 3).store.uri
    seen = {}

    def fake(collection, config, **kwargs):
        seen.update(store=collection.store.uri, validation=config.validation, **kwargs)
        return StoreTrainingReport(
            installed=True,
            reason="installed: the new model names 3 more of them right (90.0 % vs 60.0 %)",
            species=2,
            photos=12,
            validation_photos=10,
            before=0.6,
            after=0.9,
            seconds=90.0,
            model_name="tf_efficientnet_lite0/trained",
            fingerprint="0123456789abcdef",
        )

    monkeypatch.setattr("index.workflows.training.train_on_store", fake)
    code, stdout, stderr = run_cli(
        ["train", "--store", store, "--cache-dir", str(tmp_path / "c")], capsys
    )
    assert code == 0, stderr
    assert stdout.splitlines() == [
        "12 photos of 2 species; seen-species top-1 on 10 held-out photos: current model "
        "60.0 %, new model 90.0 %",
        "installed: the new model names 3 more of them right (90.0 % vs 60.0 %)",
        "1.5 minutes",
    ]
    assert seen["store"] == store and seen["cache_dir"] == tmp_path / "c"
    assert seen["show_bars"] is True


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda root: ["train"], "give DATA (a folder"),
        (lambda root: ["train", str(root), "--store", str(root)], "not both"),
        (lambda root: ["train", "--store", str(root / "s"), "--out", "m.pt"], "--out is for"),
        (lambda root: ["train", str(root)], "--out MODEL.pt is required"),
        (lambda root: ["train", "--store", str(root / "missing")], "does not exist"),
        (lambda root: ["train", "--store", str(root / "empty")], "holds no photos"),
    ],
)
def test_shellid_train_store_bad_input_is_one_line(tmp_path, capsys, make_args, message):
    Collection.open(tmp_path / "empty", settings=IndexSettings.load(), need_model=False)
    code, stdout, stderr = run_cli(
        [*make_args(tmp_path), "--cache-dir", str(tmp_path / "c")], capsys
    )
    assert code == 2 and not stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shellid: error:") and message in lines[0]


def test_a_training_killed_midway_leaves_the_old_model_and_the_next_one_runs(
    tmp_path, frozen_model
):
    import os
    import signal
    import subprocess
    import sys
    import time

    collection = small_store(tmp_path, frozen_model, 5, 4)
    store, cache = collection.store.uri, tmp_path / "cache"
    info, version = collection.store.info(), collection.store.latest_version()
    argv = ["train", "--store", store, "--cache-dir", str(cache), "--epochs", "200"]
    argv += ["--patience", "200", "--views", "0", "--unfreeze", "0", "--batch-size", "16"]
    shellid = [sys.executable, "-u", "-c", "import sys; from api.cli import main; main()"]
    job = subprocess.Popen(
        [*shellid, *argv, "--quiet"],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        for line in job.stdout or []:  # killed once it trains: past its first epoch
            if line.startswith("epoch  1/") or time.monotonic() > deadline:
                os.kill(job.pid, signal.SIGKILL)
                break
    finally:
        if job.poll() is None:
            job.kill()
        job.communicate()
    assert job.returncode == -signal.SIGKILL
    assert list((cache / "store-photos").rglob("*.jpg"))  # it died before cleaning up
    assert collection.store.info()["fingerprint"] == info["fingerprint"]
    assert collection.store.latest_version() == version
    # the lock died with it: the next training runs, and clears what the killed one left
    report = train_on_store(
        collection, quick(epochs=1, lr=1e-12), cache_dir=cache, show_bars=False, log=print
    )
    assert not report.installed
    assert not list((cache / "store-photos").rglob("*.jpg"))
