"""Per-file inspection for the audit: decode with :mod:`embedder.intake`, sha256, a 256-bit
difference hash (dHash, for near-duplicate photos), colour mode and size."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from embedder.intake import ImageIntakeError, decode_image, is_grayscale


@dataclass
class FileInfo:
    """What the audit needs to know about one image file."""

    path: Path
    sha256: str = ""
    dhash: np.ndarray | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    grayscale: bool = False
    error_code: str = ""
    error: str = ""

    @property
    def readable(self) -> bool:
        return not self.error_code


HASH_SIDE = 16
HASH_BITS = HASH_SIDE * HASH_SIDE


def difference_hash(image: Image.Image) -> np.ndarray:
    """256-bit dHash as 32 bytes: 1 where a pixel is brighter than its right neighbour on a
    17 × 16 grayscale thumbnail. Resizing and re-encoding change few bits."""
    small = image.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    return np.packbits((pixels[:, 1:] > pixels[:, :-1]).ravel())


def inspect_file(path: Path) -> FileInfo:
    """Read and decode one file; never raises for a bad image (the problem goes in ``error``)."""
    info = FileInfo(path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        info.error_code, info.error = "unreadable", f"cannot read file ({exc.strerror or exc})"
        return info
    if not data:
        info.error_code, info.error = "empty", "the file is empty"
        return info
    info.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as raw:
            info.mode = raw.mode
    except Exception:  # decode_image below explains what is wrong
        info.mode = ""
    try:
        image = decode_image(data, label=str(path), min_side=1)
    except ImageIntakeError as exc:
        info.error_code, info.error = exc.code, exc.reason
        return info
    info.width, info.height = image.size
    info.grayscale = info.mode in ("L", "LA", "I", "I;16", "F", "1") or is_grayscale(image)
    info.dhash = difference_hash(image)
    return info


def hamming_pairs(
    hashes: np.ndarray, max_distance: int, block: int = 256
) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)`` with ``i < j`` whose packed bit hashes (rows of ``uint8``)
    differ in at most ``max_distance`` bits."""
    hashes = np.asarray(hashes, dtype=np.uint8)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        chunk = hashes[start : start + block]
        distance = np.bitwise_count(chunk[:, None, :] ^ hashes[None, :, :]).sum(axis=2)
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if start + r < c:
                pairs.append((start + r, c, int(distance[r, c])))
    return pairs
