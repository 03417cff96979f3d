"""Image intake: decode any common photo format into a clean RGB ``PIL.Image``.

Every rejection raises :class:`ImageIntakeError` with a machine-readable ``code`` and a
sentence a person can act on; callers (CLI, HTTP API) show the message, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .intake_limits import (
    DEFAULT_MAX_PIXELS,
    MIN_SIDE_PX,
    IntakeLimits,
)

try:  # HEIC/HEIF photos from phones, when the maintained plugin is installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except Exception:  # pragma: no cover - optional plugin
    HEIF_SUPPORTED = False

SUPPORTED_FORMATS = frozenset(
    {"JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO", "GIF"}
    | ({"HEIF", "HEIC"} if HEIF_SUPPORTED else set())
)

ImageSource = str | Path | bytes | BinaryIO


class ImageIntakeError(ValueError):
    """A file that cannot be used as a photo; ``code`` names the reason."""

    def __init__(self, code: str, message: str, source: str | None = None) -> None:
        self.code = code
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)
        self.reason = message


def _describe(source: ImageSource, name: str | None) -> str | None:
    if name:
        return name
    if isinstance(source, str | Path):
        return str(source)
    return None


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE_PX,
) -> Image.Image:
    """Decode ``source`` (path, bytes or binary file) into an RGB image.

    EXIF orientation is applied; grayscale, palette, alpha and CMYK images become RGB
    (transparent areas over white). Raises :class:`ImageIntakeError` for missing, empty,
    truncated, corrupt or non-image files, images smaller than ``min_side`` pixels on a side,
    and images over ``max_pixels`` (decompression bombs).
    """
    label = _describe(source, name)
    try:
        if isinstance(source, str | Path):
            path = Path(source)
            if not path.is_file():
                raise ImageIntakeError("not_found", "file not found", label)
            data = path.read_bytes()
        elif isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
        else:
            data = source.read()
    except OSError as exc:
        raise ImageIntakeError(
            "unreadable", f"cannot read file ({exc.strerror or exc})", label
        ) from None
    if not data:
        raise ImageIntakeError("empty", "the file is empty", label)
    return decode_image(data, label=label, max_pixels=max_pixels, min_side=min_side)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says, read without decoding pixels."""

    format: str
    width: int
    height: int
    nbytes: int
    progressive: bool = False


# ----------------------------------------------------------------------------- cost model
#: Estimated milliseconds of one CPU core (the 2-core development CPU, Pillow 13) per unit of
#: work, measured with time.process_time over worst-case content (noise, black fields,
#: Paeth-filtered PNG). ``mp`` = megapixels of the full image, ``decoded_mp`` = megapixels
#: actually decoded (JPEG decodes at 1/2, 1/4 or 1/8 scale when that is still large enough),
#: ``mb`` = megabytes of the file.
FORWARD_MS = 12.0  # one forward pass of the default backbone at 224 px (ONNX, 1 thread)
RESIZE_MS_PER_DECODED_MP = 15.0  # RGB conversion, box reduce + Lanczos to the stored size
JPEG_MS = {"mp": 0.4, "mb": 11.0, "decoded_mp": 12.0}
PROGRESSIVE_JPEG_MS = {"mp": 4.0, "mb": 16.0, "decoded_mp": 12.0}
#: formats decoded at full size: (milliseconds per megapixel, per megabyte of file); WebP and
#: HEIF decoding grows with the entropy coded (noise at quality 100 costs 5x a smooth photo).
FULL_DECODE_MS = {
    "PNG": (22.0, 0.0),
    "TIFF": (22.0, 0.0),  # may be deflate/LZW-compressed: as PNG
    "GIF": (12.0, 0.0),
    "BMP": (3.0, 0.0),
    "WEBP": (12.0, 55.0),
    "HEIF": (20.0, 100.0),
    "HEIC": (20.0, 100.0),
}
DEFAULT_FULL_DECODE_MS = (30.0, 100.0)

