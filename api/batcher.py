"""Micro-batching of concurrent embedding requests: one forward pass for many photos.

Requests hand their decoded photos to :meth:`EmbeddingBatcher.submit` and get a future. One
worker thread takes the first waiting request, collects whatever else arrives within
``max_wait_ms`` (up to ``max_images`` photos), embeds them all in one call and hands each
request its rows. Inference therefore never runs on the event loop, and under load the model
sees batches instead of single photos.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

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
    ) -> None:
        """``on_batch(images, seconds)`` is called after every forward pass (for metrics)."""
        self._embed = embed
        self.max_wait = max_wait_ms / 1000.0
        self.max_images = max(1, max_images)
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> EmbeddingBatcher:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="shellid-embedding-batcher", daemon=True
                )
                self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work, then end the worker thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def submit(self, images: Sequence[Image.Image]) -> Future:
        """Queue ``images``; the future resolves to their ``(len(images), dim)`` embeddings."""
        future: Future = Future()
        if self._thread is None:
            future.set_exception(BatcherStopped("the embedding batcher is not running"))
            return future
        self._queue.put(_Job(list(images), future))
        return future

    async def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Awaitable :meth:`submit` for request handlers."""
        return await asyncio.wrap_future(self.submit(images))

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
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, stopping = self._collect(job)
            self._embed_jobs(jobs)
            if stopping:
                self._drain()
                return

    def _drain(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._embed_jobs([job])
