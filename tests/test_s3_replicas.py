"""The store on S3-compatible object storage, and several ``shellid serve`` replicas over it.

A real S3-protocol server (moto's, from the ``dev`` extra) runs in this process on a free
loopback port; LanceDB reaches it through the standard ``AWS_*`` variables, as a deployment
would (docs/deployment.md). Store-level tests first, then two ``shellid serve`` processes over
one ``s3://`` store, with the fake embedder so that they start in seconds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from index.errors import StoreError
from index.store import SpecimenStore
from tests.conftest import GENERATED_SPECIES, make_collection, store_row

REPO = Path(__file__).resolve().parents[1]
BUCKET = "shellid-test"
#: ``shellid serve`` with the fake embedder (the model is not the point here)
REPLICA = (
    "import sys, api.app\n"
    "from index.workflows.collection import Collection\n"
    "from tests.fake_embedder import FakeEmbedder\n"
    "api.app.open_collection = lambda s: Collection.open(\n"
    "    s.store, model=FakeEmbedder(), create=True, settings=s)\n"
    "from api.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # one log line per request otherwise
        pass


class S3Server:
    """moto's S3 server on 127.0.0.1, recording the conditions of every manifest PUT."""

    def __init__(self) -> None:
        self.manifest_puts: list[tuple[str, str | None]] = []  # (path, If-None-Match)
        moto = DomainDispatcherApplication(create_backend_app)

        def app(environ, start_response):
            if environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"].endswith(".manifest"):
                self.manifest_puts.append((environ["PATH_INFO"], environ.get("HTTP_IF_NONE_MATCH")))
            return moto(environ, start_response)

        self._server = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """The standard variables LanceDB (and boto3) read to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    boto3.client("s3", **_boto_args(server)).create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


def _boto_args(server: S3Server) -> dict[str, str]:
    env = server.env()
    return {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": env["AWS_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def s3_env(s3, monkeypatch) -> S3Server:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture
def uri(s3_env) -> str:
    """A fresh store under the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def add_row(store: SpecimenStore, i: int) -> int:
    row = store_row(i)
    row["thumbnail"] = [f"thumb {i}".encode()]
    row["image"] = [f"image {i}".encode()]
    return store.add(store.make_rows(row, np.full((1, 4), i + 1, np.float32)))


# ---------------------------------------------------------------------- the store


def test_a_store_on_s3_adds_deletes_versions_and_reads_blobs(uri):
    store = SpecimenStore(uri)
    store.ensure_table(4)
    first = add_row(store, 1)
    second = add_row(store, 2)
    assert second > first and store.latest_version() == second
    assert store.count() == 2 and store.dim == 4
    assert store.read_blob(f"{2:016x}", "image") == b"image 2"
    assert store.read_blob(f"{1:016x}", "thumbnail") == b"thumb 1"
    store.write_info(fingerprint="f" * 16)
    other = SpecimenStore(uri, create=False)  # another process: sees every commit
    assert other.latest_version() == second and other.info()["fingerprint"] == "f" * 16
    assert other.delete_ids([f"{1:016x}"]) == 1
    assert store.latest_version() > second and store.count() == 1
    store.upkeep.compact()
    stats = store.upkeep.stats()
    assert stats["rows"] == 1 and stats["fragments"] == 1 and stats["versions"] >= 1


def test_every_commit_is_a_conditional_put_and_concurrent_appends_all_land(uri, s3_env):
    stores = [SpecimenStore(uri, compact_every=1000) for _ in range(2)]
    stores[0].ensure_table(4)
    stores[1].ensure_table(4)
    before = len(s3_env.manifest_puts)

    def write(k: int) -> None:
        for i in range(8):
            add_row(stores[k], 100 * k + i)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, range(2)))
    assert SpecimenStore(uri).count() == 16  # the second writer's commit lost nothing
    puts = s3_env.manifest_puts[before:]
    assert len(puts) >= 16
    assert all(condition == "*" for _, condition in puts), puts  # If-None-Match: *


def test_a_rollback_keeps_another_replicas_commit(uri):
    mine, theirs = SpecimenStore(uri), SpecimenStore(uri)
    mine.ensure_table(4)
    theirs.ensure_table(4)
    before = mine.latest_version()
    add_row(mine, 1)
    add_row(theirs, 2)  # lands between my write and my rollback
    mine.rollback(before)
    assert SpecimenStore(uri).select(["id"], "true")["id"].to_pylist() == [f"{2:016x}"]


