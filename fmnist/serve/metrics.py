"""Prometheus metrics: requests by endpoint and status, request latency, inference time.

With several workers each process counts in files under ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` adds them up (prometheus-client's multiprocess mode), so whichever worker
answers the scrape reports the whole server. prometheus-client picks the mode when it is
imported: the launcher (:mod:`fmnist.serve.server`) sets the variable before it starts the
workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

try:  # FastAPI 0.137.2 and later keep an included router as one node of app.routes, expanded by this
    from fastapi.routing import iter_route_contexts
except ImportError:  # earlier ones copy its routes into app.routes

    def iter_route_contexts(routes: Iterable[Any]) -> Iterator[Any]:
        return iter(routes)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: a request to a small model takes about a millisecond, a large photo's upload a second.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Images per forward pass: powers of two up to the largest --batch-size.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Seconds in the queue: a lone request waits --batch-wait (a few ms), a full queue seconds.
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"  # the endpoint of a request no route answers


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()))


class Metrics:
    """One app's metrics, in a registry of its own (several apps in one process, as in the
    tests, must not collide in the global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fmnist_http_requests",
            "HTTP requests by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fmnist_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "fmnist_inference_seconds",
            "Time the model takes per call (one image, or one batch), by backend.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("fmnist_images", "Images classified.", registry=self.registry)
        self.batch_size = Histogram(
            "fmnist_batch_images",
            "Images per forward pass of the dynamic batcher, by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "fmnist_queue_wait_seconds",
            "Time a request waits in the batcher's queue before its forward pass starts, by model.",
            ["model"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        # livesum: the server's queue is the sum of its live workers' queues
        self.queue_depth = Gauge(
            "fmnist_queue_images",
            "Images waiting in the batcher's queue, by model.",
            ["model"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.rejected = Counter(
            "fmnist_queue_rejected",
            "Requests answered 503 because the batcher's queue was full, by model.",
            ["model"],
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_inference(self, backend: str, seconds: float, images: int) -> None:
        self.inference.labels(backend).observe(seconds)
        self.images.inc(images)

    def observe_batch(self, model: str, images: int, waits: list[float]) -> None:
        self.batch_size.labels(model).observe(images)
        wait = self.queue_wait.labels(model)
        for seconds in waits:
            wait.observe(seconds)

    def set_queue_depth(self, model: str, images: int) -> None:
        self.queue_depth.labels(model).set(images)

    def count_rejected(self, model: str) -> None:
        self.rejected.labels(model).inc()

    def exposition(self) -> bytes:
        """The text format, summed over all worker processes in multiprocess mode."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class Endpoints:
    """The endpoint label of a request: the path (template) of the route that answers its path,
    the mount's path for a file under a mount (``/static``, ``/docs-assets``), else ``"other"``,
    so that a scan of random paths cannot grow the metrics. Read from the app's routes, so that
    a new route is counted under its own name without being listed anywhere."""

    def __init__(self, routes: Iterable[Any]):
        # (regex, label): a route's regex matches its own path only, a mount's any path below it.
        self.patterns = [(r.path_regex, r.path) for r in iter_route_contexts(routes) if hasattr(r, "path_regex")]
        self.paths = {label for regex, label in self.patterns if regex.match(label)}  # routes without parameters

    def __call__(self, path: str) -> str:
        if path in self.paths:  # almost every request: one set lookup
            return path
        for regex, label in self.patterns:
            if regex.match(path):
                return label
        return OTHER

    @property
    def labels(self) -> set[str]:
        """Every endpoint label these routes can give."""
        return {label for _, label in self.patterns} | {OTHER}
