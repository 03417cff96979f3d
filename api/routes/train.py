"""Training on the photos enrolled (``POST /v1/train``): a background job with progress, one at
a time; the service keeps answering with its model until a better one is installed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Response
from pydantic import ValidationError

from ..deps import TrainingDep, require_read_key, require_write_key
from ..errors import COMMON_ERRORS, ApiError, ErrorBody
from ..jobs import KEEP_FINISHED, TrainingBusyError
from ..schemas import TrainingJobOut, TrainRequest

router = APIRouter(prefix="/v1", tags=["training"])

NO_JOB: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such training job (or none yet)."}
}
JOB_ID = Path(..., description="The id POST /v1/train answered.", max_length=64)


def validation_message(exc: ValidationError) -> str:
    """``field: what is wrong`` for each refused field, in one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}".lstrip(": ")
        for error in exc.errors()
    )


def job_url(job_id: str) -> str:
    return f"/v1/train/{job_id}"


@router.post(
    "/train",
    status_code=202,
    response_model=TrainingJobOut,
    summary="Train the model on the photos enrolled (a job; poll its Location)",
    dependencies=[Depends(require_write_key)],
    responses={
        **COMMON_ERRORS,
        409: {"model": ErrorBody, "description": "A training job is running (its id is said)."},
    },
)
async def start_training(
    jobs: TrainingDep, response: Response, body: TrainRequest | None = None
) -> TrainingJobOut:
    changes = body.model_dump(exclude_none=True) if body else {}
    try:
        record = jobs.start(changes)
    except ValidationError as exc:  # the recipe refuses the changes (TrainRequest let them by)
        raise ApiError(422, "invalid_request", validation_message(exc)) from None
    except TrainingBusyError as exc:
        raise ApiError(
            409,
            "training_running",
            f"a training job is already running: {exc.job_id}; follow it at {job_url(exc.job_id)}",
        ) from None
    response.headers["Location"] = job_url(record["id"])
    return TrainingJobOut.model_validate(record)


@router.get(
    "/train",
    response_model=TrainingJobOut,
    summary="The latest training job",
    dependencies=[Depends(require_read_key)],
    responses={**COMMON_ERRORS, **NO_JOB},
)
async def latest_training(jobs: TrainingDep) -> TrainingJobOut:
    record = jobs.latest()
    if record is None:
        raise ApiError(404, "training_job_not_found", "no training job yet: POST /v1/train")
    return TrainingJobOut.model_validate(record)


@router.get(
    "/train/{job_id}",
    response_model=TrainingJobOut,
    summary="One training job: state, stage, progress, ETA and its report",
    dependencies=[Depends(require_read_key)],
    responses={**COMMON_ERRORS, **NO_JOB},
)
async def training_job(jobs: TrainingDep, job_id: str = JOB_ID) -> TrainingJobOut:
    record = jobs.get(job_id)
    if record is None:
        raise ApiError(
            404,
            "training_job_not_found",
            f"no training job {job_id} (the last {KEEP_FINISHED} finished ones are kept)",
        )
    return TrainingJobOut.model_validate(record)
