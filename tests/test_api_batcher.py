"""The embedding micro-batcher: concurrent requests share forward passes, each gets its rows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from api.batcher import BatcherStopped, EmbeddingBatcher


def photo(width: int) -> Image.Image:
    return Image.new("RGB", (width, 40))


class RecordingEmbedder:
    """Embeds a photo as [its width]; records the size of every forward pass."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, images):
        self.batches.append(len(images))
        if self.fail_on is not None and any(im.size[0] == self.fail_on for im in images):
            raise RuntimeError("forward pass failed")
        time.sleep(self.delay)
        return np.array([[float(im.size[0])] for im in images], dtype=np.float32)


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_rows():
    embed = RecordingEmbedder()
    batcher = EmbeddingBatcher(embed, max_wait_ms=200, max_images=32).start()
    try:
        futures = [batcher.submit([photo(100 + i), photo(200 + i)]) for i in range(3)]
        results = [f.result(timeout=5) for f in futures]
    finally:
        batcher.stop()
    assert embed.batches == [6]
    for i, rows in enumerate(results):
        assert rows[:, 0].tolist() == [100 + i, 200 + i]


def test_batches_never_exceed_max_images_nor_split_a_request():
    embed = RecordingEmbedder()
    batcher = EmbeddingBatcher(embed, max_wait_ms=200, max_images=4).start()
    try:
        futures = [batcher.submit([photo(50 + i)] * 3) for i in range(3)]
        results = [f.result(timeout=5) for f in futures]
    finally:
        batcher.stop()
    assert embed.batches == [3, 3, 3]
    assert [r[0, 0] for r in results] == [50, 51, 52]


def test_single_request_is_not_held_longer_than_the_wait():
    batcher = EmbeddingBatcher(RecordingEmbedder(), max_wait_ms=20, max_images=32).start()
    try:
        started = time.perf_counter()
        batcher.submit([photo(64)]).result(timeout=5)
        elapsed = time.perf_counter() - started
    finally:
        batcher.stop()
    assert elapsed < 0.5


def test_a_failed_forward_pass_fails_its_requests_and_the_worker_goes_on():
    embed = RecordingEmbedder(fail_on=13)
    batcher = EmbeddingBatcher(embed, max_wait_ms=0, max_images=1).start()
    try:
        with pytest.raises(RuntimeError, match="forward pass failed"):
            batcher.submit([photo(13)]).result(timeout=5)
        assert batcher.submit([photo(77)]).result(timeout=5)[0, 0] == 77
    finally:
        batcher.stop()


def test_stop_finishes_queued_work_and_later_submits_are_refused():
    embed = RecordingEmbedder(delay=0.05)
    batcher = EmbeddingBatcher(embed, max_wait_ms=0, max_images=1).start()
    futures = [batcher.submit([photo(40 + i)]) for i in range(4)]
    batcher.stop()
    assert [f.result(timeout=5)[0, 0] for f in futures] == [40, 41, 42, 43]
    with pytest.raises(BatcherStopped):
        batcher.submit([photo(40)]).result(timeout=1)


def test_requests_from_many_threads_all_get_answers():
    embed = RecordingEmbedder(delay=0.01)
    batcher = EmbeddingBatcher(embed, max_wait_ms=5, max_images=8).start()
    answers: dict[int, float] = {}

    def client(i: int) -> None:
        answers[i] = float(batcher.submit([photo(32 + i)]).result(timeout=10)[0, 0])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        batcher.stop()
    assert answers == {i: 32 + i for i in range(24)}
    assert sum(embed.batches) == 24
    assert len(embed.batches) < 24  # some requests shared a forward pass


def test_several_workers_run_forward_passes_side_by_side():
    running, peak = [0], [0]
    lock = threading.Lock()

    def embed(images):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return np.array([[float(im.size[0])] for im in images], dtype=np.float32)

    batcher = EmbeddingBatcher(embed, max_wait_ms=0, max_images=1, workers=2).start()
    try:
        futures = [batcher.submit([photo(60 + i)]) for i in range(4)]
        assert [f.result(timeout=5)[0, 0] for f in futures] == [60, 61, 62, 63]
    finally:
        batcher.stop()
    assert peak[0] == 2
    with pytest.raises(BatcherStopped):
        batcher.submit([photo(40)]).result(timeout=1)


def test_each_worker_thread_runs_the_setup_first():
    seen: set[str] = set()
    batcher = EmbeddingBatcher(
        RecordingEmbedder(),
        workers=3,
        thread_setup=lambda: seen.add(threading.current_thread().name),
    ).start()
    try:
        batcher.submit([photo(40)]).result(timeout=5)
    finally:
        batcher.stop()
    assert seen == {f"shellid-embedding-{i}" for i in range(3)}
