"""Identify the specimen in 1–5 photos, or find the nearest enrolled photos."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from index.taxa import read_subset

from ..deps import ServiceDep, SettingsDep, require_read_key
from ..errors import UPLOAD_ERRORS, ErrorBody
from ..schemas import IdentifyResponse, SearchResponse
from ..settings import ServiceSettings, field_bound
from ..uploads import read_uploads

router = APIRouter(prefix="/v1", tags=["identify"], dependencies=[Depends(require_read_key)])

PHOTOS = File(
    ...,
    description="Photos of ONE specimen (e.g. dorsal and ventral views), JPEG/PNG/WebP/HEIC.",
    min_length=1,
)

SUBSET_QUERY = Query(
    None,
    description="Only consider these taxa: species, genus or family names (repeat the "
    "parameter; GET /v1/taxa lists them). An unknown name is answered 422 with the closest "
    "known ones.",
)
SUBSET_FORM = Form(
    None,
    alias="subset",
    description="The subset as a form field: one name per line (for a long list).",
)


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    summary="Identify the specimen shown in 1–5 photos",
    responses={
        **UPLOAD_ERRORS,
        409: {"model": ErrorBody, "description": "The collection is empty."},
        422: {
            "model": ErrorBody,
            "description": "A photo cannot be used, or a filter or subset names a taxon the "
            "collection does not know (the closest known ones are named).",
        },
    },
)
async def identify(
    settings: SettingsDep,
    service: ServiceDep,
    images: list[UploadFile] = PHOTOS,
    top_k: int | None = Query(
        None,
        ge=field_bound(ServiceSettings, "top_k", "ge"),
        le=field_bound(ServiceSettings, "top_k", "le"),
        description="Candidates to return (default: the server's SHELLID_TOP_K, 5 unless set).",
    ),
    region: str | None = Query(None, description="Only consider species of this region."),
    genus: str | None = Query(None, description="Only consider species of this genus."),
    family: str | None = Query(None, description="Only consider species of this family."),
    subset: list[str] | None = SUBSET_QUERY,
    subset_list: str | None = SUBSET_FORM,
) -> IdentifyResponse:
    names = [*(subset or []), *read_subset(subset_list or "")]
    started = time.perf_counter()
    uploads = await read_uploads(images, settings, settings.max_query_files)
    return await service.identify(
        uploads,
        time.perf_counter() - started,
        top_k=top_k or settings.top_k,
        region=region or None,
        genus=genus or None,
        family=family or None,
        subset=names if subset is not None or subset_list is not None else None,
    )


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="The enrolled photos most similar to 1–5 photos of one specimen",
    responses=UPLOAD_ERRORS,
)
async def search(
    settings: SettingsDep,
    service: ServiceDep,
    images: list[UploadFile] = PHOTOS,
    k: int = Query(10, ge=1, le=100, description="How many similar photos to return."),
) -> SearchResponse:
    started = time.perf_counter()
    uploads = await read_uploads(images, settings, settings.max_query_files)
    return await service.search(uploads, time.perf_counter() - started, k)
