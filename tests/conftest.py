"""Shared fixtures: real datasets from ../shared (skip when absent, fail under CI's
SHELLID_REQUIRE_SHARED=1), generated image collections, and one frozen model per session."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
# Model exports and embedding caches made by the tests go to a fresh folder, not ~/.cache.
os.environ["SHELLID_CACHE_DIR"] = tempfile.mkdtemp(prefix="shellid-test-cache-")
SHARED_DATASETS = Path(os.environ.get("SHELLID_SHARED", REPO.parent / "shared")) / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/datasets/<name>``; skips the test when absent (fails under CI)."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        message = f"real dataset {path} not available"
        if os.environ.get("SHELLID_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (SHELLID_REQUIRE_SHARED=1)")
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _no_child_process_outlives_its_test():
    """A test that fails while a child process waits for its signal would leave that child
    running, and the interpreter waits for it at exit: the run hangs (a CI timeout) instead of
    reporting the failure. Children still alive after a test are killed."""
    yield
    for child in multiprocessing.active_children():
        child.kill()
        child.join(10)


@pytest.fixture
def shared():
    """``shared("fish4k-23")`` -> dataset path, or skip/fail as :func:`shared_dataset`."""
    return shared_dataset


SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross")


def draw_specimen(
    kind: str,
    colour: tuple[int, int, int],
    seed: int,
    size: int = 96,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Image.Image:
    """A synthetic 'specimen': a coloured shape with per-image jitter on a plain background."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    jitter = rng.integers(-8, 9, size=4)
    box = (14 + jitter[0], 14 + jitter[1], size - 14 + jitter[2], size - 14 + jitter[3])
    tint = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in colour)
    cx, cy = size / 2, size / 2
    if kind == "ellipse":
        draw.ellipse(box, fill=tint)
    elif kind == "rectangle":
        draw.rectangle(box, fill=tint)
    elif kind == "triangle":
        draw.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=tint)
    elif kind == "star":
        pts = []
        for i in range(10):
            r = (size / 2.5) if i % 2 == 0 else (size / 6)
            a = np.pi / 5 * i + rng.uniform(-0.1, 0.1)
            pts.append((cx + r * np.cos(a), cy + r * np.sin(a)))
        draw.polygon(pts, fill=tint)
    elif kind == "ring":
        draw.ellipse(box, outline=tint, width=10)
    else:
        draw.rectangle((cx - 6, box[1], cx + 6, box[3]), fill=tint)
        draw.rectangle((box[0], cy - 6, box[2], cy + 6), fill=tint)
    noise = rng.normal(0, 6, size=(size, size, 3))
    array = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


GENERATED_SPECIES = {
    "Conus_alpha": ("ellipse", (200, 60, 40)),
    "Conus_beta": ("triangle", (200, 80, 60)),
    "Cypraea_gamma": ("rectangle", (40, 160, 60)),
    "Cypraea_delta": ("star", (60, 140, 200)),
    "Murex_epsilon": ("ring", (220, 200, 40)),
}


def make_collection(
    root: Path, species: dict | None = None, specimens: int = 4, views: int = 2, size: int = 96
) -> Path:
    """Write ``root/<Genus_species>/<Genus_species>_<specimen>_<view>.png`` synthetic photos."""
    species = species or GENERATED_SPECIES
    for s_index, (name, (kind, colour)) in enumerate(species.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for specimen in range(1, specimens + 1):
            for view in range(views):
                seed = s_index * 1000 + specimen * 10 + view
                draw_specimen(kind, colour, seed, size).save(
                    folder / f"{name}_{specimen}_{'AB'[view % 2]}{view // 2 or ''}.png"
                )
    return root


@pytest.fixture
def generated_collection(tmp_path) -> Path:
    """Five synthetic species x 4 specimens x 2 views (40 PNG images)."""
    return make_collection(tmp_path / "collection")


@pytest.fixture(scope="session")
def frozen_model():
    """The default frozen backbone (offline weights), loaded once per test session."""
    from embedder import default_model

    return default_model()


def store_row(i: int) -> dict[str, list]:
    """Columns of one minimal ``specimens`` row (vector apart) for store-level tests."""
    return {
        "id": [f"{i:016x}"],
        "species": ["A_b"],
        "genus": ["A"],
        "family": [""],
        "region": [""],
        "extra": ["{}"],
        "specimen": [str(i)],
        "source": [""],
        "filename": [""],
        "sha256": [str(i)],
        "fingerprint": ["f"],
        "thumbnail": [b""],
        "image": [b""],
        "width": [1],
        "height": [1],
    }


@pytest.fixture
def fake_cli_model(monkeypatch):
    """CLI commands over the fake embedder, with no store or model from the environment."""
    from tests.fake_embedder import fake_make_embedder

    monkeypatch.setattr("index.workflows.collection.collection.make_embedder", fake_make_embedder)
    monkeypatch.delenv("SHELLID_STORE", raising=False)
    monkeypatch.delenv("SHELLID_MODEL", raising=False)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for a module's browser tests (see tests/browser.py)."""
    from tests.browser import launch_chromium

    yield from launch_chromium()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where browser tests save their screenshots (``$SHELLID_SCREENSHOTS`` when set)."""
    from tests.browser import screenshot_folder

    return screenshot_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The generated collection (5 species x 4 specimens x 2 views), once per module; modules
    that need other photos define their own ``photos``."""
    return make_collection(tmp_path_factory.mktemp("photos") / "collection")


@pytest.fixture
def store(tmp_path, photos, capsys) -> str:
    """A store with ``photos`` enrolled through ``shellid enroll`` (the command-line tests)."""
    from api.cli import main

    path = str(tmp_path / "store")
    assert main(["enroll", str(photos), "--store", path, "--group-regex", "specimen"]) == 0
    capsys.readouterr()
    return path
