"""The server's settings: where it listens, how many workers, and the limits that keep a
hostile request from costing more than an ordinary one. One dataclass of the settings schema
(:mod:`fmnist.core.schema`); the ``fmnist serve`` options are generated from it. Imports
nothing heavy, so the CLI can read it to build its options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.schema import check, data_dir_param, param, verify_param
from fmnist.core.spec import IMAGE_SIZE, NUM_CLASSES

BACKENDS = ("auto", "onnx", "torch")


@dataclass(frozen=True)
class ServeSettings:
    host: str = param("127.0.0.1", "Address to listen on; loopback unless told otherwise (there is no authentication).")
    port: int = param(8000, "TCP port to listen on.", min=1, max=65535)
    workers: int = param(1, "Worker processes, each with its own copy of the model.", min=1, max=64)
    backend: str = param(
        "auto",
        "auto (ONNX Runtime if an up-to-date model.onnx is beside the model, else PyTorch), onnx or torch.",
        choices=BACKENDS,
    )
    threads: int = param(
        1, "Inference threads per worker (one per worker keeps the workers off each other's cores).", min=1, max=64
    )
    max_body_bytes: int = param(16 * 1024 * 1024, "Largest request body in bytes; a bigger one gets 413.", min=1024)
    max_batch: int = param(64, "Most images in one /v1/predict/batch request; more gets 422.", min=1, max=10_000)
    max_pixels: int = param(
        25_000_000,
        "Most pixels (width × height, summed over a batch) the uploaded images may declare; more gets 413 "
        "before anything is decoded (decompression bombs); at least one 28×28 image.",
        min=IMAGE_SIZE * IMAGE_SIZE,
    )
    top_k: int = param(5, "Classes in an answer when the request gives no top_k.", min=1, max=NUM_CLASSES)
    access_log: bool = param(False, "Log every request (costs throughput).")
    data_dir: str | None = data_dir_param(
        "Folder with the test images for the page's strip (default: as `fmnist data`)."
    )
    verify: bool = verify_param("Check the test images' SHA-256 before showing them.")
    # Connection bounds (Uvicorn's settings, and the header deadline fmnist/serve/connections.py adds);
    # the defaults are measured in docs/serve.md.
    timeout_header: int = param(
        10,
        "Seconds a client has to send a request's headers, from connecting or from its first byte; then closed.",
        min=1,
        max=3600,
    )
    timeout_keep_alive: int = param(
        5, "Seconds an idle keep-alive connection stays open between requests.", min=1, max=3600
    )
    # Uvicorn counts the connection asking too: 1 would answer every request with 503.
    limit_concurrency: int = param(
        512,
        "Open connections per worker beyond which a request gets 503 (each holds a file descriptor).",
        min=2,
        max=1_000_000,
    )
    # Dynamic batching (fmnist/serve/batcher.py); the defaults are measured in docs/serve.md,
    # "Dynamic batching".
    batching: bool = param(
        True,
        "Queue concurrent requests and run them as one forward pass (--no-batching: one pass per request).",
    )
    # 32: on one thread the quick ResNet runs ~130 images/s alone, ~700 at 8-64 per pass (docs/serve.md);
    # at that rate the cap keeps one pass at c=256 to about 50 ms.
    batch_size: int = param(32, "Most images in one forward pass of the batcher.", min=1, max=256)
    # 2 ms: a fraction of the quick ResNet's 8-13 ms lone request, enough for a c=16 burst to gather.
    batch_wait: float = param(
        2.0,
        "Milliseconds the batcher waits for more requests after the first; a lone request is never "
        "delayed more (0: no waiting, only what queued during the previous pass).",
        min=0,
        max=1000,
    )
    batch_queue: int = param(
        1024,
        "Most images waiting in a model's queue; a request beyond gets 503 with Retry-After. At least --max-batch.",
        min=1,
        max=1_000_000,
    )

    def validate(self) -> ServeSettings:
        """Self, or :class:`FmnistError` naming the first setting out of range."""
        check(self)
        if self.batch_queue < self.max_batch:  # a full batch request could never be queued
            raise FmnistError(
                f"--batch-queue {self.batch_queue} is less than --max-batch {self.max_batch}; "
                "the queue must hold at least one whole batch request"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def limits(self) -> dict[str, int]:
        """What a client may send, as the model card reports it."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_batch": self.max_batch,
            "max_pixels": self.max_pixels,
            "max_top_k": NUM_CLASSES,
        }
