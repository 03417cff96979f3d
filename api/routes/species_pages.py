"""What a species page shows: every photo of a species with its provenance, a page at a time,
and the stored copy of one photo (larger than the thumbnail)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..deps import ServiceDep, require_read_key
from ..errors import COMMON_ERRORS
from ..schemas import SpeciesPhotoPage
from .species import NOT_FOUND, SPECIES_NAME

router = APIRouter(prefix="/v1", tags=["collection"])

#: Photos per page unless asked otherwise, and the most one page may hold.
DEFAULT_PAGE = 60
MAX_PAGE = 200


@router.get(
    "/species/{name}/photos",
    response_model=SpeciesPhotoPage,
    summary="Every photo of a species with its provenance, a page at a time",
    dependencies=[Depends(require_read_key)],
    responses={**COMMON_ERRORS, **NOT_FOUND},
)
async def species_photos(
    service: ServiceDep,
    name: str = SPECIES_NAME,
    offset: int = Query(0, ge=0, description="Photos to skip (ordered by specimen, file name)."),
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Most photos to return."),
) -> SpeciesPhotoPage:
    return await service.species_photos(name, offset, limit)


@router.get(
    "/specimens/{specimen_id}/photo",
    summary="The stored JPEG copy of an enrolled photo (longer side at most 512 px)",
    response_class=Response,
    dependencies=[Depends(require_read_key)],
    responses={200: {"content": {"image/jpeg": {}}}, **COMMON_ERRORS, **NOT_FOUND},
)
async def specimen_photo(specimen_id: str, service: ServiceDep) -> Response:
    data = await service.photo(specimen_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
