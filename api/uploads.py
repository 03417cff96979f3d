"""Reading uploaded photos under the configured limits, with answers that name the problem."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from embedder import ImageIntakeError, decode_image

from .errors import ApiError
from .settings import ServiceSettings

#: Bytes a multipart request may add around its files (boundaries, headers, form fields).
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class Upload:
    """One uploaded photo: its name, raw bytes and decoded RGB image."""

    name: str
    data: bytes
    image: Image.Image


def request_byte_limit(settings: ServiceSettings, files: int) -> int:
    """Largest acceptable request body for ``files`` photos."""
    return files * settings.max_file_bytes + MULTIPART_OVERHEAD


async def read_uploads(
    files: list[UploadFile] | None, settings: ServiceSettings, max_files: int
) -> list[Upload]:
    """Check count and sizes, then decode every photo (off the event loop).

    Raises :class:`ApiError` 422 for no file, 413 for too many or too large files, and lets
    :class:`embedder.ImageIntakeError` through (422, or 413 for too many pixels).
    """
    files = [f for f in (files or []) if f is not None]
    if not files:
        raise ApiError(422, "no_images", "no photo uploaded; send them in the 'images' field")
    if len(files) > max_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} photos uploaded; at most {max_files} are accepted per request",
        )
    uploads: list[Upload] = []
    for index, upload in enumerate(files, start=1):
        name = upload.filename or f"photo {index}"
        size = upload.size
        if size is not None and size > settings.max_file_bytes:
            raise _too_large(name, size, settings.max_file_bytes)
        data = await upload.read(settings.max_file_bytes + 1)
        if len(data) > settings.max_file_bytes:
            raise _too_large(name, len(data), settings.max_file_bytes)
        if not data:
            raise ImageIntakeError("empty", "the file is empty", name)
        image = await run_in_threadpool(
            decode_image, data, label=name, max_pixels=settings.max_pixels
        )
        uploads.append(Upload(name, data, image))
    return uploads


def _too_large(name: str, size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"{name}: file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB per photo",
        file=name,
    )
