"""Embeddings of real image folders, cached on disk so benchmark reruns skip the model.

Images are embedded exactly as :meth:`Collection.enroll` does (the normalised JPEG copy
of :func:`index.workflows.imaging.prepare_image`). The cache file is keyed by the model
fingerprint and a hash of the file list (relative path, size, mtime), so a changed folder or
model is re-embedded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError
from index.workflows.imaging import prepare_image, read_input

DEFAULT_CACHE = Path("/tmp/shellid-cache")


def _key(paths: Sequence[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def embed_files(
    embedder,
    paths: Sequence[Path],
    root: Path,
    name: str,
    cache_dir: Path = DEFAULT_CACHE,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings (n, d) float32, ok (n,) bool)`` for ``paths`` under ``root``; files that
    cannot be read get a zero row and ``ok=False``. Cached under ``cache_dir``."""
    paths = [Path(p) for p in paths]
    cache = Path(cache_dir) / embedder.fingerprint / f"{name}-{_key(paths, root)}.npz"
    if cache.is_file():
        data = np.load(cache)
        return data["embeddings"], data["ok"]
    vectors = np.zeros((len(paths), embedder.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    batch: list = []
    rows: list[int] = []
    with tqdm(total=len(paths), desc=f"embedding {name}", unit="img") as bar:
        for i, path in enumerate(paths):
            try:
                batch.append(prepare_image(*read_input(path)).image)
                rows.append(i)
            except ImageIntakeError as exc:
                tqdm.write(f"skipped {path}: {exc.reason}")
            if len(batch) == batch_size or (i == len(paths) - 1 and batch):
                vectors[rows] = embedder.embed_images(batch)
                ok[rows] = True
                bar.update(len(batch))
                batch, rows = [], []
        bar.n = len(paths)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, embeddings=vectors, ok=ok)
    tmp.replace(cache)
    return vectors, ok
