"""Specimens kept back by ``shellid demo`` for trying identification (see api.try_these)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from .. import try_these
from ..deps import ServiceDep, require_read_key
from ..errors import COMMON_ERRORS, ApiError, ErrorBody
from ..schemas import TryTheseList

router = APIRouter(prefix="/v1", tags=["collection"])


@router.get(
    "/try-these",
    response_model=TryTheseList,
    summary="Specimens kept back from the demo collection, to try identifying",
    dependencies=[Depends(require_read_key)],
    responses=COMMON_ERRORS,
)
async def list_try_these(service: ServiceDep) -> TryTheseList:
    items = await run_in_threadpool(try_these.listing, service.catalogue)
    return TryTheseList.model_validate({"items": items})


@router.get(
    "/try-these/{item}/{view}",
    summary="One photo of a kept-back specimen",
    response_class=FileResponse,
    dependencies=[Depends(require_read_key)],
    responses={
        200: {"content": {"image/jpeg": {}}},
        **COMMON_ERRORS,
        404: {"model": ErrorBody, "description": "No such photo."},
    },
)
async def try_these_photo(item: int, view: int, service: ServiceDep) -> FileResponse:
    try:
        path, media_type = await run_in_threadpool(try_these.photo, service.catalogue, item, view)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return FileResponse(path, media_type=media_type)
