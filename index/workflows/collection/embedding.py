"""Photos to vectors with a collection's model: in chunks with a progress bar when there are
many, and every stored copy of a collection re-embedded by a new model (``reindex``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from embedder.intake import ImageIntakeError, decode_image

from ...errors import StoreError
from ...store import SpecimenStore
from ..models import ImageEmbedder

#: photos embedded per call when a progress bar is drawn
EMBED_CHUNK = 64


def embed_photos(
    embedder: ImageEmbedder,
    images: Sequence[Image.Image],
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """``(len(images), dim)`` float32 vectors of ``images``; with ``progress`` and more than
    :data:`EMBED_CHUNK` photos, embedded a chunk at a time under a progress bar."""
    if not images:
        return np.zeros((0, int(embedder.dim)), np.float32)
    if len(images) <= EMBED_CHUNK or not progress:
        return np.asarray(embedder.embed_images(images), np.float32).reshape(len(images), -1)
    parts = []
    with tqdm(total=len(images), desc=desc, unit="img") as bar:
        for start in range(0, len(images), EMBED_CHUNK):
            parts.append(embedder.embed_images(images[start : start + EMBED_CHUNK]))
            bar.update(len(parts[-1]))
    return np.concatenate(parts).astype(np.float32)


def stored_image(specimen_id: str, blob: bytes) -> Image.Image:
    """A stored normalised copy decoded: exactly the pixels enrollment embedded."""
    try:
        return decode_image(blob, label=specimen_id)
    except ImageIntakeError as exc:  # pragma: no cover - store damage
        raise StoreError(f"stored image {specimen_id} cannot be decoded ({exc.reason})") from None


def embed_blobs(embedder: ImageEmbedder, ids: list[str], blobs: list[bytes]) -> np.ndarray:
    """``(len(ids), dim)`` vectors of stored normalised copies (``blobs[i]`` is row ``ids[i]``'s)
    embedded by ``embedder``, a chunk at a time."""
    parts = [np.zeros((0, int(embedder.dim)), np.float32)]
    for start in range(0, len(ids), EMBED_CHUNK):
        chunk = zip(
            ids[start : start + EMBED_CHUNK], blobs[start : start + EMBED_CHUNK], strict=True
        )
        images = [stored_image(i, blob) for i, blob in chunk]
        parts.append(np.asarray(embedder.embed_images(images), np.float32))
    return np.concatenate(parts)


def embed_stored(
    store: SpecimenStore, embedder: ImageEmbedder, progress: bool = True
) -> tuple[list[str], np.ndarray]:
    """``(ids, vectors)`` of every photo ``store`` holds, embedded by ``embedder`` from its
    stored normalised copy (:meth:`SpecimenStore.iter_images`), a chunk at a time."""
    ids: list[str] = []
    parts: list[np.ndarray] = []
    with tqdm(total=store.count(), desc="re-embedding", unit="img", disable=not progress) as bar:
        for batch_ids, blobs in store.iter_images(EMBED_CHUNK):
            images = [stored_image(i, blob) for i, blob in zip(batch_ids, blobs, strict=True)]
            parts.append(np.asarray(embedder.embed_images(images), np.float32))
            ids += batch_ids
            bar.update(len(batch_ids))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    return ids, vectors
