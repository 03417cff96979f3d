"""Queries from the command line and from Python go through the same intake as uploads and
enrolment (issue 12: a 45000x32 PNG once cost ~11 s and 0.5 GB per query)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from api.cli import main
from embedder.intake import ImageIntakeError
from index.config import IndexSettings
from index.workflows.collection import Collection
from index.workflows.imaging import query_image
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder

pytestmark = pytest.mark.usefixtures("fake_cli_model")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("query-intake")
    photos = make_collection(root / "photos", specimens=2, views=1, size=64)
    collection = Collection.open(
        root / "store", model=FakeEmbedder(), settings=IndexSettings.load()
    )
    collection.enroll_folder(photos, progress=False)
    return root / "store"


@pytest.fixture
def thin_png(tmp_path) -> Path:
    path = tmp_path / "thin.png"
    Image.new("RGB", (45000, 32)).save(path)
    return path


@pytest.mark.parametrize("command", ["identify", "search"])
def test_cli_refuses_a_thin_png_from_its_header_in_one_line(command, store, thin_png, capsys):
    started = time.perf_counter()
    code = main([command, str(thin_png), "--store", str(store)])
    seconds = time.perf_counter() - started
    stderr = capsys.readouterr().err
    assert code != 0
    assert "times longer than wide" in stderr and "Traceback" not in stderr
    assert seconds < 5  # the 11 s resize never happens


def test_query_image_accepts_like_enrolment_and_never_upsamples(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (3000, 2000), (90, 60, 30)).save(path, quality=90)
    image = query_image(path)
    assert max(image.size) <= 2048 and image.size[0] / image.size[1] == pytest.approx(1.5, 0.01)
    with pytest.raises(ImageIntakeError, match="file not found"):
        query_image(tmp_path / "missing.jpg")


def test_python_callers_with_decoded_images_get_the_same_shape_checks(store):
    collection = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    with pytest.raises(ImageIntakeError) as refused:
        collection.identify([Image.new("RGB", (20000, 40))])
    assert refused.value.code == "bad_aspect_ratio"
    with pytest.raises(ImageIntakeError):
        collection.search([Image.new("RGB", (10, 10))])
    answer = collection.identify([Image.new("RGB", (300, 200), (200, 60, 40))])
    assert answer.decision  # an ordinary photo is still answered


def test_the_image_limits_are_settings_the_command_line_honours(
    store, tmp_path, monkeypatch, capsys
):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (120, 80, 40)).save(wide)
    assert main(["identify", str(wide), "--store", str(store)]) == 0  # 4:1 is fine by default
    capsys.readouterr()
    monkeypatch.setenv("SHELLID_MAX_ASPECT_RATIO", "3")
    assert main(["identify", str(wide), "--store", str(store)]) != 0
    assert "at most 3:1 is accepted" in capsys.readouterr().err
    collection = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    )  # and the collection itself
    with pytest.raises(ImageIntakeError):
        collection.identify([Image.new("RGB", (400, 100))])


class RecordingEmbedder(FakeEmbedder):
    """The fake embedder, keeping the pixels of every image it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list = []

    def embed_images(self, images):
        import numpy as np

        self.seen += [np.asarray(im.convert("RGB")) for im in images]
        return super().embed_images(images)


def test_a_photo_asked_is_embedded_from_the_same_pixels_as_once_enrolled(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    path = tmp_path / "Conus_textile" / "a.png"  # lossless: the stored copy is a JPEG
    path.parent.mkdir()
    noisy.save(path)
    embedder = RecordingEmbedder()
    collection = Collection.open(tmp_path / "store", model=embedder, settings=IndexSettings.load())
    collection.enroll("Conus textile", [path])
    enrolled = embedder.seen[-1]
    collection.search([query_image(path)], k=1)
    asked = embedder.seen[-1]
    assert asked.shape == enrolled.shape
    assert np.array_equal(asked, enrolled)  # the stored copy's pixels, not the PNG's
    assert not np.array_equal(asked, np.asarray(noisy.convert("RGB")))
    best = collection.search([query_image(path)], k=1)[0]
    assert best.score == pytest.approx(1.0, abs=1e-6)
