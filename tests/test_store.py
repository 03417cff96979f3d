"""The specimen store and Collection: LanceDB round trip, model mismatch, crash safety,
duplicates, thumbnails, compaction, reindex, FAISS kept in step (fake embedder, fast)."""

from __future__ import annotations

import io
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from lancedb.table import LanceTable
from PIL import Image

from api.remedies import user_message
from index import (
    DuplicateImageError,
    EmptyCollectionError,
    IndexSettings,
    ModelMismatchError,
    SpeciesNotFoundError,
    SpecimenNotFoundError,
    StoreError,
)
from index.store import SpecimenStore
from index.workflows.collection import Collection
from tests.conftest import make_collection, store_row
from tests.fake_embedder import FakeEmbedder


def files(collection: Path, species: str, specimens=None) -> list[Path]:
    found = sorted((collection / species).glob("*.png"))
    if specimens is None:
        return found
    return [f for f in found if int(f.stem.split("_")[-2]) in specimens]


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The generated collection, made once for this module."""
    return make_collection(tmp_path_factory.mktemp("photos") / "collection")


@pytest.fixture
def generated_collection(photos) -> Path:
    return photos


@pytest.fixture(scope="module")
def enrolled_template(photos, tmp_path_factory) -> Path:
    """A store with specimens 1-3 of the five generated species, built once per module."""
    path = tmp_path_factory.mktemp("template") / "store"
    collection = Collection.open(path, model=FakeEmbedder(), settings=IndexSettings.load())
    for species in sorted(p.name for p in photos.iterdir()):
        paths = files(photos, species, {1, 2, 3})
        groups = [p.stem.rsplit("_", 1)[0] for p in paths]
        collection.enroll(
            species,
            paths,
            {"family": "Testidae", "region": "Japan"},
            "tests",
            groups=groups,
            calibrate=False,
        )
    collection.index.calibrate()
    return path


@pytest.fixture
def enrolled(enrolled_template, store_dir) -> Collection:
    """A private copy of the template store, opened with the fake embedder."""
    shutil.copytree(enrolled_template, store_dir)
    return Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())


def load(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_enroll_identify_remove_round_trip(enrolled, generated_collection, store_dir):
    views = [load(p) for p in files(generated_collection, "Cypraea_gamma", {4})]
    result = enrolled.identify(views)
    assert result.species == "Cypraea_gamma" and result.decision == "species"
    assert result.candidates[0].family == "Testidae"
    assert result.region == "Japan"
    assert set(result.timings_ms) >= {"embed", "classify", "total"}

    reopened = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    assert len(reopened.catalogue) == 30
    assert [s.species for s in reopened.catalogue.species()] == sorted(
        p.name for p in generated_collection.iterdir()
    )
    assert reopened.catalogue.species_info("Cypraea gamma").count == 6
    assert reopened.catalogue.species_info("Cypraea_gamma").specimens == 3
    assert reopened.identify(views).species == "Cypraea_gamma"

    assert reopened.index.remove_species("Cypraea_gamma") == 6
    assert "Cypraea_gamma" not in {c.species for c in reopened.identify(views, top_k=10).candidates}
    again = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    assert len(again.catalogue) == 24
    with pytest.raises(SpeciesNotFoundError):
        again.catalogue.species_info("Cypraea_gamma")
    with pytest.raises(SpeciesNotFoundError):
        again.index.remove_species("Cypraea_gamma")


def test_species_enrolled_from_one_image_is_identifiable_at_once(enrolled, generated_collection):
    extra = make_collection(
        generated_collection.parent / "extra",
        {"Nassa_zeta": ("cross", (250, 250, 250))},
        specimens=2,
        views=1,
    )
    report = enrolled.enroll("Nassa_zeta", sorted((extra / "Nassa_zeta").glob("*"))[:1])
    assert report.added == 1 and report.total == 1
    query = load(sorted((extra / "Nassa_zeta").glob("*"))[1])
    assert enrolled.identify([query]).candidates[0].species == "Nassa_zeta"


def test_store_made_by_another_model_is_refused_with_the_fix(enrolled, store_dir):
    with pytest.raises(ModelMismatchError) as caught:
        Collection.open(store_dir, model=FakeEmbedder(variant=1), settings=IndexSettings.load())
    message = user_message(caught.value)
    assert "fake000000000000" in message and "fake000000000001" in message
    assert "shellid reindex --model NEW" in message


def test_store_built_by_the_first_releases_default_asks_for_a_reindex(photos, tmp_path):
    """Stores the legacy default (efficientnet_lite0, wrong preprocessing) built name the fix."""
    legacy = FakeEmbedder()
    legacy.name = "efficientnet_lite0/frozen"
    path = tmp_path / "old-store"
    Collection.open(path, model=legacy, settings=IndexSettings.load()).enroll(
        "Conus_alpha", files(photos, "Conus_alpha", {1})
    )
    with pytest.raises(ModelMismatchError) as caught:
        Collection.open(path, model=FakeEmbedder(variant=1), settings=IndexSettings.load())
    message = user_message(caught.value)
    assert "first release's default backbone" in message
    assert f"shellid reindex --store {path}" in message


def test_reindex_re_embeds_every_image_with_the_new_model(
    enrolled, generated_collection, store_dir
):
    new = FakeEmbedder(variant=1)
    assert enrolled.reindex(new, progress=False) == 30
    assert enrolled.store.dim == 32 and enrolled.fingerprint == new.fingerprint
    reopened = Collection.open(
        store_dir, model=FakeEmbedder(variant=1), settings=IndexSettings.load()
    )
    assert reopened.store.info()["fingerprint"] == new.fingerprint
    views = [load(p) for p in files(generated_collection, "Murex_epsilon", {4})]
    assert reopened.identify(views).species == "Murex_epsilon"
    with pytest.raises(ModelMismatchError):
        Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())


def test_crash_during_the_table_write_leaves_the_store_as_before(
    enrolled, generated_collection, monkeypatch
):
    before_rows = enrolled.store.count()
    before_len = len(enrolled.catalogue)
    real_add = LanceTable.add

    def half_then_crash(self, data, *args, **kwargs):
        real_add(self, data.slice(0, max(1, data.num_rows // 2)), *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(LanceTable, "add", half_then_crash)
    with pytest.raises(StoreError, match="nothing was added"):
        enrolled.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {4}))
    monkeypatch.setattr(LanceTable, "add", real_add)
    assert enrolled.store.count() == before_rows
    assert len(enrolled.catalogue) == before_len
    assert (
        len(
            Collection.open(
                enrolled.store.uri, model=FakeEmbedder(), settings=IndexSettings.load()
            ).catalogue
        )
        == before_len
    )
    report = enrolled.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {4}))
    assert report.added == 2 and not report.duplicates  # nothing half-enrolled remained


def test_crash_after_the_write_rolls_the_store_back(enrolled, generated_collection, monkeypatch):
    before_rows = enrolled.store.count()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(enrolled.index.identifier, "add", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        enrolled.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {4}))
    assert enrolled.store.count() == before_rows
    assert len(enrolled.catalogue) == before_rows


def test_duplicates_are_skipped_and_cross_species_copies_refused(enrolled, generated_collection):
    again = files(generated_collection, "Conus_beta", {1})
    report = enrolled.enroll("Conus_beta", again + files(generated_collection, "Conus_beta", {4}))
    assert sorted(report.duplicates) == sorted(p.name for p in again)
    assert report.added == 2 and report.total == 8

    wrong = files(generated_collection, "Murex_epsilon", {2})
    report = enrolled.enroll("Conus_beta", wrong)
    assert report.added == 0 and set(report.refused) == {p.name for p in wrong}
    assert "already enrolled as Murex_epsilon" in next(iter(report.refused.values()))

    rows = enrolled.store.count()
    with pytest.raises(DuplicateImageError, match="nothing was enrolled"):
        enrolled.enroll(
            "Conus_beta", files(generated_collection, "Conus_beta", {4}) + wrong, strict=True
        )
    assert enrolled.store.count() == rows


def test_same_image_twice_in_one_call_is_enrolled_once(store_dir, generated_collection):
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    path = files(generated_collection, "Conus_alpha")[0]
    report = collection.enroll("Conus_alpha", [path, ("copy.png", path.read_bytes())])
    assert report.added == 1 and report.duplicates == ["copy.png"]


def test_unreadable_images_are_reported_and_the_rest_enrolled(store_dir, generated_collection):
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    good = files(generated_collection, "Conus_alpha", {1})
    report = collection.enroll(
        "Conus_alpha",
        [*good, ("broken.jpg", b"not an image"), generated_collection / "missing.png"],
    )
    assert report.added == 2
    assert set(report.errors) == {"broken.jpg", "missing.png"}


def test_one_commit_per_enrollment(store_dir, generated_collection):
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    collection.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {1}))
    version = collection.store.version
    collection.enroll("Conus_beta", files(generated_collection, "Conus_beta"))  # 8 images
    assert collection.store.version == version + 1


def test_thumbnails_and_stored_copies_are_small_jpegs(store_dir, tmp_path):
    big = tmp_path / "Oliva_big.png"
    Image.new("RGB", (1600, 1200), (120, 80, 40)).save(big)
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    specimen = collection.enroll("Oliva_big", [big]).specimen_ids[0]
    thumb = Image.open(io.BytesIO(collection.catalogue.thumbnail(specimen)))
    copy = Image.open(io.BytesIO(collection.catalogue.image(specimen)))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160
    assert copy.format == "JPEG" and copy.size == (512, 384)
    with pytest.raises(SpecimenNotFoundError):
        collection.catalogue.thumbnail("0123456789abcdef")
    with pytest.raises(SpecimenNotFoundError):
        collection.catalogue.thumbnail("x' OR '1'='1")


def test_removing_a_specimen_updates_the_search_index(enrolled, generated_collection):
    query = [load(files(generated_collection, "Conus_alpha", {1})[0])]
    nearest = enrolled.search(query, k=1)[0]
    assert nearest.score == pytest.approx(1.0, abs=1e-3)  # the enrolled photo itself
    removed = enrolled.index.remove_specimen(nearest.specimen_id)
    assert removed.species == "Conus_alpha"
    assert nearest.specimen_id not in {s.specimen_id for s in enrolled.search(query, k=30)}
    with pytest.raises(SpecimenNotFoundError):
        enrolled.index.remove_specimen(nearest.specimen_id)
    with pytest.raises(SpecimenNotFoundError):
        enrolled.catalogue.thumbnail(nearest.specimen_id)


def test_thresholds_are_stored_and_overridable(enrolled, store_dir):
    info = enrolled.store.info()
    assert info["thresholds"]["source"] == "calibrated"
    reopened = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    assert reopened.catalogue.thresholds.unknown == pytest.approx(
        enrolled.catalogue.thresholds.unknown
    )
    custom = Collection.open(
        store_dir,
        model=FakeEmbedder(),
        settings=IndexSettings(unknown_threshold=0.01, ood_threshold=0.5),
    )
    assert custom.catalogue.thresholds.unknown == 0.01 and custom.catalogue.thresholds.ood == 0.5
    assert set(custom.catalogue.thresholds.overridden) == {"unknown", "ood"}


def test_identify_on_an_empty_store_is_a_clear_error(store_dir, generated_collection):
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    with pytest.raises(EmptyCollectionError, match="enroll"):
        collection.identify([load(files(generated_collection, "Conus_alpha")[0])])


def test_opening_a_missing_store_without_create_fails(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        Collection.open(
            tmp_path / "nowhere", model=FakeEmbedder(), create=False, settings=IndexSettings.load()
        )


@pytest.mark.filterwarnings("ignore:optimize")
def test_old_versions_are_compacted_away(tmp_path):
    store = SpecimenStore(tmp_path / "s", compact_every=5, keep_versions=timedelta(0))
    store.ensure_table(4)
    for i in range(10):
        store.add(store.make_rows(store_row(i), np.ones((1, 4), np.float32)))
    stats = store.upkeep.stats()
    assert stats["rows"] == 10
    assert stats["fragments"] == 1 and stats["versions"] <= 2


def test_another_process_writes_are_picked_up_by_refresh(enrolled, generated_collection):
    other = Collection.open(enrolled.store.uri, model=FakeEmbedder(), settings=IndexSettings.load())
    other.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {4}))
    assert enrolled.index.refresh() is True
    assert len(enrolled.catalogue) == len(other.catalogue)
    assert enrolled.index.refresh() is False


def test_identification_goes_on_while_an_enrollment_is_written(enrolled, generated_collection):
    query = [load(p) for p in files(generated_collection, "Conus_beta", {4})]
    errors: list[BaseException] = []
    answers: list[str] = []
    stop = threading.Event()

    def keep_identifying():
        while not stop.is_set():
            try:
                answers.append(enrolled.identify(query).candidates[0].species)
            except BaseException as exc:
                errors.append(exc)

    reader = threading.Thread(target=keep_identifying)
    reader.start()
    try:
        enrolled.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {4}))
        enrolled.index.remove_species("Murex_epsilon")
    finally:
        stop.set()
        reader.join()
    assert not errors and answers and set(answers) == {"Conus_beta"}


def test_an_emptied_store_takes_a_model_of_another_size(store_dir, generated_collection):
    collection = Collection.open(store_dir, model=FakeEmbedder(), settings=IndexSettings.load())
    collection.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {1}))
    collection.index.remove_species("Conus_alpha")
    other = Collection.open(
        store_dir, model=FakeEmbedder(variant=1), settings=IndexSettings.load()
    )  # empty: no mismatch
    report = other.enroll("Conus_alpha", files(generated_collection, "Conus_alpha", {1}))
    assert report.added == 2 and other.store.dim == 32
