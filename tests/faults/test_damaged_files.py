"""Lance files that go missing under a running service (issue 25): answers from memory go on,
every read that needs the lost file fails in one line naming ``shellid doctor``, and after
``doctor --repair`` and a restart every acknowledged write except the rows the lost file held
is there, and the store takes writes again."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.cli import main
from api.remedies import user_message
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.errors import StoreError
from index.store import SpecimenStore
from index.workflows.collection import Collection
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import data_files, enrolled_store, manifest, newest_version, photo


def image(i: int) -> Image.Image:
    return Image.open(io.BytesIO(photo(i)[1]))


def test_a_data_file_deleted_under_a_running_service_is_named_and_repaired(
    tmp_path: Path, record_property
):
    path = tmp_path / "store"
    acknowledged = enrolled_store(path)
    running = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    data_files(path)[-1].unlink()  # the last enrolment's rows
    lost = acknowledged["Genus_species3"]

    assert running.identify([image(1)]).candidates  # answered from memory
    with pytest.raises(StoreError) as error:
        running.catalogue.image(sorted(lost)[0])
    message = user_message(error.value)
    assert f"shellid doctor --store {path}" in message and "\n" not in message
    with TestClient(create_app(ServiceSettings(store=str(path)), running)) as api:
        answer = api.get(f"/v1/specimens/{sorted(lost)[0]}/image")
        assert answer.status_code == 500  # damage, not a passing fault: no Retry-After
        assert "shellid doctor" in answer.json()["detail"] and "Retry-After" not in answer.headers

    started = time.monotonic()
    assert main(["doctor", "--store", str(path), "--repair"]) == 0
    restarted = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    record_property("recover_s", round(time.monotonic() - started, 3))
    record_property("rows_in_lost_file", len(lost))
    stored = set(restarted.store.select(["id"], "true")["id"].to_pylist())
    assert stored == set().union(*acknowledged.values()) - lost  # only the lost file's rows
    assert len(restarted.catalogue) == len(
        stored
    )  # the snapshot caught up with the restored version
    assert restarted.enroll("Genus_species3", [photo(300), photo(301)]).added == 2
    assert main(["doctor", "--store", str(path)]) == 0


def test_a_manifest_deleted_under_a_running_service_comes_back_with_its_next_write(
    tmp_path: Path,
):
    path = tmp_path / "store"
    acknowledged = enrolled_store(path)
    everything = set().union(*acknowledged.values())
    running = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    manifest(path, newest_version(path)).unlink()  # the last enrolment's commit
    fresh = set(SpecimenStore(path).select(["id"], "true")["id"].to_pylist())
    assert fresh == everything - acknowledged["Genus_species3"]  # a new process misses it
    assert main(["doctor", "--store", str(path)]) == 1  # and the doctor names it
    assert len(running.catalogue) == len(everything)  # the running replica still holds that version
    assert running.enroll("Genus_species4", [photo(777)]).added == 1  # ... and commits on it
    stored = set(SpecimenStore(path).select(["id"], "true")["id"].to_pylist())
    assert everything <= stored and len(stored) == len(everything) + 1  # nothing lost
    assert main(["doctor", "--store", str(path)]) == 0
    restarted = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    assert len(restarted.catalogue) == len(stored)
