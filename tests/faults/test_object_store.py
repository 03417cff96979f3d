"""The object store failing under a collection on ``s3://`` (issue 25): errors (HTTP 503 /
500, retried by lance, then given up) and timeouts on the commit's requests. Every acknowledged
write is still there afterwards; a failed write is wholly absent, or wholly present when the
server finished it after the client stopped waiting; writes resume when the store recovers.

moto's S3 server runs on 127.0.0.1 behind a small WSGI layer that fails or delays the
requests a test names (method and path pattern)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from index.config import IndexSettings
from index.errors import StoreWriteError
from index.workflows.collection import Collection
from tests.fake_embedder import FakeEmbedder
from tests.faults.damage import photo

BUCKET = "shellid-faults"
MANIFEST_PUT = r"^PUT .*/_versions/\d+\.manifest$"
DATA_PUT = r"^PUT .*/data/[^/]+\.lance$"


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


@dataclass
class Fault:
    """Requests matching ``pattern`` ('METHOD /path') wait ``delay`` seconds, then are answered
    ``status`` (0: passed on to the server) — the first ``times`` of them (None: all)."""

    pattern: str
    status: int = 503
    delay: float = 0.0
    times: int | None = None
    hits: int = 0


class FaultyS3:
    """moto's S3 server on 127.0.0.1 with faults injected in front of it."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        moto = DomainDispatcherApplication(create_backend_app)

        def app(environ, start_response):
            request = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}"
            fault = self._match(request)
            if fault is not None:
                time.sleep(fault.delay)
                if fault.status:
                    code = "SlowDown" if fault.status == 503 else "InternalError"
                    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
                    return Response(body, status=fault.status)(environ, start_response)
            return moto(environ, start_response)

        self._server = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _match(self, request: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if re.search(fault.pattern, request) and (
                    fault.times is None or fault.hits < fault.times
                ):
                    fault.hits += 1
                    return fault
        return None

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "AWS_TIMEOUT": "1s",  # object_store's request timeout (its default is 30 s)
        }

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


@pytest.fixture(scope="module")
def s3() -> Iterator[FaultyS3]:
    server = FaultyS3()
    env = server.env()
    boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch) -> Iterator[FaultyS3]:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    s3.faults = []
    yield s3
    s3.faults = []


@pytest.fixture
def collection(s3_env) -> Collection:
    uri = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    collection = Collection.open(
        uri, model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    for c in range(3):
        collection.enroll(f"Genus_species{c}", [photo(10 * c + k) for k in range(2)])
    return collection


def stored_names(uri: str) -> set[str]:
    fresh = Collection.open(uri, model=FakeEmbedder(), create=False, settings=IndexSettings.load())
    return set(fresh.store.select(["filename"], "true")["filename"].to_pylist())


def acknowledged_names(collection: Collection) -> set[str]:
    return set(collection.store.select(["filename"], "true")["filename"].to_pylist())


def test_transient_object_store_errors_are_retried_and_the_write_lands(
    s3_env, collection, record_property
):
    before = acknowledged_names(collection)
    s3_env.faults = [Fault(MANIFEST_PUT, 503, times=2), Fault(DATA_PUT, 500, times=2)]
    started = time.monotonic()
    report = collection.enroll("Genus_species5", [photo(500), photo(501)])
    record_property("retried_write_s", round(time.monotonic() - started, 3))
    assert report.added == 2
    assert all(f.hits == f.times for f in s3_env.faults)  # the errors did happen
    assert stored_names(collection.store.uri) == before | {"p500.png", "p501.png"}


@pytest.mark.parametrize("status", [503, 500])
def test_an_object_store_that_keeps_failing_fails_the_write_whole_and_then_recovers(
    s3_env, collection, status, record_property
):
    before = acknowledged_names(collection)
    s3_env.faults = [Fault(MANIFEST_PUT, status)]
    started = time.monotonic()
    with pytest.raises(StoreWriteError) as error:
        collection.enroll("Genus_species5", [photo(600), photo(601)])
    gave_up = time.monotonic() - started
    message = str(error.value)
    assert "nothing was added" in message and "object store" in message and "\n" not in message
    assert gave_up < 60
    assert stored_names(collection.store.uri) == before  # nothing of the failed write
    assert len(collection.catalogue) == len(before)
    s3_env.faults = []  # the store recovers: the same request, sent again, lands
    started = time.monotonic()
    assert collection.enroll("Genus_species5", [photo(600), photo(601)]).added == 2
    record_property("failed_write_s", round(gave_up, 3))
    record_property("recover_s", round(time.monotonic() - started, 3))
    record_property("acknowledged", len(before) + 2)
    assert stored_names(collection.store.uri) == before | {"p600.png", "p601.png"}


def test_a_commit_that_times_out_is_whole_or_absent_and_refresh_takes_it_in(
    s3_env, collection, record_property
):
    before = acknowledged_names(collection)
    batch = {"p700.png", "p701.png"}
    # the manifest PUT reaches the server only after the client gave up (AWS_TIMEOUT=1s)
    s3_env.faults = [Fault(MANIFEST_PUT, status=0, delay=2.5, times=1)]
    started = time.monotonic()
    with pytest.raises(StoreWriteError, match="did not answer in time"):
        collection.enroll("Genus_species7", [photo(700), photo(701)], calibrate=False)
    record_property("failed_write_s", round(time.monotonic() - started, 3))
    time.sleep(3)  # the delayed request finishes on the server meanwhile
    stored = stored_names(collection.store.uri)
    assert before <= stored  # every acknowledged write
    assert batch <= stored or not (batch & stored)  # the timed-out one whole, or not at all
    started = time.monotonic()
    collection.index.refresh()
    record_property("recover_s", round(time.monotonic() - started, 3))
    record_property("timed_out_write_landed", batch <= stored)
    assert acknowledged_names(collection) == stored
    assert len(collection.catalogue) == len(stored)  # the running process sees what the store holds
    report = collection.enroll("Genus_species7", [photo(700), photo(701)])  # sent again
    assert report.added + len(report.duplicates) == 2  # landed now, or found as landed
    assert stored_names(collection.store.uri) == before | batch
