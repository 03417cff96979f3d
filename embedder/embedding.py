"""Batched embedding of images and image files, with a progress bar.

Images are decoded and transformed in a thread pool (PIL releases the GIL) while the model
embeds the previous batch; on the CPU the model runs in ONNX Runtime when available
(:mod:`embedder.runtime`), else in PyTorch.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from .intake import ImageIntakeError, load_image
from .model import EmbeddingModel
from .runtime import (
    RUNTIMES,
    OnnxRunner,
    OnnxRuntimeError,
    resolve_runtime,
    usable_cores,
    warn_fallback,
)
from .transforms import eval_transform

Item = TypeVar("Item")
Prepared = TypeVar("Prepared")

#: Batches decoded ahead of the one being embedded.
PREFETCH_BATCHES = 2
#: Up to this many images are transformed inline (a thread pool costs more than it saves).
INLINE_IMAGES = 2


class _ScaleAndNormalise:
    """``ToDtype(float32, scale=True)`` + ``Normalize(mean, std)`` of a uint8 CHW image in
    numpy, with the same float32 result. Torch would run each op on an OpenMP team of all
    cores: from several decoding threads at once, that is up to 10x slower on a busy CPU."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> np.ndarray:
        array = image.numpy().astype(np.float32, order="C")
        array *= np.float32(1 / 255)
        array -= self.mean
        array /= self.std
        return array


def array_transform(transform: Callable) -> Callable[[Image.Image], np.ndarray]:
    """``transform`` (an eval transform: PIL steps, ``ToImage``, ``ToDtype``, ``Normalize``)
    as a function from a PIL image to a float32 CHW array, with the tensor steps in numpy;
    any other transform is applied as it is."""
    steps = list(getattr(transform, "transforms", []))
    for k, step in enumerate(steps):
        if isinstance(step, T.ToImage) and len(steps) == k + 3:
            to_dtype, normalize = steps[k + 1 :]
            if (
                isinstance(to_dtype, T.ToDtype)
                and to_dtype.dtype == torch.float32
                and to_dtype.scale
                and isinstance(normalize, T.Normalize)
            ):
                to_uint8 = T.Compose(steps[: k + 1])
                scale = _ScaleAndNormalise(normalize.mean, normalize.std)
                return lambda image: scale(to_uint8(image))
    return lambda image: transform(image).numpy()


@dataclass
class EmbeddingResult:
    """Embeddings of the files that loaded, and the reasons for those that did not."""

    embeddings: np.ndarray
    paths: list[Path]
    errors: dict[str, str] = field(default_factory=dict)


