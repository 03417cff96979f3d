"""``--ray``: enrolment, embedding and re-embedding on a (local) Ray cluster give the local
path's vectors and rows, and a killed enrolment resumes without duplicating or losing photos.

One local Ray serves the module (started in this process by the module's own code, then
joined by the ``shellid`` subprocesses through its address, as on a real cluster)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.config import IndexSettings
from tests.conftest import REPO, shared_dataset

pytest.importorskip("ray", reason="Ray is the optional extra 'ray' (in dev)")

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def real_set(root: Path, species: int, per_species: int) -> Path:
    """``root/<species>/`` links to the first photos of the first species of shells-zhang8."""
    source = shared_dataset("shells-zhang8")
    for folder in sorted(p for p in source.iterdir() if p.is_dir())[:species]:
        (root / folder.name).mkdir(parents=True)
        for photo in sorted(folder.glob("*.jpg"))[:per_species]:
            (root / folder.name / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray for the module (two worker slots); yields its address."""
    import ray

    from index.workflows.ray.cluster import RayOptions, ray_session

    with ray_session(RayOptions(workers=2)):
        yield ray.get_runtime_context().gcs_address


COLUMNS = ["id", "species", "genus", "family", "specimen", "source", "filename", "sha256"]
COLUMNS += ["fingerprint", "width", "height", "image", "thumbnail", "vector"]


def rows(store: Path) -> dict[str, dict]:
    """Every stored row (all but the creation time) by file name."""
    from index.store import SpecimenStore

    table = SpecimenStore(store, create=False).select(COLUMNS, "id IS NOT NULL").to_pylist()
    return {row["filename"]: row for row in table}


def test_ray_enrolment_and_reindex_give_the_local_vectors_and_rows(tmp_path, cluster):
    from index.workflows.collection import Collection
    from index.workflows.ray.cluster import RayOptions, RunTiming
    from index.workflows.ray.enrol import enroll_on_ray, folder_jobs
    from index.workflows.ray.reindex import reindex_on_ray

    data = real_set(tmp_path / "shells", species=2, per_species=4)
    (next(data.iterdir()) / "broken.jpg").write_bytes(b"not a photo")
    local = Collection.open(tmp_path / "local", settings=IndexSettings.load())
    expected = local.enroll_folder(data, progress=False)

    remote = Collection.open(tmp_path / "ray", settings=IndexSettings.load())
    options = RayOptions(address=cluster, workers=1, batch_size=3, commit_photos=3)
    reports = enroll_on_ray(remote, folder_jobs(data), options, progress=False)

    exclude = {"specimen_ids"}
    assert [r.model_dump(exclude=exclude) for r in reports] == [
        r.model_dump(exclude=exclude) for r in expected
    ]
    assert sum(r.added for r in reports) == 8 and sum(len(r.errors) for r in reports) == 1
    mine, theirs = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert sorted(mine) == sorted(theirs) and len(mine) == 8
    for name, row in mine.items():
        np.testing.assert_allclose(row["vector"], theirs[name]["vector"], rtol=0, atol=1e-6)
        for column in set(COLUMNS) - {"id", "vector"}:  # the stored copies too
            assert row[column] == theirs[name][column], (name, column)
    assert remote.catalogue.thresholds.source == local.catalogue.thresholds.source == "calibrated"

    timing = RunTiming()
    repeat = enroll_on_ray(remote, folder_jobs(data), options, progress=False, timing=timing)
    assert [r.added for r in repeat] == [0, 0] and sum(len(r.duplicates) for r in repeat) == 8
    assert timing.photos == 9 and timing.embedded == 0  # skipped before decoding
    assert len(rows(tmp_path / "ray")) == 8

    assert reindex_on_ray(remote, None, options, progress=False) == 8
    after = rows(tmp_path / "ray")
    for name, row in after.items():  # the stored copies are exactly what enrolment embedded
        np.testing.assert_allclose(row["vector"], mine[name]["vector"], rtol=0, atol=1e-6)
        assert row["id"] == mine[name]["id"]
    assert sorted(after) == sorted(mine) and remote.catalogue.thresholds.source == "calibrated"


