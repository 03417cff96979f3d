"""Images as the store keeps them: a normalised JPEG copy (what enrollment and ``reindex``
embed), a small JPEG thumbnail (what answers show) and the SHA-256 of the original bytes
(what duplicate detection compares)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from embedder.intake import ImageIntakeError, decode_image

#: normalised copy: longer side at most this many pixels ...
STORED_MAX_SIDE = 512
#: ... unless that would make the shorter side smaller than this (elongated shells), ...
STORED_MIN_SHORT_SIDE = 256
#: ... and never longer than this.
STORED_HARD_MAX_SIDE = 2048
STORED_QUALITY = 90
THUMBNAIL_SIDE = 160
THUMBNAIL_QUALITY = 80

ImageInput = Path | str | tuple[str, bytes]


@dataclass
class PreparedImage:
    """One image ready to enroll."""

    name: str
    sha256: str
    image: Image.Image  # decoded from `stored`, exactly what reindex will see
    stored: bytes
    thumbnail: bytes
    width: int
    height: int


def read_input(item: ImageInput) -> tuple[str, bytes]:
    """``(name, bytes)`` of a path or a ``(name, bytes)`` pair; raises ImageIntakeError."""
    if isinstance(item, tuple):
        name, data = item
        return str(name), bytes(data)
    path = Path(item)
    try:
        return path.name, path.read_bytes()
    except FileNotFoundError:
        raise ImageIntakeError("not_found", "file not found", str(path)) from None
    except OSError as exc:
        raise ImageIntakeError(
            "unreadable", f"cannot read file ({exc.strerror or exc})", str(path)
        ) from None


def storage_size(width: int, height: int) -> tuple[int, int]:
    """Size of the normalised copy of a ``width`` x ``height`` image (never upscaled)."""
    long_side, short_side = max(width, height), min(width, height)
    scale = min(1.0, STORED_MAX_SIDE / long_side)
    if short_side * scale < STORED_MIN_SHORT_SIDE:
        scale = min(1.0, STORED_MIN_SHORT_SIDE / short_side)
    scale = min(scale, STORED_HARD_MAX_SIDE / long_side)
    return max(1, round(width * scale)), max(1, round(height * scale))


def normalise_size(image: Image.Image) -> Image.Image:
    """The image at :func:`storage_size` (queries get the same scale as enrolled images)."""
    size = storage_size(*image.size)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def make_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """JPEG thumbnail whose longer side is at most ``side`` pixels."""
    thumb = image.copy()
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return jpeg_bytes(thumb, THUMBNAIL_QUALITY)


def prepare_image(name: str, data: bytes) -> PreparedImage:
    """Decode and check an uploaded or read image (ImageIntakeError when unusable) and make
    its stored copy and thumbnail."""
    original = decode_image(data, label=name)
    resized = normalise_size(original)
    stored = jpeg_bytes(resized, STORED_QUALITY)
    image = decode_image(stored, label=name)
    return PreparedImage(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        image=image,
        stored=stored,
        thumbnail=make_thumbnail(resized),
        width=original.size[0],
        height=original.size[1],
    )
