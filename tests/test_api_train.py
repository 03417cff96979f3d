"""POST /v1/train: a training job behind the write key, with progress a client polls, one at a
time, whose failure leaves the old model serving. The trainer is a stand-in with
``train_on_store``'s signature (the real one is tested in the training tests); the store, the
service and the HTTP layer are real, over the fast fake embedder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from api.app import create_app
from api.deps import training_jobs_for
from embedder.settings import TrainingConfig, TrainingError
from index.config import IndexSettings
from index.workflows.training import train_on_store
from tests.conftest import make_collection
from tests.fake_embedder import FakeEmbedder
from tests.test_api import assert_error, photos, query_photo, settings_for
from tests.test_train_on_store import enrolled, quick, weak_model, zhang8  # noqa: F401

WRITE = {"Authorization": "Bearer s3cret"}
FINISHED = {"installed", "not_installed", "failed"}


class Report(BaseModel):
    """``StoreTrainingReport``'s fields."""

    installed: bool
    reason: str
    species: int = 5
    photos: int = 20
    validation_photos: int = 10
    before: float | None = 0.6
    after: float | None = 0.8
    seconds: float = 1.0
    model_name: str = "fake"
    fingerprint: str | None = None


class FakeTrainer:
    """Reports each stage, then waits for the test to let it go on (``step()``), unless
    ``free``; then returns a report or raises ``fail``."""

    STAGES = (
        ("exporting photos", 0.1),
        ("epoch 1/2", 0.5),
        ("epoch 2/2", 0.3),
        ("re-embedding the store", 0.9),
    )

    def __init__(
        self, installed: bool = True, fail: Exception | None = None, free: bool = True
    ) -> None:
        self.installed, self.fail, self.free = installed, fail, free
        self.gate = threading.Semaphore(0)
        self.calls: list[tuple[Any, Any]] = []

    def step(self) -> None:
        self.gate.release()

    def __call__(self, collection, config, *, cache_dir, on_progress=None, **options):
        self.calls.append((collection, config))
        for stage, fraction in self.STAGES:  # 0.3 after 0.5: a trainer's slip must not show
            assert on_progress is not None
            on_progress(stage, fraction)
            options["log"](f"reached {stage}")
            if not self.free:
                assert self.gate.acquire(timeout=20), "the test never let the trainer go on"
        if self.fail is not None:
            raise self.fail
        reason = "installed: 80.0 % > 60.0 %" if self.installed else "not better: 55 % ≤ 60 %"
        return Report(installed=self.installed, reason=reason, fingerprint="new" * 4)


@pytest.fixture
def store(tmp_path) -> tuple[Path, Any]:
    """A store of the five generated species (2 specimens x 2 views), fake-embedded."""
    from index.workflows.collection import Collection

    root = make_collection(tmp_path / "photos", specimens=2, views=2, size=64)
    path = tmp_path / "store"
    collection = Collection.open(
        str(path), model=FakeEmbedder(), create=True, settings=IndexSettings.load()
    )
    collection.enroll_folder(root, progress=False)
    return path, collection


@contextmanager
def serving(store, trainer: FakeTrainer, **values) -> Iterator[tuple[TestClient, list[int]]]:
    """A client of the app over ``store`` whose training jobs run ``trainer``; the list counts
    the times the service was made to follow the store."""
    path, collection = store
    app = create_app(settings_for(path, **values), collection)
    with TestClient(app) as api:
        runtime = app.state.runtime
        jobs = runtime.training = training_jobs_for(runtime.service)
        jobs.trainer = trainer
        follows: list[int] = []
        follow = jobs.follow

        def counted() -> object:
            follows.append(1)
            return follow()

        jobs.follow = counted
        yield api, follows
        if jobs.thread is not None:  # a job left running must not outlive its store
            jobs.thread.join(60)


