"""Liveness, readiness, metrics and service information."""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from index.workflows.models import model_label

from ..deps import RuntimeDep, ServiceDep
from ..schemas import Health, Inference, Limits, Readiness, ServiceInfo

router = APIRouter(tags=["service"])


def _version() -> str:
    try:
        return version("shellid")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Model and store are loaded",
    responses={503: {"model": Readiness, "description": "Still loading, or failed to load."}},
)
def readyz(runtime: RuntimeDep):
    if runtime.service is not None:
        return Readiness(status="ready", specimens=len(runtime.service.catalogue))
    body = Readiness(
        status="failed" if runtime.load_error else "loading", detail=runtime.load_error
    )
    return JSONResponse(body.model_dump(), status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}},
)
def metrics(runtime: RuntimeDep) -> Response:
    assert runtime.metrics is not None
    return runtime.metrics.render()


@router.get(
    "/v1/info",
    response_model=ServiceInfo,
    summary="Model, store size, limits and whether keys are needed (always open)",
)
async def info(runtime: RuntimeDep, service: ServiceDep) -> ServiceInfo:
    settings = runtime.settings
    collection = service.collection
    embedder = collection.embedder
    return ServiceInfo(
        version=_version(),
        model=model_label(embedder, collection.model_path),
        fingerprint=embedder.fingerprint,
        embedding_dim=embedder.dim,
        specimens=len(service.catalogue),
        writes_need_key=settings.writes_need_key(),
        reads_need_key=settings.reads_need_key(),
        subject=await service.subject(),
        limits=Limits(
            max_file_bytes=settings.max_file_bytes,
            max_query_files=settings.max_query_files,
            max_enroll_files=settings.max_enroll_files,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            min_side=settings.min_side,
            max_aspect_ratio=settings.max_aspect_ratio,
            max_image_cost=settings.max_image_cost,
        ),
        inference=Inference(**asdict(service.plan)),
    )
