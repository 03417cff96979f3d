"""``shellid reindex --ray``: the stored normalised copies re-embedded on a pool of Ray
actors, the vectors rewritten by the driver in one commit."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...errors import Remedy, StoreError
from ..collection import Collection
from ..models import loaded, make_embedder
from .cluster import (
    ModelSource,
    RayOptions,
    RunTiming,
    ray_session,
    run_on_actors,
    stamped,
    worker_embedder,
)


class _StoredWorker:
    """Actor: stored specimen ids -> vectors of their normalised copies (``reindex``)."""

    def __init__(
        self, uri: str, model: ModelSource, fingerprint: str, batch_size: int, cpus: float
    ):
        from ...store import SpecimenStore

        self.store = SpecimenStore(uri, create=False)
        self.embedder = worker_embedder(model, fingerprint, batch_size, cpus)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ...schema import where_in
        from ..collection import stored_image

        began = time.time()
        ids = [str(i) for i in batch["id"]]
        table = self.store.select(["id", "image"], where_in("id", ids))
        blobs = dict(zip(table["id"].to_pylist(), table["image"].to_pylist(), strict=True))
        missing = [i for i in ids if i not in blobs]
        if missing:
            raise StoreError(
                f"stored image {missing[0]} vanished during re-embedding",
                remedy=Remedy.REINDEX_AGAIN,
                store=self.store.uri,
            )
        images = [stored_image(i, blobs[i]) for i in ids]
        return stamped({"id": batch["id"], "vector": self.embedder.embed_images(images)}, began)


def reindex_on_ray(
    collection: Collection,
    model: str | Path | None,
    options: RayOptions,
    *,
    progress: bool = True,
    timing: RunTiming | None = None,
) -> int:
    """``shellid reindex`` on Ray: the workers read the stored normalised copies straight
    from the store (its URI must be reachable from every worker) and embed them with
    ``model`` (with the runtime and cache folder of the collection's settings); the driver
    rewrites the vectors in one commit (:meth:`Collection.reindex_embedded`). Returns the
    number of photos re-embedded."""
    timing = timing if timing is not None else RunTiming()
    started = time.perf_counter()
    timing.started_at = time.time()
    new_embedder = loaded(make_embedder(model, settings=collection.settings)[0])
    ids = [str(i) for i in collection.store.load_index(["id"])["id"].to_pylist()]
    vectors = np.zeros((len(ids), int(new_embedder.dim)), np.float32)
    if ids:
        position = {i: k for k, i in enumerate(ids)}
        uri = collection.store.uri
        if "://" not in uri:
            uri = str(Path(uri).expanduser().resolve())
        with (
            ray_session(options, timing) as plan,
            tqdm(
                total=len(ids), desc="re-embedding on Ray", unit="img", disable=not progress
            ) as bar,
        ):
            timing.workers, timing.gpus_per_worker = plan.workers, plan.gpus
            results = run_on_actors(
                [{"id": i} for i in ids],
                _StoredWorker,
                plan,
                batch_size=options.batch_size,
                uri=uri,
                model=ModelSource.of(model, collection.settings),
                fingerprint=new_embedder.fingerprint,
            )
            for out in results.iter_batches(batch_size=None, batch_format="numpy"):
                vectors[[position[str(i)] for i in out["id"]]] = out["vector"]
                bar.update(timing.saw(out))
    timing.embedded = timing.photos
    began = time.perf_counter()
    count = collection.reindex_embedded(model, ids, vectors, embedder=new_embedder)
    timing.commit_s, timing.commits = time.perf_counter() - began, 1
    timing.total_s = time.perf_counter() - started
    return count