def wait_for(api: TestClient, url: str, done, headers=None, seconds: float = 20.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record = api.get(url, headers=headers).json()
        if done(record):
            return record
        time.sleep(0.02)
    raise AssertionError(f"{url} never got there: {record}")


def finished(api: TestClient, url: str, headers=None) -> dict:
    return wait_for(api, url, lambda r: r["state"] in FINISHED, headers)


def test_training_answers_202_with_a_job_whose_progress_only_grows_to_the_end(store):
    trainer = FakeTrainer(free=False)
    with serving(store, trainer) as (api, follows):
        answer = api.post("/v1/train", json={"epochs": 2, "seed": 3})
        assert answer.status_code == 202, answer.text
        job = answer.json()
        assert answer.headers["location"] == f"/v1/train/{job['id']}"
        assert job["state"] in {"queued", "running"} and job["settings"] == {"epochs": 2, "seed": 3}
        seen = []
        for stage, _ in FakeTrainer.STAGES:
            record = wait_for(api, answer.headers["location"], lambda r, s=stage: r["stage"] == s)
            assert record["state"] == "running" and record["error"] is None
            seen.append(record)
            trainer.step()
        fractions = [r["fraction"] for r in seen]
        assert fractions == sorted(fractions) and fractions[0] > 0, fractions
        assert all(r["eta_seconds"] is not None and r["eta_seconds"] >= 0 for r in seen)
        assert [r["elapsed_seconds"] for r in seen] == sorted(r["elapsed_seconds"] for r in seen)
        done = finished(api, answer.headers["location"])
        assert done["state"] == "installed" and done["fraction"] == 1.0
        assert done["eta_seconds"] == 0.0 and done["report"]["after"] == 0.8
        assert "reached epoch 2/2" in done["log"]
        assert follows == [1]  # the service caught up with the store once the model was in
        assert api.get("/v1/train").json()["id"] == job["id"]
    collection, config = trainer.calls[0]
    assert (config.epochs, config.seed) == (2, 3)
    assert collection is not store[1] and collection.store.uri == str(store[0])


def test_a_second_job_while_one_runs_is_409_naming_the_running_one(store):
    trainer = FakeTrainer(free=False)
    with serving(store, trainer) as (api, _):
        first = api.post("/v1/train").json()
        body = assert_error(api.post("/v1/train", json={"epochs": 3}), 409, "training_running")
        assert first["id"] in body["detail"]
        for _ in FakeTrainer.STAGES:
            trainer.step()
        assert finished(api, f"/v1/train/{first['id']}")["state"] == "installed"
        again = api.post("/v1/train")  # once it ended, another may start
        assert again.status_code == 202 and again.json()["id"] != first["id"]
        for _ in FakeTrainer.STAGES:
            trainer.step()
        finished(api, again.headers["location"])
        assert api.get(f"/v1/train/{first['id']}").json()["state"] == "installed"  # kept


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"epochs": 0}, "epochs"),
        ({"unfreeze": 9}, "unfreeze"),
        ({"seed": "many"}, "seed"),
        ({"lr": 0.1}, "lr"),
        ([1, 2], ""),
    ],
)
def test_bad_training_settings_are_422_naming_the_field(store, body, named):
    trainer = FakeTrainer()
    with serving(store, trainer) as (api, _):
        answer = assert_error(api.post("/v1/train", json=body), 422, "invalid_request")
        assert named in answer["detail"]
        assert_error(api.get("/v1/train"), 404, "training_job_not_found")
    assert trainer.calls == []


def test_changes_the_recipe_refuses_are_422_naming_the_field(store):
    class Recipe(BaseModel):
        epochs: int = Field(2, le=3)
        unfreeze: int = 0
        seed: int = 0

    with serving(store, FakeTrainer()) as (api, _):
        api.app.state.runtime.training.recipe = Recipe  # type: ignore[attr-defined]
        answer = assert_error(api.post("/v1/train", json={"epochs": 4}), 422, "invalid_request")
        assert answer["detail"] == "epochs: Input should be less than or equal to 3"
        assert api.post("/v1/train", json={"epochs": 3}).status_code == 202


def test_training_needs_the_write_key_and_its_status_the_read_key(store):
    with serving(store, FakeTrainer(), api_key="s3cret", read_key="look") as (api, _):
        missing = assert_error(api.post("/v1/train"), 401, "unauthorized")
        assert "API key" in missing["detail"]
        wrong = api.post("/v1/train", headers={"Authorization": "Bearer look"})
        assert assert_error(wrong, 401, "unauthorized")["detail"] == "wrong API key"
        job = api.post("/v1/train", headers=WRITE)
        assert job.status_code == 202
        url = job.headers["location"]
        assert_error(api.get(url), 401, "unauthorized")
        assert_error(api.get("/v1/train"), 401, "unauthorized")
        assert finished(api, url, {"Authorization": "Bearer look"})["state"] == "installed"


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (TrainingError("too few species to train on: 1 (at least 5)"), "too few species"),
        (RuntimeError("CUDA out of memory\n  File 'x.py', line 3"), "CUDA out of memory"),
    ],
)
def test_a_failing_job_says_why_in_one_line_and_the_old_model_answers_on(store, fail, error):
    with serving(store, FakeTrainer(fail=fail)) as (api, follows):
        before = api.post("/v1/identify", files=photos(query_photo(seed=901))).json()
        job = api.post("/v1/train")
        done = finished(api, job.headers["location"])
        assert done["state"] == "failed" and done["report"] is None
        assert done["error"].startswith(error) and "\n" not in done["error"]
        assert "Traceback" not in done["error"] and "File" not in done["error"]
        assert done["fraction"] < 1.0 and done["stage"] == FakeTrainer.STAGES[-1][0]
        assert follows == []
        after = api.post("/v1/identify", files=photos(query_photo(seed=901))).json()
        assert (
            after["candidates"] == before["candidates"] and after["decision"] == before["decision"]
        )
        assert api.get("/v1/info").json()["fingerprint"] == FakeEmbedder().fingerprint


