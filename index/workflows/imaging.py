"""The one intake of photos (enrolment and queries alike), and images as the store keeps
them: a normalised JPEG copy (what enrollment and ``reindex`` embed), a small JPEG thumbnail
(what answers show) and the SHA-256 of the original bytes (what duplicate detection compares).

:func:`accept_image` decides once whether a photo is usable: its header is checked against
:class:`embedder.intake.IntakeLimits` (sides, aspect ratio, pixels, estimated cost) before any
pixel is decoded, then it is decoded (JPEG at a reduced scale) straight to the normalised size.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from embedder.intake import (
    ImageHeader,
    ImageIntakeError,
    IntakeLimits,
    check_header,
    decode_image,
    read_header,
)

from ..specimens import StoredPhoto

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
class AcceptedImage:
    """A photo the intake accepted: its name, SHA-256 of the uploaded bytes, the original size
    and the decoded image at :func:`storage_size` (what queries embed, what enrolment stores)."""

    name: str
    sha256: str
    image: Image.Image
    width: int
    height: int
    cost: float  # estimated, in normal photos (embedder.intake.estimate_cost)


@dataclass
class PreparedImage(StoredPhoto):
    """One image ready to enroll: what the store keeps of it, and the image to embed."""

    image: Image.Image  # decoded from `stored`, exactly what reindex will see


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
    """The image at :func:`storage_size` (queries get the same scale as enrolled images);
    never upscaled. Large images are box-reduced first (Pillow's ``reducing_gap``), so the
    cost grows with the input no faster than its decoding."""
    size = storage_size(*image.size)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def accept_image(name: str, data: bytes, limits: IntakeLimits | None = None) -> AcceptedImage:
    """Accept or refuse one photo (ImageIntakeError naming the reason), the same way for
    enrolment and queries: header checks and cost estimate first, then decoding straight to
    the normalised size."""
    limits = limits or IntakeLimits()
    if not data:
        raise ImageIntakeError("empty", "the file is empty", name)
    _, header = read_header(data, name)
    target = storage_size(header.width, header.height)
    cost = check_header(header, limits, name, target)
    if min(target) < limits.min_side:  # only with a max_aspect_ratio over 2048 / min_side
        raise ImageIntakeError(
            "too_small",
            f"image is {header.width}x{header.height} pixels: {target[0]}x{target[1]} once "
            f"scaled to the stored size, under {limits.min_side} px per side",
            name,
        )
    image = normalise_size(decode_image(data, label=name, limits=limits, target=target))
    return AcceptedImage(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        image=image,
        width=header.width,
        height=header.height,
        cost=cost,
    )


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def make_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """JPEG thumbnail whose longer side is at most ``side`` pixels."""
    thumb = image.copy()
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    return jpeg_bytes(thumb, THUMBNAIL_QUALITY)


def query_image(item: ImageInput, limits: IntakeLimits | None = None) -> Image.Image:
    """A photo to identify or search with (a path or a ``(name, bytes)`` pair), through the
    same intake as enrolment (:func:`accept_image`)."""
    return accept_image(*read_input(item), limits).image


def check_decoded(image: Image.Image, limits: IntakeLimits | None = None, label: str = "") -> None:
    """The header checks of :func:`accept_image` (sides, aspect ratio, pixels) on an image
    decoded elsewhere: its decoding cost is spent, the resize and embedding are still to
    come. Raises ImageIntakeError."""
    limits = (limits or IntakeLimits()).model_copy(update={"max_cost": float("inf")})
    check_header(ImageHeader("", image.width, image.height, 0), limits, label or None)


def prepare_image(name: str, data: bytes, limits: IntakeLimits | None = None) -> PreparedImage:
    """Accept an uploaded or read image (:func:`accept_image`; ImageIntakeError when
    unusable) and make its stored copy and thumbnail."""
    return prepare_accepted(accept_image(name, data, limits))


def as_stored(image: Image.Image, label: str = "") -> tuple[Image.Image, bytes]:
    """``(image, stored JPEG)``: a normalised-size image as the store keeps it, decoded back
    from its stored copy. Enrolled photos are embedded from it (exactly what ``reindex`` will
    see) and so are queries, so a photo asked is embedded as it would be once enrolled."""
    stored = jpeg_bytes(image, STORED_QUALITY)
    return decode_image(stored, label=label or None), stored


def prepare_accepted(accepted: AcceptedImage) -> PreparedImage:
    """The stored copy and thumbnail of an accepted image; the image to embed is decoded
    back from the stored copy (:func:`as_stored`)."""
    resized = accepted.image
    image, stored = as_stored(resized, accepted.name)
    return PreparedImage(
        name=accepted.name,
        sha256=accepted.sha256,
        image=image,
        stored=stored,
        thumbnail=make_thumbnail(resized),
        width=accepted.width,
        height=accepted.height,
    )
