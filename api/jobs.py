"""Training jobs of a service (``POST /v1/train``): one at a time, in a background thread, with
progress a client polls.

A job opens its own :class:`~index.workflows.collection.Collection` on the service's store
(as ``shellid train --store`` in another process would), trains on it with
``index.workflows.training.train_on_store`` and, when that installs the new model (one store
commit), makes the service follow the store at once (``follow``). Until then, and whenever a
job fails or its model is not better, the service answers with the old model. Nothing here
knows HTTP: the routes (``api/routes/train.py``) map :class:`TrainingBusyError` to 409.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from embedder.settings import TrainingError

from .remedies import user_message

if TYPE_CHECKING:
    from embedder.settings import TrainingConfig
    from index.workflows.collection import Collection

log = logging.getLogger("shellid.api")

JobState = Literal["queued", "running", "installed", "not_installed", "failed"]
#: states a job ends in
FINISHED: frozenset[str] = frozenset({"installed", "not_installed", "failed"})
#: finished jobs kept for ``GET /v1/train/{id}`` (the oldest is forgotten first)
KEEP_FINISHED = 10


class Trainer(Protocol):
    """``index.workflows.training.train_on_store``'s signature."""

    def __call__(
        self,
        collection: Collection,
        config: TrainingConfig,
        *,
        cache_dir: Path,
        on_progress: Callable[[str, float], None] | None = None,
        show_bars: bool = True,
        log: Callable[[str], None] = print,
    ) -> Any: ...


class TrainingBusyError(Exception):
    """A training job is already queued or running (``job_id``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a training job is already running: {job_id}")
        self.job_id = job_id


def train_on_store(collection: Collection, config: TrainingConfig, **kwargs: Any) -> Any:
    """The real trainer (imported when a job runs: it brings torch)."""
    from index.workflows.training import train_on_store as train

    return train(collection, config, **kwargs)


def store_recipe() -> TrainingConfig:
    """The recipe store training starts from (a client changes a few of its fields)."""
    from embedder.settings import TrainingConfig

    return TrainingConfig()


def one_line(exc: BaseException) -> str:
    """What a client reads about a failed job: the error's first line, never a traceback."""
    text = user_message(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


@dataclass
class Job:
    """One training job's record (mutated by its thread under :attr:`TrainingJobs.lock`)."""

    id: str
    settings: dict[str, Any]
    created: datetime
    state: JobState = "queued"
    stage: str = "queued"
    fraction: float = 0.0
    started: float | None = None  # monotonic clock
    ended: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    log: list[str] = field(default_factory=list)

    def elapsed(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else now) - self.started

    def eta(self, now: float) -> float | None:
        """Seconds left, from the fraction done so far (None before any progress)."""
        if self.state in FINISHED:
            return 0.0
        if self.fraction <= 0.0:
            return None
        return self.elapsed(now) * (1.0 - self.fraction) / self.fraction

    def record(self, now: float) -> dict[str, Any]:
        """The record a client reads (``api.schemas.TrainingJobOut``'s fields)."""
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "fraction": round(self.fraction, 4),
            "elapsed_seconds": round(self.elapsed(now), 1),
            "eta_seconds": None if (eta := self.eta(now)) is None else round(eta, 1),
            "created": self.created,
            "settings": self.settings,
            "report": self.report,
            "error": self.error,
            "log": list(self.log[-20:]),
        }


class TrainingJobs:
    """The training jobs of one service: start one (refused while another runs), read them.

    ``open_collection``: a collection of its own on the service's store, for the job;
    ``follow``: makes the service answer with what the store now holds (called after a model
    was installed); ``trainer``: ``train_on_store`` or a stand-in with its signature;
    ``recipe``: the training config a client's changes apply to."""

    def __init__(
        self,
        open_collection: Callable[[], Collection],
        follow: Callable[[], object],
        cache_dir: Path,
        trainer: Trainer = train_on_store,
        recipe: Callable[[], TrainingConfig] = store_recipe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open_collection = open_collection
        self.follow = follow
        self.cache_dir = cache_dir
        self.trainer = trainer
        self.recipe = recipe
        self.clock = clock
        self.lock = threading.Lock()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.thread: threading.Thread | None = None

    def config(self, changes: dict[str, Any]) -> TrainingConfig:
        """The recipe with a client's ``changes``; a ``ValueError`` (pydantic's
        ``ValidationError``) naming the field when the result cannot work."""
        recipe = self.recipe()
        return type(recipe).model_validate({**recipe.model_dump(), **changes})

    def start(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Queue a job training with the recipe and a client's ``changes`` and start its
        thread; :class:`TrainingBusyError` while another job is unfinished, a ``ValueError``
        for changes that cannot work."""
        config = self.config(changes)
        with self.lock:
            for job in self.jobs.values():
                if job.state not in FINISHED:
                    raise TrainingBusyError(job.id)
            job = Job(id=uuid.uuid4().hex[:12], settings=changes, created=datetime.now(UTC))
            self.jobs[job.id] = job
            self._forget_old()
            self.thread = threading.Thread(
                target=self._run, args=(job, config), name=f"shellid-train-{job.id}", daemon=True
            )
            self.thread.start()
            return job.record(self.clock())

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            job = self.jobs.get(job_id)
            return None if job is None else job.record(self.clock())

    def latest(self) -> dict[str, Any] | None:
        with self.lock:
            if not self.jobs:
                return None
            return next(reversed(self.jobs.values())).record(self.clock())

    def _forget_old(self) -> None:
        finished = [key for key, job in self.jobs.items() if job.state in FINISHED]
        for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[key]

    def _update(self, job: Job, **values: Any) -> None:
        with self.lock:
            for name, value in values.items():
                setattr(job, name, value)

    def _progress(self, job: Job, stage: str, fraction: float) -> None:
        """The trainer's ``on_progress``: the fraction never goes back, nor past 1."""
        with self.lock:
            job.stage = str(stage)
            job.fraction = min(1.0, max(job.fraction, float(fraction)))

    def _log(self, job: Job, line: str) -> None:
        log.info("training %s: %s", job.id, line)
        with self.lock:
            job.log.append(str(line))

    def _run(self, job: Job, config: TrainingConfig) -> None:
        self._update(job, state="running", stage="opening the store", started=self.clock())
        try:
            report = self.trainer(
                self.open_collection(),
                config,
                cache_dir=self.cache_dir,
                on_progress=lambda stage, fraction: self._progress(job, stage, fraction),
                show_bars=False,
                log=lambda line: self._log(job, line),
            )
            installed = bool(report.installed)
            if installed:
                self._update(job, stage="switching the service to the new model")
                self.follow()
        except Exception as exc:  # the job fails; the service keeps its model
            if isinstance(exc, TrainingError):  # a store it cannot train on: said in one line
                log.warning("training job %s: %s", job.id, exc)
            else:
                log.exception("training job %s failed", job.id)
            self._update(job, state="failed", error=one_line(exc), ended=self.clock())
            return
        self._update(
            job,
            state="installed" if installed else "not_installed",
            stage="done",
            fraction=1.0,
            report=report.model_dump(mode="json"),
            ended=self.clock(),
        )
