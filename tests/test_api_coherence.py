"""A running service sees what another process commits to its store (``shellid enroll`` /
``remove`` on the same store) within a few seconds, without a restart. The other process is
played by a second ``Collection`` over the same directory; the stand-in embedder keeps it fast."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.workflows.collection import Collection
from tests.conftest import GENERATED_SPECIES, make_collection
from tests.fake_embedder import FakeEmbedder

FIRST, NEW = list(GENERATED_SPECIES)[:2]


def listed(client: TestClient) -> set[str]:
    response = client.get("/v1/species")
    assert response.status_code == 200, response.text
    return {s["species"] for s in response.json()["species"]}


def wait_for(condition, seconds: float = 5.0) -> float:
    """Seconds until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not seen within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.parametrize("refresh_seconds", [0.2])
def test_the_service_follows_another_processs_enrolments_and_removals(tmp_path, refresh_seconds):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    served = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    served.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    settings = ServiceSettings(store=store, refresh_seconds=refresh_seconds)
    with TestClient(create_app(settings, served)) as client:
        assert listed(client) == {FIRST}
        other = Collection.open(
            store, model=FakeEmbedder(), settings=IndexSettings.load()
        )  # the CLI, in another process
        other.enroll(NEW, sorted((photos / NEW).iterdir()))
        assert wait_for(lambda: NEW in listed(client)) < 5
        query = sorted((photos / NEW).iterdir())[0].read_bytes()
        answer = client.post("/v1/identify", files=[("images", ("q.png", query, "image/png"))])
        assert answer.json()["candidates"][0]["species"] == NEW
        other.index.remove_species(NEW)
        wait_for(lambda: NEW not in listed(client))
        assert client.delete(f"/v1/species/{NEW}").status_code == 404


def test_refresh_zero_turns_the_watch_off(tmp_path):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    served = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    served.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    with TestClient(create_app(ServiceSettings(store=store, refresh_seconds=0), served)) as client:
        Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load()).enroll(
            NEW, sorted((photos / NEW).iterdir())
        )
        time.sleep(0.5)
        assert listed(client) == {FIRST}


def test_writes_are_judged_against_what_other_processes_committed(tmp_path):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    cli = Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load())
    server = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    )  # opened before the CLI's write
    photo = sorted((photos / FIRST).iterdir())[0]
    cli.enroll(FIRST, [photo])
    report = server.enroll("Otherus_fish", [photo])  # the same photo under another name
    assert report.added == 0 and photo.name in report.refused
    assert server.index.remove_species(FIRST) == 1  # enrolled by the other process, removable here


def test_two_processes_that_opened_an_empty_store_can_both_write(tmp_path):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = str(tmp_path / "store")
    first = Collection.open(store, model=FakeEmbedder(), create=True, settings=IndexSettings.load())
    second = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    )  # both saw no tables
    first.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    second.enroll(NEW, sorted((photos / NEW).iterdir()))  # tables made by the other: opened
    third = Collection.open(store, model=FakeEmbedder(), settings=IndexSettings.load())
    assert {s.species for s in third.catalogue.species()} == {FIRST, NEW}


def test_a_stopping_service_leaves_a_snapshot_the_next_start_begins_from(tmp_path, monkeypatch):
    photos = make_collection(tmp_path / "photos", specimens=2, views=1, size=64)
    store = tmp_path / "store"
    served = Collection.open(
        store, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    served.enroll(FIRST, sorted((photos / FIRST).iterdir()))
    folder = store / "_snapshots"

    def saved() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in folder.glob("identifier-*.snap")}

    with TestClient(create_app(ServiceSettings(store=str(store), refresh_seconds=0), served)):
        other = Collection.open(
            store, model=FakeEmbedder(), settings=IndexSettings.load()
        )  # a write the server catches up
        other.enroll(NEW, sorted((photos / NEW).iterdir()))
        assert served.index.refresh()
        before = saved()
    after = saved()
    assert after and after != before  # written at shutdown, at the version it had caught up to

    def no_rebuild(*args, **kwargs):
        raise AssertionError("started from the store, not from the shutdown's snapshot")

    monkeypatch.setattr("index.sync.rebuild", no_rebuild)
    again = Collection.open(
        store, model=FakeEmbedder(), settings=IndexSettings.load()
    )  # caught up: nothing to add
    assert {s.species for s in again.catalogue.species()} == {FIRST, NEW}