class Embedder:
    """Turns PIL images or files into L2-normalised float32 vectors with one model.

    ``num_workers`` threads decode and transform images (default: the usable cores; 0 =
    inline). ``runtime`` (the settings' ``runtime``, passed down) is ``"auto"`` (ONNX
    Runtime for CPU models when installed, else PyTorch), ``"torch"`` or ``"onnx"``; the ONNX
    export is cached under ``cache_dir`` (default :func:`embedder.cache_dir.default_cache_dir`)
    and made on first use.
    ``threads`` is ONNX Runtime's thread count (default: the usable cores).
    """

    def __init__(
        self,
        model: EmbeddingModel,
        batch_size: int = 32,
        num_workers: int | None = None,
        runtime: str = "auto",
        cache_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        self.model = model.eval()
        self.batch_size = batch_size
        self.num_workers = usable_cores() if num_workers is None else max(0, num_workers)
        self.transform = eval_transform(model.preprocess)
        self.requested_runtime = runtime
        self.cache_dir = cache_dir
        self.threads = threads
        self._runtime: str | None = None
        self._runner: OnnxRunner | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @property
    def within_species_prior(self) -> dict[str, np.ndarray] | None:
        """The model's within-species covariance arrays (None when it carries none)."""
        return self.model.within_species_prior

    @property
    def runtime(self) -> str:
        """The runtime that embeds: ``"onnx"`` or ``"torch"`` (sets the runtime up if needed)."""
        self._onnx_runner()
        assert self._runtime is not None
        return self._runtime

    def _onnx_runner(self) -> OnnxRunner | None:
        """The ONNX runner when ONNX Runtime embeds (exported on first use), else ``None``."""
        with self._lock:
            if self._runtime == "torch":
                return None
            if self._runner is not None and self._runner.fingerprint == self.model.fingerprint:
                return self._runner
            if resolve_runtime(self.requested_runtime, self.device) == "torch":
                self._runtime = "torch"
                return None
            try:
                self._runner = OnnxRunner(self.model, self.cache_dir, self.threads)
            except OnnxRuntimeError as exc:
                if self.requested_runtime == "onnx":
                    raise
                warn_fallback(str(exc))
                self._runtime = "torch"
                return None
            self._runtime = "onnx"
            return self._runner

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a transformed ``(n, 3, S, S)`` batch; returns ``(n, dim)`` float32."""
        runner = self._onnx_runner()
        if runner is not None:
            return runner(batch.detach().cpu().numpy())
        return self.model(batch.to(self.device)).float().cpu().numpy()

    def _batches(
        self, items: Sequence[Item], prepare: Callable[[Item], Prepared]
    ) -> Generator[list[Prepared], None, None]:
        """``prepare`` over ``items`` in order, a batch at a time; with workers, a thread pool
        works on the next :data:`PREFETCH_BATCHES` batches while the caller embeds this one."""
        chunks = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if self.num_workers == 0 or len(items) <= INLINE_IMAGES:
            for chunk in chunks:
                yield [prepare(item) for item in chunk]
            return
        pool = ThreadPoolExecutor(
            min(self.num_workers, len(items)), thread_name_prefix="shellid-decode"
        )
        try:
            upcoming = iter(chunks)
            pending: deque[list[Future[Prepared]]] = deque(
                [pool.submit(prepare, item) for item in chunk]
                for chunk in itertools.islice(upcoming, PREFETCH_BATCHES + 1)
            )
            while pending:
                futures = pending.popleft()
                for chunk in itertools.islice(upcoming, 1):
                    pending.append([pool.submit(prepare, item) for item in chunk])
                yield [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays))  # numpy: no OpenMP team for a copy

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded RGB images; returns ``(len(images), dim)`` float32."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        to_array = array_transform(self.transform)

        def prepare(image: Image.Image) -> np.ndarray:
            return to_array(image.convert("RGB"))

        with contextlib.closing(self._batches(images, prepare)) as batches:
            chunks = [self.embed_tensors(self._stack(batch)) for batch in batches]
        return np.concatenate(chunks).astype(np.float32)

    def embed_paths(
        self, paths: Sequence[str | Path], progress: bool = True, desc: str = "embedding"
    ) -> EmbeddingResult:
        """Embed image files in batches; unreadable files are reported in ``errors``, not raised."""
        files = [Path(p) for p in paths]
        to_array = array_transform(self.transform)

        def load(index: int) -> tuple[int, np.ndarray | None, str | None]:
            try:
                image = load_image(files[index])
            except ImageIntakeError as exc:
                return index, None, exc.reason
            return index, to_array(image), None

        vectors: list[np.ndarray] = []
        kept: list[Path] = []
        errors: dict[str, str] = {}
        with (
            tqdm(total=len(files), desc=desc, unit="img", disable=not progress) as bar,
            contextlib.closing(self._batches(range(len(files)), load)) as batches,
        ):
            for items in batches:
                good = [(i, t) for i, t, _ in items if t is not None]
                for i, _, err in items:
                    if err is not None:
                        errors[str(files[i])] = err
                if good:
                    batch = self._stack([t for _, t in good])
                    vectors.append(self.embed_tensors(batch))
                    kept += [files[i] for i, _ in good]
                bar.update(len(items))
        embeddings = (
            np.concatenate(vectors).astype(np.float32)
            if vectors
            else np.zeros((0, self.dim), np.float32)
        )
        return EmbeddingResult(embeddings, kept, errors)


def save_embeddings(
    path: str | Path,
    embeddings: np.ndarray,
    labels: Sequence[str],
    paths: Sequence[str | Path],
    fingerprint: str = "",
    groups: Sequence[str] | None = None,
) -> Path:
    """Write an ``.npz`` with ``embeddings`` (float32), ``labels``, ``paths``, ``fingerprint``
    (and ``groups`` when given), atomically (temporary file, then rename). As with
    :func:`numpy.savez`, ``.npz`` is appended to a name without it."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "embeddings": np.asarray(embeddings, dtype=np.float32),
        "labels": np.asarray(list(labels), dtype=str),
        "paths": np.asarray([str(p) for p in paths], dtype=str),
        "fingerprint": np.asarray(fingerprint),
    }
    if groups is not None:
        arrays["groups"] = np.asarray(list(groups), dtype=str)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    tmp.replace(path)
    return path
