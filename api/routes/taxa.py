"""What the collection's filters can name (``GET /v1/taxa``) and what it holds, in one word
(``PUT /v1/subject``)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from ..deps import ServiceDep, require_read_key, require_write_key
from ..errors import COMMON_ERRORS, ErrorBody
from ..schemas import SubjectIn, SubjectOut, TaxaList

router = APIRouter(prefix="/v1", tags=["collection"])


@router.get(
    "/taxa",
    response_model=TaxaList,
    summary="Regions, genera, families and species the identify filters can name",
    dependencies=[Depends(require_read_key)],
    responses=COMMON_ERRORS,
)
async def taxa(service: ServiceDep) -> TaxaList:
    return TaxaList.model_validate(asdict(await service.taxa()))


@router.put(
    "/subject",
    response_model=SubjectOut,
    summary="Name what the collection holds (shell, fish, bird...), kept in the store",
    dependencies=[Depends(require_write_key)],
    responses={**COMMON_ERRORS, 422: {"model": ErrorBody, "description": "Not one noun."}},
)
async def set_subject(body: SubjectIn, service: ServiceDep) -> SubjectOut:
    return SubjectOut(subject=await service.set_subject(body.subject))
