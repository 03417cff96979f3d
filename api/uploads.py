"""Reading uploaded photos under the configured limits, with answers that name the problem.

Two layers: :class:`BodyLimitMiddleware` counts the bytes of every request body as they arrive
(``Content-Length`` or chunked) and answers 413 as soon as a body passes what the limits allow,
before the multipart parser spools it to disk; :func:`read_uploads` then checks the count and
size of the photos and passes each through the one intake
(:func:`index.workflows.imaging.accept_image`: header checks and cost estimate, then decoding
straight to the normalised size).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedder import ImageIntakeError
from index.workflows.imaging import AcceptedImage, accept_image

from .errors import ApiError, error_response
from .settings import ServiceSettings

#: Bytes a multipart request may add around its files (boundaries, headers, form fields).
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class Upload:
    """One accepted photo: its name, raw bytes and the intake's result (``image``: RGB at the
    normalised size, what is embedded)."""

    name: str
    data: bytes
    accepted: AcceptedImage

    @property
    def image(self) -> Image.Image:
        return self.accepted.image


def request_byte_limit(settings: ServiceSettings, files: int) -> int:
    """Largest acceptable request body for ``files`` photos."""
    return files * settings.max_file_bytes + MULTIPART_OVERHEAD


def files_allowed(settings: ServiceSettings, method: str, path: str) -> int:
    """Most photos a request to ``path`` may carry (enrolment or query)."""
    if method == "POST" and path.startswith("/v1/species/") and path.endswith("/images"):
        return settings.max_enroll_files
    return settings.max_query_files


class RequestBodyTooLarge(Exception):
    """Raised from ``receive`` once a request body passes its limit."""


class BodyLimitMiddleware:
    """Answer 413 for a request body over the upload limits, from ``Content-Length`` before
    reading, and otherwise while it streams in (chunked bodies too): the body is counted as
    the app reads it, and the first byte over the limit stops the request. The answer says
    ``Connection: close`` so the server does not read the rest of the body."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.settings = settings

    def _refusal(self, size: int | None, limit: int, files: int):
        settings = self.settings
        what = f"request is {size / 1e6:.1f} MB" if size is not None else "request is larger"
        return error_response(
            413,
            "request_too_large",
            f"{what}; the limit is {limit / 1e6:.1f} MB ({files} photos of at most "
            f"{settings.max_file_bytes / 1e6:.1f} MB)",
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        files = files_allowed(self.settings, scope["method"], scope["path"])
        limit = request_byte_limit(self.settings, files)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await self._refusal(int(length), limit, files)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise RequestBodyTooLarge(f"request body over {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the cut body is replaced by the 413 below
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refusal(None, limit, files)(scope, receive, send)


async def read_uploads(
    files: list[UploadFile] | None, settings: ServiceSettings, max_files: int
) -> list[Upload]:
    """Check count and sizes, then accept or refuse every photo (off the event loop).

    Raises :class:`ApiError` 422 for no file, 413 for too many or too large files, and lets
    :class:`embedder.ImageIntakeError` through (422, or 413 for too many pixels or too costly
    an image).
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
    limits = settings.intake_limits()
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
        accepted = await run_in_threadpool(accept_image, name, data, limits)
        uploads.append(Upload(name, data, accepted))
    return uploads


def _too_large(name: str, size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"{name}: file is {size / 1e6:.1f} MB; the limit is {limit / 1e6:.1f} MB per photo",
        file=name,
    )