def test_a_remote_store_without_tables_is_missing_unless_created(uri):
    with pytest.raises(StoreError, match="does not exist"):
        SpecimenStore(uri, create=False)
    assert SpecimenStore(uri, create=True).count() == 0


@pytest.mark.parametrize(
    ("setting", "value", "uri", "says"),
    [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:{closed}", None, "cannot reach the object store"),
        ("AWS_ALLOW_HTTP", "false", None, "AWS_ALLOW_HTTP=true"),
        (None, None, "s3://no-such-bucket/store", "the bucket does not exist"),
    ],
)
def test_object_store_problems_are_one_line(s3_env, monkeypatch, setting, value, uri, says):
    if setting:
        with socket.socket() as probe:  # a port nothing listens on
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        monkeypatch.setenv(setting, value.format(closed=closed))
    with pytest.raises(StoreError) as error:
        SpecimenStore(uri or f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}")
    message = str(error.value)
    assert says in message and "\n" not in message and len(message) < 200


# ---------------------------------------------------------------------- two replicas


class Replica:
    """One ``shellid serve`` process over the store."""

    def __init__(self, store: str, env: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.store = store
        self.log = log
        command = ["serve", "--store", store, "--port", str(port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            [sys.executable, "-c", REPLICA, *command],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready: {self.log.read_text()}"
            time.sleep(0.2)

    def species(self) -> set[str]:
        response = self.client.get("/v1/species")
        assert response.status_code == 200, response.text
        return {s["species"] for s in response.json()["species"]}

    def enrol(self, species: str, photos: list[Path]) -> dict:
        files = [("images", (p.name, p.read_bytes(), "image/png")) for p in photos]
        response = self.client.post(f"/v1/species/{species}/images", files=files)
        assert response.status_code == 201, response.text
        return response.json()

    def identify(self, photo: Path) -> dict:
        files = [("images", (photo.name, photo.read_bytes(), "image/png"))]
        response = self.client.post("/v1/identify", files=files)
        assert response.status_code == 200, response.text
        return response.json()

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            self.process.kill()


def seconds_until(condition: Callable[[], bool], limit: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < limit, f"not seen within {limit} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def replicas(s3_env, tmp_path) -> Iterator[tuple[Replica, Replica]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELLID_", "AWS_"))}
    env |= s3_env.env() | {"SHELLID_REFRESH_SECONDS": "1"}  # the default, stated
    store = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    started = [Replica(store, env, tmp_path / f"replica{k}.log") for k in (1, 2)]
    try:
        for replica in started:
            replica.wait_ready()
        yield started[0], started[1]
    finally:
        for replica in started:
            replica.stop()


def test_two_replicas_over_one_s3_store_share_enrolments_and_deletions(replicas, tmp_path):
    one, two = replicas
    species = list(GENERATED_SPECIES)
    photos = make_collection(tmp_path / "photos", specimens=3, views=1, size=64)
    shots = {s: sorted((photos / s).iterdir()) for s in species}
    for name in species[:3]:  # a collection to calibrate on, through replica 1
        assert one.enrol(name, shots[name][:2])["added"] == 2
    seconds_until(lambda: two.species() == set(species[:3]), 2.5)

    new = species[3]
    one.enrol(new, shots[new][:2])
    visible = seconds_until(lambda: new in two.species(), 2.0)  # within 2 s of the write
    answer = two.identify(shots[new][2])  # a specimen it was not enrolled with
    assert answer["candidates"][0]["species"] == new, (visible, answer)

    removed = two.client.delete(f"/v1/species/{new}")
    assert removed.status_code == 200, removed.text
    seconds_until(lambda: new not in one.species(), 2.0)
    assert one.identify(shots[new][2])["candidates"][0]["species"] != new

    # both replicas enrol different species at the same moment: nothing is lost
    last = species[4]
    with ThreadPoolExecutor(2) as pool:
        reports = list(
            pool.map(
                lambda job: job[0].enrol(*job[1:]),
                [(one, last, shots[last]), (two, new, shots[new])],
            )
        )
    assert [r["added"] for r in reports] == [3, 3]
    stored = SpecimenStore(one.store, create=False).select(["species"], "true")["species"]
    assert sorted(stored.to_pylist()) == sorted(
        [s for s in species[:3] for _ in range(2)] + [new] * 3 + [last] * 3
    )
    # ... and each replica's own view takes in the other's concurrent write
    everything = {*species[:3], new, last}
    seconds_until(lambda: one.species() == everything and two.species() == everything, 2.0)
