"""The answer ``shellid identify`` prints, made by a running server (:mod:`api.commands._server`).

Not part of the documented API: the index's own answer (``index.results.Identification``)
with the enrolled taxonomy of its candidates, the file names of its similar photos and the
subject word, which is everything the command line formats its answers from; so an answer
printed from a server reads exactly as one made by the command itself.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Depends, File, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep, SettingsDep, require_read_key
from ..errors import ApiError
from ..uploads import read_uploads

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_read_key)])
PHOTOS = File(..., min_length=1)
SUBSET = Query(None)


@router.post("/v1/cli/identify")
async def identify_for_cli(
    settings: SettingsDep,
    service: ServiceDep,
    images: list[UploadFile] = PHOTOS,
    top_k: int = Query(5, ge=1),
    region: str | None = Query(None),
    genus: str | None = Query(None),
    family: str | None = Query(None),
    subset: list[str] | None = SUBSET,
) -> dict[str, Any]:
    uploads = await read_uploads(images, settings, settings.max_query_files)
    answer = await run_in_threadpool(
        _identify, service, [u.image for u in uploads], top_k, region, genus, family, subset,
        settings.intake_limits(),
    )  # fmt: skip
    return {**answer, "subject": await service.subject()}


def _identify(service, images, top_k, region, genus, family, subset, limits) -> dict[str, Any]:
    """The command line's checks and answer, in the thread pool."""
    from api.commands.identify_cmd import check_filters

    catalogue = service.catalogue
    try:
        check_filters(catalogue, SimpleNamespace(region=region, genus=genus, family=family), subset)
    except ValueError as exc:
        raise ApiError(400, "unknown_taxon", str(exc)) from None
    result = service.collection.identify(
        images, top_k=top_k, region=region, genus=genus, family=family, limits=limits,
        subset=subset,
    )  # fmt: skip
    wanted = {c.species for c in result.candidates}
    taxonomy = {k: v for k, v in catalogue.enrolled_taxonomy().items() if k in wanted}
    shown = {s.specimen_id for s in result.similar}
    names = {k: v for k, v in catalogue.photo_names().items() if k in shown}
    return {
        "answer": result.model_dump(mode="json"),
        "taxonomy": taxonomy,
        "names": names,
        "store": str(catalogue.store.uri),
    }
