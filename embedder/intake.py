"""Image intake: decode any common photo format into a clean RGB ``PIL.Image``.

Every rejection raises :class:`ImageIntakeError` with a machine-readable ``code`` and a
sentence a person can act on; callers (CLI, HTTP API) show the message, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF photos from phones, when the maintained plugin is installed.
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except Exception:  # pragma: no cover - optional plugin
    HEIF_SUPPORTED = False

MIN_SIDE_PX = 32
DEFAULT_MAX_PIXELS = 50_000_000
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


def decode_image(
    data: bytes,
    *,
    label: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE_PX,
) -> Image.Image:
    """Decode encoded image bytes; see :func:`load_image` for the checks applied."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = (probe.format or "").upper()
            width, height = probe.size
            if width * height > max_pixels:
                raise ImageIntakeError(
                    "too_many_pixels",
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (possible decompression bomb); downscale it first",
                    label,
                )
            if fmt and fmt not in SUPPORTED_FORMATS:
                raise ImageIntakeError(
                    "unsupported_format",
                    f"{fmt} images are not supported; use JPEG, PNG, WebP, TIFF or BMP",
                    label,
                )
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                probe.load()
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except ImageIntakeError:
        raise
    except UnidentifiedImageError:
        raise ImageIntakeError(
            "not_an_image", "not an image file (or a format that cannot be decoded)", label
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageIntakeError(
            "too_many_pixels", f"image exceeds {max_pixels:,} pixels (decompression bomb)", label
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
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
    image = to_rgb(image)
    if min(image.size) < min_side:
        raise ImageIntakeError(
            "too_small",
            f"image is {image.size[0]}x{image.size[1]} pixels; "
            f"at least {min_side} px per side is needed",
            label,
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, P, RGBA, CMYK, I;16, ...) to RGB; alpha composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "A" in image.getbands():
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (TIFF scans): scale to 8 bit before conversion.
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray((array / peak * 255.0).astype("uint8"), mode="L")
    elif image.mode == "F":
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        span = (array.max() - array.min()) or 1.0
        image = Image.fromarray(((array - array.min()) / span * 255).astype("uint8"), mode="L")
    return image.convert("RGB")


def is_grayscale(image: Image.Image, tolerance: int = 6) -> bool:
    """True when an RGB image carries no colour (all channels within ``tolerance``)."""
    import numpy as np

    array = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
    spread = array.max(axis=2) - array.min(axis=2)
    return bool(np.percentile(spread, 99) <= tolerance)
