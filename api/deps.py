"""Dependencies injected into the routes: settings, the loaded service, and API-key checks."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError
from .jobs import TrainingJobs
from .metrics import ServiceMetrics
from .service import ShellidService
from .settings import ServiceSettings


@dataclass
class Runtime:
    """What the app holds: settings, metrics and, once loaded, the service."""

    settings: ServiceSettings
    metrics: ServiceMetrics | None = None
    service: ShellidService | None = None
    load_error: str | None = None
    loaded: threading.Event = field(default_factory=threading.Event)
    training: TrainingJobs | None = None  # made on the first training request
    lock: threading.Lock = field(default_factory=threading.Lock)


bearer = HTTPBearer(auto_error=False, description="The API key: 'Authorization: Bearer <key>'.")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> ServiceSettings:
    return runtime.settings


def get_service(runtime: RuntimeDep) -> ShellidService:
    """The loaded service, or 503 while the model and store are still loading (or failed)."""
    if runtime.service is None:
        if runtime.load_error:
            raise ApiError(503, "not_ready", f"the service failed to start: {runtime.load_error}")
        raise ApiError(503, "not_ready", "the model and store are still loading; retry shortly")
    return runtime.service


#: what routes declare: ``settings: SettingsDep``, ``service: ServiceDep``.
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
ServiceDep = Annotated[ShellidService, Depends(get_service)]


def training_jobs_for(service: ShellidService) -> TrainingJobs:
    """The training jobs of ``service``: each opens a collection of its own on the service's
    store and, once its model is installed there, makes the service catch up with the store
    at once (``Collection.refresh``, which its store watch runs every
    ``SHELLID_REFRESH_SECONDS``: the new model and its vectors are adopted together)."""
    from index.workflows.collection import Collection

    settings, store = service.settings, service.collection.store.uri
    return TrainingJobs(
        open_collection=lambda: Collection.open(
            store,
            create=False,
            settings=settings,
            need_model=False,  # the job makes its own
        ),
        follow=service.collection.refresh,  # the store watch's: model and vectors together
        cache_dir=settings.features_dir(),
    )


def get_training(runtime: RuntimeDep, service: ServiceDep) -> TrainingJobs:
    """The service's training jobs (503 while the service is not loaded)."""
    with runtime.lock:
        if runtime.training is None:
            runtime.training = training_jobs_for(service)
        return runtime.training


TrainingDep = Annotated[TrainingJobs, Depends(get_training)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(credentials: HTTPAuthorizationCredentials | None, *keys) -> bool:
    if credentials is None:
        return False
    given = credentials.credentials.encode()
    return any(
        key is not None and secrets.compare_digest(given, key.get_secret_value().encode())
        for key in keys
    )


def _refuse(credentials: HTTPAuthorizationCredentials | None, what: str) -> ApiError:
    if credentials is None:
        return ApiError(
            401, "unauthorized", f"{what} needs an API key: send 'Authorization: Bearer <key>'"
        )
    return ApiError(401, "unauthorized", "wrong API key")


def require_write_key(settings: SettingsDep, credentials: CredentialsDep) -> None:
    """Enrolling and deleting need ``SHELLID_API_KEY`` when it is set."""
    if settings.writes_need_key() and not _matches(credentials, settings.api_key):
        raise _refuse(credentials, "changing the collection")


def require_read_key(settings: SettingsDep, credentials: CredentialsDep) -> None:
    """Reads need ``SHELLID_READ_KEY`` (or the write key) when it is set."""
    if settings.reads_need_key() and not _matches(credentials, settings.read_key, settings.api_key):
        raise _refuse(credentials, "reading the collection")
