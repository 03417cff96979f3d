"""``shellid embed --ray``: photo paths -> vectors on a pool of Ray actors."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embedder.settings import EmbedderSettings

from .cluster import (
    ModelSource,
    RayOptions,
    RunTiming,
    ray_session,
    run_on_actors,
    stamped,
    worker_embedder,
)


class _PathWorker:
    """Actor: photo paths -> vectors exactly as ``Embedder.embed_paths`` (``shellid embed``)."""

    def __init__(self, model: ModelSource, fingerprint: str, batch_size: int, cpus: float):
        self.embedder = worker_embedder(model, fingerprint, batch_size, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        began = time.time()
        paths = [str(p) for p in batch["path"]]
        result = self.embedder.embed_paths(paths, progress=False)
        vectors = np.zeros((len(paths), int(self.embedder.dim)), np.float32)
        position = {p: k for k, p in enumerate(paths)}
        for vector, path in zip(result.embeddings, result.paths, strict=True):
            vectors[position[str(path)]] = vector
        errors = np.array([result.errors.get(p, "") for p in paths], dtype=object)
        return stamped({"row": batch["row"], "error": errors, "vector": vectors}, began)


def embed_on_ray(
    paths: Sequence[Path],
    model: str | Path | None,
    fingerprint: str,
    options: RayOptions,
    settings: EmbedderSettings | None = None,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> tuple[np.ndarray, list[Path], dict[str, str]]:
    """``shellid embed`` on Ray: ``(vectors of the readable photos, their paths, errors by
    path)`` in the order of ``paths``, as ``Embedder.embed_paths`` gives them; the workers
    use ``settings``' runtime and cache folder (None: ``auto`` and the standard folder)."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    vectors: dict[int, np.ndarray] = {}
    errors: dict[str, str] = {}
    items = [{"row": r, "path": str(Path(p).expanduser().resolve())} for r, p in enumerate(paths)]
    with (
        ray_session(options, timing) as plan,
        tqdm(total=len(items), desc="embedding on Ray", unit="img", disable=not progress) as bar,
    ):
        timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
        results = run_on_actors(
            items,
            _PathWorker,
            plan,
            batch_size=options.batch_size,
            model=ModelSource.of(model, settings),
            fingerprint=fingerprint,
        )
        for out in results.iter_batches(batch_size=None, batch_format="numpy"):
            for n, row in enumerate(out["row"]):
                r = int(row)
                if out["error"][n]:
                    errors[str(paths[r])] = str(out["error"][n])
                else:
                    vectors[r] = out["vector"][n]
            bar.update(timing.saw(out))
    kept = sorted(vectors)
    timing.embedded = len(kept)
    timing.total_s = time.perf_counter() - started
    matrix = np.stack([vectors[r] for r in kept]) if kept else np.zeros((0, 0), np.float32)
    return matrix.astype(np.float32), [Path(paths[r]) for r in kept], errors
