"""Micro-batching of concurrent embedding requests, on one or more worker threads.

Requests hand their decoded photos to :meth:`EmbeddingBatcher.submit` and get a future. Each
worker thread takes the first waiting request, collects whatever else arrives within
``max_wait_ms`` (up to ``max_images`` photos), embeds them all in one call and hands each
request its rows. Inference never runs on the event loop; on a GPU the model sees batches
instead of single photos, and on a CPU several workers can run forward passes side by side.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

EmbedFunction = Callable[[Sequence[Image.Image]], np.ndarray]


@dataclass
class _Job:
    images: list[Image.Image]
    future: Future


class BatcherStopped(RuntimeError):
    """The batcher was stopped before it could embed the photos."""


class EmbeddingBatcher:
    """Collects photos from concurrent requests and embeds them together on one thread."""

    def __init__(
        self,
        embed: EmbedFunction,
        max_wait_ms: float = 3.0,
        max_images: int = 32,
        on_batch: Callable[[int, float], None] | None = None,
        workers: int = 1,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        """``on_batch(images, seconds)`` is called after every forward pass (for metrics);
        ``workers`` forward passes may run at the same time; ``thread_setup()`` runs first in
        each worker thread (per-thread settings such as torch's thread count)."""
        self._embed = embed
        self.max_wait = max_wait_ms / 1000.0
        self.max_images = max(1, max_images)
        self.workers = max(1, workers)
        self._on_batch = on_batch
        self._thread_setup = thread_setup
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> EmbeddingBatcher:
        with self._lock:
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._run, name=f"shellid-embedding-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for thread in self._threads:
                    thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work, then end the worker threads."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:  # one stop mark per worker, behind every job already queued
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout)
        while True:  # a request that slipped in while stopping gets an answer too
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.set_exception(BatcherStopped("the server is shutting down"))

    def submit(self, images: Sequence[Image.Image]) -> Future:
        """Queue ``images``; the future resolves to their ``(len(images), dim)`` embeddings."""
        future: Future = Future()
        if not self._threads:
            future.set_exception(BatcherStopped("the embedding batcher is not running"))
            return future
        self._queue.put(_Job(list(images), future))
        return future

    async def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Awaitable :meth:`submit` for request handlers."""
        return await asyncio.wrap_future(self.submit(images))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Blocking :meth:`submit`, for code running in a thread (the collection's calls)."""
        return self.submit(images).result()

    # ------------------------------------------------------------------ worker
    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus the jobs that arrive in time; the flag says a stop was requested."""
        jobs = [first]
        count = len(first.images)
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_images:
            remaining = deadline - time.perf_counter()
            try:
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if count + len(job.images) > self.max_images:
                self._embed_jobs(jobs)  # keep request boundaries: this job starts the next batch
                jobs, count = [], 0
            jobs.append(job)
            count += len(job.images)
        return jobs, False

    def _embed_jobs(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        images = [image for job in jobs for image in job.images]
        started = time.perf_counter()
        try:
            vectors = self._embed(images)
        except BaseException as exc:  # every waiting request gets the error, the worker lives on
            for job in jobs:
                job.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(images), time.perf_counter() - started)
        start = 0
        for job in jobs:
            job.future.set_result(vectors[start : start + len(job.images)])
            start += len(job.images)

    def _run(self) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, stopping = self._collect(job)
            self._embed_jobs(jobs)
            if stopping:
                return


class BatchedModel:
    """The collection's model with every embedding going through an :class:`EmbeddingBatcher`:
    an ``ImageEmbedder`` (``embed_images``, ``dim``, ``fingerprint``, ``name``) that the
    service builds its :class:`index.workflows.collection.Collection` with, so the API's
    photos take the same path as the command line's (``Collection.identify`` / ``search`` /
    ``enroll``)."""

    def __init__(self, model: Any, batcher: EmbeddingBatcher) -> None:
        self.model = model
        self.batcher = batcher

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    @property
    def fingerprint(self) -> str:
        return str(self.model.fingerprint)

    @property
    def name(self) -> str:
        from index.workflows.models import model_name

        return model_name(self.model)

    @property
    def within_species_prior(self) -> Any:
        return getattr(self.model, "within_species_prior", None)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.batcher.embed_images(images)
