"""The FastAPI application: ``create_app()`` wires settings, service, routes, errors, metrics
and the web page. Run it with ``shellid serve`` (or ``uvicorn api.app:create_app --factory``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .deps import Runtime
from .errors import ServerErrorAnswer, install_error_handlers
from .metrics import ServiceMetrics
from .remedies import user_message
from .routes import (
    cli_answers,
    health,
    identify,
    species,
    species_pages,
    taxa,
    train,
    try_these,
)
from .service import ShellidService
from .settings import ServiceSettings, load_settings
from .uploads import BodyLimitMiddleware

if TYPE_CHECKING:
    from index.workflows.collection import Collection

log = logging.getLogger("shellid.api")

STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """Identify species from photos by few-shot metric learning.

* **Identify**: upload 1–5 photos of one specimen; get a decision (species, genus, unknown
  species or out of domain), ranked candidates with calibrated probabilities, and the most
  similar enrolled photos.
* **Collection**: enroll a species from a few photos (no retraining), list and delete.
* **Training**: train the model on the photos enrolled, as a job to poll (`POST /v1/train`).

Writes need `Authorization: Bearer <key>` when the server has `SHELLID_API_KEY`; reads too
when it has `SHELLID_READ_KEY`. Errors answer `{"detail", "code", "file"}`.
"""


def open_collection(settings: ServiceSettings) -> Collection:
    """The store and model named by ``settings`` (created when the store does not exist)."""
    from index.workflows.collection import Collection

    return Collection.open(settings.store, model=settings.model, create=True, settings=settings)


def _load_in_background(runtime: Runtime, opener: Callable[[], Collection]) -> None:
    def load() -> None:
        try:
            collection = opener()
            runtime.service = _make_service(runtime, collection)
            count = len(collection.catalogue)
            log.info("shellid ready: %d photos in %s", count, runtime.settings.store)
        except Exception as exc:  # shown by /readyz and in the log, the process stays up
            runtime.load_error = user_message(exc) or type(exc).__name__
            log.error("shellid failed to load the model or store: %s", runtime.load_error)
        finally:
            runtime.loaded.set()

    threading.Thread(target=load, name="shellid-loader", daemon=True).start()


def _make_service(runtime: Runtime, collection: Collection) -> ShellidService:
    on_batch = runtime.metrics.observe_batch if runtime.metrics else None
    return ShellidService(collection, runtime.settings, on_batch=on_batch).start()


def _metrics(runtime: Runtime) -> ServiceMetrics:
    """The service's metrics, with the store's size and species count read at each scrape."""

    def store_size() -> float:
        return float(len(runtime.service.catalogue)) if runtime.service else 0.0

    def species_count() -> float:
        return float(len(runtime.service.catalogue.species())) if runtime.service else 0.0

    return ServiceMetrics(store_size, species_count)


def _routes(app: FastAPI) -> None:
    """The API's routers, the web page and its static files."""
    for module in (health, identify, cli_answers, species, species_pages, try_these, taxa, train):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.ico", media_type="image/x-icon")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def create_app(
    settings: ServiceSettings | None = None, collection: Collection | None = None
) -> FastAPI:
    """Build the app. With ``collection`` it serves that one at once; otherwise it opens
    ``settings.store`` in the background (``/readyz`` answers 503 until then)."""
    settings = settings or load_settings()
    runtime = Runtime(settings=settings)
    runtime.metrics = _metrics(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if runtime.service is None:
            if collection is not None:
                runtime.service = _make_service(runtime, collection)
                runtime.loaded.set()
            else:
                _load_in_background(runtime, lambda: open_collection(settings))
        yield
        if runtime.service is not None:
            runtime.service.stop()

    app = FastAPIOffline(  # /docs and /redoc served from the package, no CDN
        title="shellid",
        summary="Species identification from photos",
        description=DESCRIPTION,
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)

    # Innermost first: unexpected errors answered inside the body limit, the body limit
    # inside the metrics (so refused bodies are counted too).
    app.add_middleware(ServerErrorAnswer)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    runtime.metrics.install(app)  # added last = outermost: refused bodies are counted too
    _routes(app)
    return app