def test_a_model_that_is_not_better_is_reported_and_the_service_is_left_alone(store):
    with serving(store, FakeTrainer(installed=False)) as (api, follows):
        done = finished(api, api.post("/v1/train").headers["location"])
        assert done["state"] == "not_installed" and done["fraction"] == 1.0
        assert done["report"]["reason"].startswith("not better")
        assert follows == []


def test_an_unknown_job_is_404(store):
    with serving(store, FakeTrainer()) as (api, _):
        assert_error(api.get("/v1/train"), 404, "training_job_not_found")
        assert_error(api.get("/v1/train/0123456789ab"), 404, "training_job_not_found")


def test_the_training_routes_are_in_a_valid_openapi_schema(store):
    from openapi_spec_validator import validate

    with serving(store, FakeTrainer()) as (api, _):
        schema = api.get("/openapi.json").json()
    validate(schema)
    start = schema["paths"]["/v1/train"]["post"]
    assert {"202", "401", "409", "422"} <= set(start["responses"])
    assert "TrainRequest" in schema["components"]["schemas"]
    assert "404" in schema["paths"]["/v1/train/{job_id}"]["get"]["responses"]


# ------------------------------------------------------------------ the real trainer
def test_a_store_the_real_trainer_refuses_fails_the_job_in_one_line(store, tmp_path):
    with serving(store, FakeTrainer()) as (api, follows):
        jobs = api.app.state.runtime.training  # type: ignore[attr-defined]
        jobs.trainer, jobs.cache_dir = train_on_store, tmp_path / "cache"
        jobs.recipe = lambda: TrainingConfig(val_fraction=0.0)
        done = finished(api, api.post("/v1/train").headers["location"])
        assert done["state"] == "failed" and follows == []
        assert done["error"].startswith("nothing to validate on: a validation fraction of 0")
        assert "\n" not in done["error"]
        assert api.get("/v1/info").json()["fingerprint"] == FakeEmbedder().fingerprint


@pytest.mark.shared
def test_training_through_http_installs_a_better_model_on_real_shells(zhang8, tmp_path):  # noqa: F811
    collection = enrolled(tmp_path / "store", weak_model(), zhang8)
    old = collection.store.info()["fingerprint"]
    with serving((tmp_path / "store", collection), FakeTrainer()) as (api, follows):
        jobs = api.app.state.runtime.training  # type: ignore[attr-defined]
        jobs.trainer, jobs.recipe, jobs.cache_dir = train_on_store, quick, tmp_path / "cache"
        answer = api.post("/v1/train", json={"epochs": 2}, headers=WRITE)
        assert answer.status_code == 202, answer.text
        seen = [answer.json()["fraction"]]
        done = wait_for(
            api,
            answer.headers["location"],
            lambda r: seen.append(r["fraction"]) or r["state"] in FINISHED,
            seconds=600,
        )
        assert done["state"] == "installed", done
        assert seen == sorted(seen) and seen[-1] == 1.0
        report = done["report"]
        assert report["after"] > report["before"] and report["validation_photos"] == 16
        assert report["fingerprint"] == collection.store.info()["fingerprint"] != old
        assert follows == [1]
        # once the job says installed, the service answers with the new model
        assert api.get("/v1/info").json()["fingerprint"] == report["fingerprint"]
        photo = zhang8[0].path
        answer = api.post("/v1/identify", files=[("images", (photo.name, photo.read_bytes()))])
        assert answer.status_code == 200, answer.text
        assert answer.json()["similar"][0]["score"] > 0.99  # the photo itself, new vectors