#: The reference "normal photo": a 12-megapixel phone JPEG (4032 x 3024, quality 90, 2.3 MB)
#: and what it costs, measured (decode at 1/4 scale + resize: 32 ms; forward pass: 12 ms);
#: the unit of :attr:`IntakeLimits.max_cost`. The coefficients above err on the costly side,
#: the unit does not, so an accepted image costs at most ``max_cost`` normal photos.
NORMAL_PHOTO = ImageHeader("JPEG", 4032, 3024, 2_300_000)
NORMAL_PHOTO_MS = 45.0


def reduced_size(header: ImageHeader, target: tuple[int, int] | None) -> tuple[int, int]:
    """Size a JPEG is decoded at when ``target`` (the size it will be resized to) is known:
    the smallest of 1/1, 1/2, 1/4, 1/8 scale that still covers ``target`` (Pillow's draft);
    other formats decode at full size."""
    width, height = header.width, header.height
    if header.format not in ("JPEG", "MPO") or target is None:
        return width, height
    fits = min(width // max(1, target[0]), height // max(1, target[1]))  # as Pillow's draft
    scale = next(c for c in (8, 4, 2, 1) if fits >= c or c == 1)
    return -(-width // scale), -(-height // scale)


def estimate_ms(header: ImageHeader, target: tuple[int, int] | None = None) -> float:
    """Estimated CPU milliseconds to decode the image, resize it to ``target`` and embed it."""
    mp = header.width * header.height / 1e6
    dw, dh = reduced_size(header, target)
    decoded_mp = dw * dh / 1e6
    if header.format in ("JPEG", "MPO"):
        rates = PROGRESSIVE_JPEG_MS if header.progressive else JPEG_MS
        decode = rates["mp"] * mp + rates["mb"] * header.nbytes / 1e6
        decode += rates["decoded_mp"] * decoded_mp
    else:
        per_mp, per_mb = FULL_DECODE_MS.get(header.format, DEFAULT_FULL_DECODE_MS)
        decode = per_mp * mp + per_mb * header.nbytes / 1e6
    return FORWARD_MS + decode + RESIZE_MS_PER_DECODED_MP * decoded_mp


def estimate_cost(header: ImageHeader, target: tuple[int, int] | None = None) -> float:
    """Estimated cost of decoding, resizing and embedding an image, in normal photos."""
    return estimate_ms(header, target) / NORMAL_PHOTO_MS


def read_header(data: bytes, label: str | None = None) -> tuple[Image.Image, ImageHeader]:
    """Open encoded bytes lazily (no pixel decoded); ImageIntakeError when not an image."""
    try:  # Pillow's own bomb check (at 2x Image.MAX_IMAGE_PIXELS) may refuse it first
        probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageIntakeError(
            "too_many_pixels", f"image is too large (possible decompression bomb: {exc})", label
        ) from None
    except UnidentifiedImageError:
        raise ImageIntakeError(
            "not_an_image", "not an image file (or a format that cannot be decoded)", label
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageIntakeError("corrupt", f"the image header is corrupt ({exc})", label) from None
    width, height = probe.size
    progressive = bool(probe.info.get("progressive") or probe.info.get("progression"))
    header = ImageHeader((probe.format or "").upper(), width, height, len(data), progressive)
    return probe, header


def check_header(
    header: ImageHeader,
    limits: IntakeLimits,
    label: str | None = None,
    target: tuple[int, int] | None = None,
) -> float:
    """Refuse an image from its header alone; returns its estimated cost (normal photos).

    Raises ImageIntakeError: ``unsupported_format``; ``too_small`` (a side under
    ``min_side``); ``bad_aspect_ratio``; ``too_many_pixels`` (over ``max_pixels`` or a side
    over ``max_side``); ``too_costly`` (estimated work over ``max_cost``).
    """
    width, height = header.width, header.height
    if header.format and header.format not in SUPPORTED_FORMATS:
        raise ImageIntakeError(
            "unsupported_format",
            f"{header.format} images are not supported; use JPEG, PNG, WebP, TIFF or BMP",
            label,
        )
    if min(width, height) < limits.min_side:
        raise ImageIntakeError(
            "too_small",
            f"image is {width}x{height} pixels; at least {limits.min_side} px per side is needed",
            label,
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ImageIntakeError(
            "bad_aspect_ratio",
            f"image is {width}x{height} pixels, {ratio:.0f} times longer than wide; at most "
            f"{limits.max_aspect_ratio:g}:1 is accepted (crop it to the specimen)",
            label,
        )
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageIntakeError(
            "too_many_pixels",
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} pixels and {limits.max_side:,} px per side (possible "
            "decompression bomb); downscale it first",
            label,
        )
    cost = estimate_cost(header, target)
    if cost > limits.max_cost:
        kind = f"progressive {header.format}" if header.progressive else header.format
        raise ImageIntakeError(
            "too_costly",
            f"a {width}x{height} {kind or 'image'} costs about {cost:.1f} times a normal "
            f"photo to decode, over the limit of {limits.max_cost:g}; send a smaller image "
            "(a baseline JPEG costs least)",
            label,
        )
    return cost


def decode_image(
    data: bytes,
    *,
    label: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE_PX,
    limits: IntakeLimits | None = None,
    target: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode encoded image bytes into RGB; see :func:`load_image` for the checks applied.

    ``limits`` (default: only ``max_pixels`` and ``min_side``, as for reading datasets; the
    service and enrolment pass :class:`IntakeLimits`) are checked from the header before any
    pixel is decoded (:func:`check_header`). ``target``: the size the caller will resize the
    image to (a JPEG is then decoded at the smallest 1/2^k scale that still covers it, and
    costed so); the result is at least that large.
    """
    if limits is None:
        limits = IntakeLimits(
            max_pixels=max_pixels,
            max_side=max_pixels,
            min_side=min_side,
            max_aspect_ratio=float("inf"),
            max_cost=float("inf"),
        )
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    probe, header = read_header(data, label)
    check_header(header, limits, label, target)
    try:
        if target is not None and header.format in ("JPEG", "MPO"):
            probe.draft("RGB", target)
        probe.load()
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, struct.error) as exc:
        text = str(exc).lower()
        code = "truncated" if ("truncated" in text or "broken data" in text) else "corrupt"
        why = (
            "the image file is truncated"
            if code == "truncated"
            else f"the image data is corrupt ({exc})"
        )
        raise ImageIntakeError(code, why, label) from None

    image: Image.Image = probe
    with contextlib.suppress(Exception):  # broken EXIF must not reject a fine photo
        image = ImageOps.exif_transpose(image) or image
    image = to_rgb(image, label)
    if min(image.size) < limits.min_side:
        raise ImageIntakeError(
            "too_small",
            f"image is {image.size[0]}x{image.size[1]} pixels; "
            f"at least {limits.min_side} px per side is needed",
            label,
        )
    return image


#: Modes with an alpha band (premultiplied ones too: ``La``, ``RGBa``).
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def to_rgb(image: Image.Image, label: str | None = None) -> Image.Image:
    """Convert any PIL mode (L, P, RGBA, La, CMYK, I;16, F, ...) to RGB; alpha composited on
    white. A mode Pillow cannot convert raises ImageIntakeError ``unsupported_mode``."""
    try:
        return _to_rgb(image)
    except (ValueError, OSError, TypeError) as exc:
        raise ImageIntakeError(
            "unsupported_mode",
            f"images of pixel mode {image.mode} cannot be used ({exc}); save it as an 8-bit "
            "RGB or grayscale JPEG or PNG",
            label,
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode == "La":  # associated (premultiplied) alpha: Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit grayscale (TIFF scans) and float: stretch to 8 bit before conversion.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low = float(array.min()) if image.mode == "F" else 0.0
        span = (float(array.max()) - low) or 1.0
        image = Image.fromarray(((array - low) / span * 255.0).clip(0, 255).astype("uint8"))
    return image.convert("RGB")


def is_grayscale(image: Image.Image, tolerance: int = 6) -> bool:
    """True when an RGB image carries no colour (all channels within ``tolerance``)."""
    import numpy as np

    array = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
    spread = array.max(axis=2) - array.min(axis=2)
    return bool(np.percentile(spread, 99) <= tolerance)
