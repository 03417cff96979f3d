"""A full disk under a running collection (issue 25): every acknowledged write is still there
afterwards, a write that failed is wholly absent (or, when only the bookkeeping after its
commit failed, wholly present), the error is one line, HTTP answers 503 with Retry-After, and
writes work again as soon as space is freed.

The real thing needs root (a small tmpfs); the injected ``OSError(ENOSPC)`` cases run
everywhere."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import ServiceSettings
from index.config import IndexSettings
from index.errors import StoreWriteError
from index.snapshot import Snapshots
from index.workflows.collection import Collection
from index.workflows.doctor import check_store
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import photo, snapshot_files

DISK_BYTES = 3 * 1024 * 1024
HEADROOM = 160 * 1024  # left free by the ballast: a few enrolments, then ENOSPC


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root only; a clean skip where mounting is impossible)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "shellid-enospc", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free."""
    stats = os.statvfs(disk)
    ballast = disk / "ballast"
    with ballast.open("wb") as out:
        out.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return ballast


def names_of(store: Path) -> set[str]:
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    return set(collection.store.select(["filename"], "true")["filename"].to_pylist())


def test_a_full_disk_loses_no_acknowledged_enrolment_and_writes_resume_when_freed(
    small_disk, record_property
):
    store = small_disk / "store"
    collection = Collection.open(
        str(store), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    acknowledged: set[str] = set()
    failed: list[set[str]] = []
    for c in range(3):  # a collection and its snapshot before the disk fills
        batch = [photo(10 * c + k) for k in range(2)]
        collection.enroll(f"Genus_species{c}", batch)
        acknowledged |= {name for name, _ in batch}
    collection.index.save_snapshot(force=True)
    ballast = fill(small_disk, HEADROOM)
    for i in range(60):
        batch = [photo(1000 + 2 * i + k) for k in range(2)]
        started = time.monotonic()
        try:
            collection.enroll(f"Genus_species{i % 3}", batch, calibrate=i % 3 == 0)
        except StoreWriteError as exc:
            record_property("failed_write_s", round(time.monotonic() - started, 3))
            message = str(exc)
            assert "no space left" in message and "\n" not in message, message
            failed.append({name for name, _ in batch})
            if len(failed) == 3:
                break
        else:
            acknowledged |= {name for name, _ in batch}
    assert len(failed) == 3, "the disk never filled"

    # while full: a new process reads everything acknowledged, and no part of a failed write
    stored = names_of(store)
    assert acknowledged <= stored
    for batch in failed:
        assert batch <= stored or not (batch & stored)  # whole, or not at all
    assert len(collection.catalogue) == len(stored)  # the running process agrees with the store

    # a snapshot cannot be written either: no half file, the previous one still whole
    before = snapshot_files(store)
    assert collection.index.save_snapshot(force=True) is False
    assert not list((store / "_snapshots").glob("*.tmp"))
    assert snapshot_files(store) == before
    assert all(Snapshots(str(store)).verify_file(p.name) for p in before)

    ballast.unlink()  # space freed: the next write lands
    started = time.monotonic()
    report = collection.enroll("Genus_species9", [photo(5000)])
    recovered = time.monotonic() - started
    assert report.added == 1 and recovered < 30
    record_property("acknowledged", len(acknowledged))
    record_property("recover_s", round(recovered, 3))
    assert acknowledged | {"p5000.png"} <= names_of(store)
    checkup = check_store(str(store))
    assert checkup.healthy, [f.line() for f in checkup.findings]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device (os error 28)")


@pytest.fixture
def collection(tmp_path) -> Collection:
    collection = Collection.open(
        str(tmp_path / "store"), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    for c in range(3):
        collection.enroll(f"Genus_species{c}", [photo(10 * c + k) for k in range(2)])
    return collection


def test_an_injected_enospc_at_the_commit_adds_nothing_and_says_so_in_one_line(collection):
    before = set(collection.store.select(["id"], "true")["id"].to_pylist())
    table = collection.store._specimens
    add = table.add
    table.add = _no_space
    with pytest.raises(StoreWriteError) as error:
        collection.enroll("Genus_species7", [photo(700), photo(701)])
    assert str(error.value).endswith("nothing was added (no space left on the store's disk)")
    assert set(collection.store.select(["id"], "true")["id"].to_pylist()) == before
    assert len(collection.catalogue) == len(before) and "Genus_species7" not in {
        s.species for s in collection.catalogue.species()
    }
    table.add = add
    assert collection.enroll("Genus_species7", [photo(700)]).added == 1


def test_failed_writes_answer_503_with_retry_after_and_reads_go_on(collection, tmp_path):
    settings = ServiceSettings(store=collection.store.uri)
    table = collection.store._specimens
    add, delete = table.add, table.delete
    with TestClient(create_app(settings, collection)) as api:
        table.add, table.delete = _no_space, _no_space
        files = [("images", ("new.png", photo(900)[1], "image/png"))]
        answer = api.post("/v1/species/Genus_species8/images", files=files)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        body = answer.json()
        assert body["code"] == "store_write_failed" and "no space left" in body["detail"]
        victim = next(iter(collection.index.identifier.specimen_ids))
        assert api.delete(f"/v1/specimens/{victim}").status_code == 503
        assert api.delete("/v1/species/Genus_species0").status_code == 503
        listed = api.get("/v1/species")  # reads are not affected
        assert listed.status_code == 200 and len(listed.json()["species"]) == 3
        table.add, table.delete = add, delete
        again = api.post("/v1/species/Genus_species8/images", files=files)  # the retry lands
        assert again.status_code == 201 and again.json()["added"] == 1
