"""Per-file inspection for the audit: decode with :mod:`embedder.intake`, sha256, a 64-bit
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
    dhash: int | None = None
    width: int = 0
    height: int = 0
    mode: str = ""
    grayscale: bool = False
    error_code: str = ""
    error: str = ""

    @property
    def readable(self) -> bool:
        return not self.error_code


def difference_hash(image: Image.Image) -> int:
    """64-bit dHash: 1 where a pixel is brighter than its right neighbour on a 9 × 8 grayscale
    thumbnail. Robust to resizing and re-encoding; differs in few bits for near copies."""
    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def inspect_file(path: Path) -> FileInfo:
    """Read and decode one file; never raises for a bad image (the problem goes in ``error``)."""
    info = FileInfo(path=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        info.error_code, info.error = "unreadable", f"cannot read file ({exc.strerror or exc})"
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
    hashes: np.ndarray, max_distance: int, block: int = 2048
) -> list[tuple[int, int, int]]:
    """Pairs ``(i, j, distance)`` with ``i < j`` whose 64-bit hashes differ in at most
    ``max_distance`` bits."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        chunk = hashes[start : start + block]
        distance = np.bitwise_count(chunk[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                pairs.append((i, c, int(distance[r, c])))
    return pairs
