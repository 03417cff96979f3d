"""One JSON error shape for every failure: ``{"detail": "...", "code": "...", "file": ...}``.

User mistakes (bad photos, unknown species, missing key, ...) become 4xx answers that say what
to fix; only genuine server faults answer 500, and those never leak a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedder import ImageIntakeError
from index.errors import (
    CollectionError,
    DuplicateImageError,
    EmptyCollectionError,
    InvalidQueryError,
    ModelMismatchError,
    ModelNotLoadedError,
    ModelSwitchedError,
    SpeciesNotFoundError,
    SpecimenNotFoundError,
    StoreChangedError,
    StoreError,
    StoreWriteError,
)

from .remedies import user_message

log = logging.getLogger("shellid.api")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="One sentence saying what went wrong and how to fix it.")
    code: str = Field(description="Machine-readable reason, e.g. 'not_an_image', 'unauthorized'.")
    file: str | None = Field(None, description="The uploaded file the error is about, if any.")


class ApiError(Exception):
    """An error answer raised from service code: HTTP status, code and message."""

    def __init__(self, status: int, code: str, detail: str, file: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.file = file


def error_response(
    status: int,
    code: str,
    detail: str,
    file: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(detail=detail, code=code, file=file)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


#: ``index.errors`` class -> (HTTP status, error code); a subclass answers as its nearest
#: listed ancestor, an unlisted one as :class:`CollectionError`.
INDEX_ERRORS: dict[type[CollectionError], tuple[int, str]] = {
    SpeciesNotFoundError: (404, "species_not_found"),
    SpecimenNotFoundError: (404, "specimen_not_found"),
    DuplicateImageError: (409, "image_under_other_species"),
    EmptyCollectionError: (409, "empty_collection"),
    ModelMismatchError: (409, "model_mismatch"),
    ModelNotLoadedError: (409, "model_not_loaded"),
    InvalidQueryError: (422, "invalid_query"),
    StoreChangedError: (409, "store_changed"),
    ModelSwitchedError: (503, "model_switched"),
    StoreWriteError: (503, "store_write_failed"),
    StoreError: (500, "store_error"),
    CollectionError: (400, "collection_error"),
}


#: seconds a client is told to wait (``Retry-After``) before sending a failed write again.
RETRY_AFTER_SECONDS = 5


def index_error_answer(exc: CollectionError) -> tuple[int, str]:
    """The (status, code) of an index error, by its class."""
    for cls in type(exc).__mro__:
        if cls in INDEX_ERRORS:
            return INDEX_ERRORS[cls]
    return INDEX_ERRORS[CollectionError]


#: Intake refusals (``embedder.ImageIntakeError.code``) answered 413 instead of 422: the
#: photo is readable but over a size or cost limit.
INTAKE_413_CODES = frozenset({"too_many_pixels", "too_costly"})

#: Error responses every route may give, for the OpenAPI schema.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key."},
    422: {"model": ErrorBody, "description": "Invalid request or unreadable image."},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    413: {"model": ErrorBody, "description": "Too many files, file or image too large."},
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def allowed_methods(request: Request) -> str:
    """Every method some route answers on this path (Starlette's 405 names only the first
    route's: ``GET`` for ``/v1/species/{name}``, which DELETE shares), plus OPTIONS."""
    methods: set[str] = {"OPTIONS"}
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


class ServerErrorAnswer:
    """Answer an unexpected exception with the JSON 500 here, inside the app, so the server
    keeps the connection alive (Starlette's outermost handler answers and then re-raises, and
    uvicorn then drops the keep-alive connection without saying so). An exception after the
    answer started is re-raised: only closing the connection can tell the client then."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(
                500, "internal_error", "internal server error; the server log has the details"
            )
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into :class:`ErrorBody` answers."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.detail, exc.file, headers)

    @app.exception_handler(ImageIntakeError)
    async def _bad_image(request: Request, exc: ImageIntakeError) -> JSONResponse:
        status = 413 if exc.code in INTAKE_413_CODES else 422
        return error_response(status, exc.code, str(exc), exc.source)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = exc.headers
        if exc.status_code == 405:
            allow = allowed_methods(request)
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": allow})
            headers = {**(headers or {}), "Allow": allow}
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(CollectionError)
    async def _collection_error(request: Request, exc: CollectionError) -> JSONResponse:
        status, code = index_error_answer(exc)
        if status >= 500:
            log.error(
                "%s on %s %s: %s",
                type(exc).__name__,
                request.method,
                request.url.path,
                user_message(exc),
            )
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
        return error_response(status, code, user_message(exc), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(
            500, "internal_error", "internal server error; the server log has the details"
        )