def test_ray_embed_gives_the_vectors_of_embed_paths(tmp_path, cluster):
    from embedder import Embedder, load_model
    from index.workflows.ray.cluster import RayOptions
    from index.workflows.ray.embed import embed_on_ray

    photos = sorted(real_set(tmp_path / "shells", species=1, per_species=4).glob("*/*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    paths = [*photos[:2], broken, *photos[2:]]
    options = RayOptions(address=cluster, workers=1, batch_size=2)
    embedder = Embedder(load_model(None))
    local = embedder.embed_paths(paths, progress=False)
    vectors, kept, errors = embed_on_ray(paths, None, embedder.fingerprint, options, progress=False)
    assert kept == local.paths == photos and errors == local.errors and str(broken) in errors
    np.testing.assert_allclose(vectors, local.embeddings, rtol=0, atol=1e-6)


def shellid(*argv: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from api.cli import main; sys.exit(main())", *argv]


def stored_count(store: Path) -> int:
    """Rows in ``store`` (0 while it does not exist or its tables are being created)."""
    from index.errors import StoreError
    from index.store import SpecimenStore

    try:
        return SpecimenStore(store, create=False).count() if store.exists() else 0
    except StoreError:  # the first commit is creating the tables right now
        return 0


def test_killed_ray_enrolment_resumes_without_duplicates(tmp_path, cluster):
    from index.store import SpecimenStore

    data = real_set(tmp_path / "shells", species=3, per_species=6)
    store = tmp_path / "store"
    command = shellid(
        "enroll", str(data), "--store", str(store), "--ray", cluster, "--ray-workers", "1",
        "--ray-batch-size", "2", "--ray-commit", "2", "--json",
    )  # fmt: skip
    job = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    committed, deadline = 0, time.monotonic() + 240
    try:
        while job.poll() is None and time.monotonic() < deadline:
            if committed := stored_count(store):
                os.kill(job.pid, signal.SIGKILL)  # right after the first commit
                break
            time.sleep(0.05)
    finally:
        if job.poll() is None:
            job.kill()
        _, err = job.communicate()
    assert job.returncode == -signal.SIGKILL, err[-2000:]
    kept = len(rows(store))
    assert 0 < committed <= kept < 18  # killed part-way, after its first commit

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert sum(r["added"] for r in reports) == 18 - kept  # only what was missing
    assert sum(len(r["duplicates"]) for r in reports) == kept
    enrolled = rows(store)
    expected = {p.name: p.parent.name for p in data.glob("*/*.jpg")}
    assert {name: row["species"] for name, row in enrolled.items()} == expected
    table = SpecimenStore(store, create=False).load_index(["sha256"])
    assert table.num_rows == 18 == len(set(table["sha256"].to_pylist()))  # each exactly once


def test_ray_option_errors_are_one_line(tmp_path, capsys):
    from api.cli import main
    from api.commands._ray import ray_address
    from index.workflows.ray.cluster import RayClusterError, check_address, probe

    data = real_set(tmp_path / "shells", species=1, per_species=1)
    with pytest.raises(SystemExit) as exit_:
        main(["enroll", "--ray", str(data), "--store", str(tmp_path / "s")])
    assert exit_.value.code == 2 and "is not a Ray address" in capsys.readouterr().err
    for address in ("local", "auto", "10.0.0.5:6379", "ray://head:10001", "shells/", "a b"):
        valid = address in ("local", "auto", "10.0.0.5:6379")
        if valid:
            assert check_address(address) == ray_address(address) == address
            continue
        with pytest.raises(ValueError, match="Ray Client" if "://" in address else "not a Ray"):
            check_address(address)
        with pytest.raises(argparse.ArgumentTypeError):
            ray_address(address)
    with pytest.raises(RayClusterError, match=r"cannot reach Ray at 127\.0\.0\.1:1: "):
        probe("127.0.0.1:1", timeout=2)  # nothing listens there: at once, not after minutes
    code = "import sys; sys.modules['ray'] = None; from api.cli import main; sys.exit(main())"
    run = subprocess.run(
        [sys.executable, "-c", code, "enroll", str(data), "--store", str(tmp_path / "s"), "--ray"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "pip install 'shellid[ray]'" in run.stderr
    assert not (tmp_path / "s").exists()  # refused before the store was touched
