"""Batched embedding of images and image files, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .intake import ImageIntakeError, load_image
from .model import EmbeddingModel
from .transforms import eval_transform


@dataclass
class EmbeddingResult:
    """Embeddings of the files that loaded, and the reasons for those that did not."""

    embeddings: np.ndarray
    paths: list[Path]
    errors: dict[str, str] = field(default_factory=dict)


class _FileDataset(Dataset):
    def __init__(self, paths: Sequence[Path], transform) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index])
        except ImageIntakeError as exc:
            return index, None, exc.reason
        return index, self.transform(image), None


def _collate(items):
    return items


class Embedder:
    """Turns PIL images or files into L2-normalised float32 vectors with one model."""

    def __init__(self, model: EmbeddingModel, batch_size: int = 32, num_workers: int = 0) -> None:
        self.model = model.eval()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.transform = eval_transform(model.preprocess)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        return self.model(batch.to(self.device)).float().cpu().numpy()

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded RGB images; returns ``(len(images), dim)`` float32."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack(
                [
                    self.transform(im.convert("RGB"))
                    for im in images[start : start + self.batch_size]
                ]
            )
            chunks.append(self.embed_tensors(batch))
        return np.concatenate(chunks).astype(np.float32)

    def embed_paths(
        self, paths: Sequence[str | Path], progress: bool = True, desc: str = "embedding"
    ) -> EmbeddingResult:
        """Embed image files in batches; unreadable files are reported in ``errors``, not raised."""
        paths = [Path(p) for p in paths]
        loader = DataLoader(
            _FileDataset(paths, self.transform),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
        )
        vectors: list[np.ndarray] = []
        kept: list[Path] = []
        errors: dict[str, str] = {}
        with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
            for items in loader:
                good = [(i, t) for i, t, err in items if err is None]
                for i, _, err in items:
                    if err is not None:
                        errors[str(paths[i])] = err
                if good:
                    vectors.append(self.embed_tensors(torch.stack([t for _, t in good])))
                    kept += [paths[i] for i, _ in good]
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
    arrays = {
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
