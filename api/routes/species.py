"""The collection: enroll photos of a species, list, inspect and delete species and photos."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from fastapi.responses import Response

from index.results import UPLOAD_SOURCE

from ..deps import ServiceDep, SettingsDep, require_read_key, require_write_key
from ..errors import COMMON_ERRORS, UPLOAD_ERRORS, ErrorBody
from ..schemas import EnrollResponse, SpeciesList, SpeciesOut, SpeciesRemoved, SpecimenRemoved
from ..uploads import read_uploads

router = APIRouter(prefix="/v1", tags=["collection"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such species or photo."}
}
#: What the index accepts as a name (index.names.canonical_species): no control
#: characters or slashes, and something besides dots, underscores and spaces (not "." or "..").
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/\\]*[^\x00-\x1f\x7f-\x9f/\\._\s][^\x00-\x1f\x7f-\x9f/\\]*$"
SPECIES_NAME = Path(
    ...,
    description="Species name, e.g. 'Conus_textile' (Unicode NFC; spaces become underscores; "
    "invisible and bidi characters are dropped).",
    max_length=200,
    pattern=NAME_PATTERN,
)


@router.post(
    "/species/{name}/images",
    status_code=201,
    response_model=EnrollResponse,
    summary="Enroll photos of a species (creates it when new)",
    dependencies=[Depends(require_write_key)],
    responses={
        **UPLOAD_ERRORS,
        409: {"model": ErrorBody, "description": "A photo is enrolled under another species."},
    },
)
async def enroll(
    settings: SettingsDep,
    service: ServiceDep,
    images: Annotated[list[UploadFile], File(description="Photos of the species.", min_length=1)],
    name: str = SPECIES_NAME,
    genus: str | None = Form(None, description="Genus (default: first word of the name)."),
    family: str | None = Form(None),
    order: str | None = Form(None),
    region: str | None = Form(None, description="Where the species lives, e.g. 'Indo-Pacific'."),
    source: str = Form(
        "",
        description="Where the photos come from (collection, author); default 'upload'.",
    ),
) -> EnrollResponse:
    from index.names import canonical_species

    canonical_species(name)  # a bad name is refused before any photo is decoded
    uploads = await read_uploads(images, settings, settings.max_enroll_files)
    taxonomy = {
        key: value.strip()
        for key, value in {
            "genus": genus,
            "family": family,
            "order": order,
            "region": region,
        }.items()
        if value and value.strip()
    }
    return await service.enroll(name, uploads, taxonomy, source.strip() or UPLOAD_SOURCE)


@router.get(
    "/species",
    response_model=SpeciesList,
    summary="Enrolled species with counts and a thumbnail each",
    dependencies=[Depends(require_read_key)],
    responses=COMMON_ERRORS,
)
async def list_species(service: ServiceDep) -> SpeciesList:
    return await service.species()


@router.get(
    "/species/{name}",
    response_model=SpeciesOut,
    summary="One enrolled species",
    dependencies=[Depends(require_read_key)],
    responses={**COMMON_ERRORS, **NOT_FOUND},
)
async def species_info(service: ServiceDep, name: str = SPECIES_NAME) -> SpeciesOut:
    return await service.species_info(name)


@router.delete(
    "/species/{name}",
    response_model=SpeciesRemoved,
    summary="Delete a species and all its photos",
    dependencies=[Depends(require_write_key)],
    responses={**COMMON_ERRORS, **NOT_FOUND},
)
async def remove_species(service: ServiceDep, name: str = SPECIES_NAME) -> SpeciesRemoved:
    return await service.remove_species(name)


@router.delete(
    "/specimens/{specimen_id}",
    response_model=SpecimenRemoved,
    summary="Delete one enrolled photo",
    dependencies=[Depends(require_write_key)],
    responses={**COMMON_ERRORS, **NOT_FOUND},
)
async def remove_specimen(specimen_id: str, service: ServiceDep) -> SpecimenRemoved:
    return await service.remove_specimen(specimen_id)


@router.get(
    "/specimens/{specimen_id}/image",
    summary="JPEG thumbnail of an enrolled photo",
    response_class=Response,
    dependencies=[Depends(require_read_key)],
    responses={200: {"content": {"image/jpeg": {}}}, **COMMON_ERRORS, **NOT_FOUND},
)
async def specimen_image(specimen_id: str, service: ServiceDep) -> Response:
    data = await service.thumbnail(specimen_id)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
