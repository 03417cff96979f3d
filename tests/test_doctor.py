"""``shellid doctor`` on stores damaged on purpose: it names what is damaged and what can be
recovered, ``--repair`` repairs what is safe, and every acknowledged write that the damage did
not destroy is still there afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.cli import main
from api.commands.doctor_cmd import finding_problem
from api.remedies import user_message
from index.config import IndexSettings
from index.errors import Remedy
from index.store import SpecimenStore
from index.workflows.collection import Collection
from index.workflows.doctor import check_store
from tests.conftest import store_row
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import (
    data_files,
    enrolled_store,
    flip_bytes,
    manifest,
    newest_version,
    photo,
    snapshot_files,
    stored_ids,
)


def doctor(capsys, store: Path, *options: str) -> tuple[int, str]:
    status = main(["doctor", "--store", str(store), *options])
    return status, capsys.readouterr().out


@pytest.fixture
def store(tmp_path) -> tuple[Path, dict[str, set[str]]]:
    path = tmp_path / "store"
    return path, enrolled_store(path)


def everything(acknowledged: dict[str, set[str]]) -> set[str]:
    return set().union(*acknowledged.values())


def test_a_healthy_store_is_reported_healthy_with_its_figures(capsys, store):
    path, acknowledged = store
    status, out = doctor(capsys, path)
    assert status == 0, out
    assert out.strip().endswith("healthy")
    assert f"rows {len(everything(acknowledged))}" in out
    assert "photos and thumbnails readable" in out and "snapshots: 1 whole" in out
    assert "DAMAGED" not in out


def test_a_missing_data_file_is_found_and_repair_restores_the_newest_whole_version(capsys, store):
    path, acknowledged = store
    lost = data_files(path)[-1]  # the last enrolment's photos
    lost.unlink()
    status, out = doctor(capsys, path)
    assert status == 1
    line = next(x for x in out.splitlines() if x.startswith("DAMAGED   table specimens"))
    assert lost.name in line and "restore version" in line and "2 rows" in line
    assert "--repair" in out.splitlines()[-1]

    status, out = doctor(capsys, path, "--repair")
    assert status == 0, out
    assert "repaired  table specimens" in out and "healthy again" in out
    survivors = {i for name, ids in acknowledged.items() if name != "Genus_species3" for i in ids}
    assert stored_ids(path) == survivors  # only the rows of the missing file are gone
    collection = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    assert {s.species for s in collection.catalogue.species()} == {
        f"Genus_species{c}" for c in range(3)
    }
    collection.enroll("Genus_species3", [photo(9001)])  # writable again
    assert doctor(capsys, path)[0] == 0


def test_an_unreadable_newest_manifest_is_set_aside_and_the_table_opens_before_it(capsys, store):
    path, acknowledged = store
    newest = newest_version(path)
    broken = manifest(path, newest)
    broken.write_bytes(broken.read_bytes()[:10])  # torn write
    with pytest.raises(Exception) as caught:
        Collection.open(
            str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
        )
    assert f"shellid doctor --store {path}" in user_message(caught.value)
    status, out = doctor(capsys, path)
    assert status == 1 and "cannot be opened" in out and "set its unreadable" in out
    status, out = doctor(capsys, path, "--repair")
    assert status == 0, out
    kept = list((path / "_doctor").rglob(broken.name))
    assert len(kept) == 1  # set aside, not deleted
    assert stored_ids(path) <= everything(acknowledged)
    assert everything({k: v for k, v in acknowledged.items() if k != "Genus_species3"}) <= (
        stored_ids(path)
    )


def test_a_missing_newest_manifest_is_named_as_a_lost_commit(capsys, store):
    path, _ = store
    manifest(path, newest_version(path)).unlink()
    status, out = doctor(capsys, path)
    assert status == 1
    assert "the manifest of its newest version" in out and "enrol those photos again" in out
    assert doctor(capsys, path, "--repair")[0] == 0  # accepted: it cannot be read back
    assert doctor(capsys, path)[0] == 0


def test_a_damaged_snapshot_is_found_and_repair_deletes_it_so_that_it_rebuilds(capsys, store):
    path, acknowledged = store
    snapshot = snapshot_files(path)[0]
    flip_bytes(snapshot)
    status, out = doctor(capsys, path, "--json")
    report = json.loads(out)
    assert status == 1 and not report["healthy"]
    assert [f["where"] for f in report["findings"]] == [f"snapshot {snapshot.name}"]
    assert doctor(capsys, path, "--repair")[0] == 0
    assert not snapshot.exists()
    collection = Collection.open(
        str(path), model=FakeEmbedder(), create=False, settings=IndexSettings.load()
    )
    assert len(collection.catalogue) == len(everything(acknowledged))  # rebuilt from the store
    assert snapshot_files(path)  # and saved again


def test_rows_with_unreadable_photos_are_reported_with_what_to_run_and_kept(capsys, tmp_path):
    store = SpecimenStore(tmp_path / "s")
    store.ensure_table(4)
    import numpy as np

    store.add(store.make_rows(store_row(1), np.ones((1, 4), np.float32)))  # empty image bytes
    checkup = check_store(str(tmp_path / "s"), repair=True)
    assert not checkup.healthy
    (finding,) = checkup.findings
    assert "unreadable photo" in finding.problem and finding.remedy is Remedy.REMOVE_AND_ENROL
    assert "shellid" not in finding.problem  # the index names the remedy; api words it
    assert finding_problem(finding).endswith(
        "; remove and enrol them again: shellid remove --specimen ID"
    )
    assert store.count() == 1  # never deleted by the doctor
    status, out = doctor(capsys, tmp_path / "s")
    assert status == 1 and "shellid remove --specimen ID" in out
    status, out = doctor(capsys, tmp_path / "s", "--json")
    (reported,) = json.loads(out)["findings"]
    assert list(reported) == ["where", "problem", "repair", "repaired", "lost_rows"]
    assert reported["problem"] == finding_problem(finding)


def test_a_store_that_is_not_there_is_one_line(capsys, tmp_path):
    status, out = doctor(capsys, tmp_path / "nowhere")
    assert status == 1
    assert "is not a directory" in out and len(out.strip().splitlines()) == 3
