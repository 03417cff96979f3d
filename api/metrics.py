"""Prometheus metrics of the service: requests by route and status, latency, store size,
embedding batch sizes. Each app has its own registry (several apps can live in one process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metric families and the middleware that fills them."""

    def __init__(self, store_size: Callable[[], float], species_count: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shellid_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shellid_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "shellid_embedding_batch_images",
            "Photos embedded per forward pass of the micro-batcher.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "shellid_embedding_batch_duration_seconds",
            "Time of one forward pass of the micro-batcher.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        specimens = Gauge(
            "shellid_store_specimens", "Images enrolled in the store.", registry=self.registry
        )
        specimens.set_function(store_size)
        species = Gauge("shellid_store_species", "Species in the store.", registry=self.registry)
        species.set_function(species_count)

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def install(self, app: FastAPI) -> None:
        """Count and time every request under its route template (``/v1/species/{name}``)."""

        @app.middleware("http")
        async def _measure(request: Request, call_next):
            started = time.perf_counter()
            status = 500
            try:
                response = await call_next(request)
                status = response.status_code
                return response
            finally:
                route = request.scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.requests.labels(template, request.method, str(status)).inc()
                self.latency.labels(template, request.method).observe(time.perf_counter() - started)
