"""The server's settings: where it listens, how many workers, and the limits that keep a
hostile request from costing more than an ordinary one. One dataclass; each field's help
and default is what ``fmnist serve --help`` shows. Imports nothing heavy, so the CLI can
read it to build its options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fmnist.core.errors import FmnistError
from fmnist.core.spec import NUM_CLASSES

BACKENDS = ("auto", "onnx", "torch")


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeSettings:
    host: str = _setting(
        "127.0.0.1", "Address to listen on; loopback unless told otherwise (there is no authentication)."
    )
    port: int = _setting(8000, "TCP port to listen on.")
    workers: int = _setting(1, "Worker processes, each with its own copy of the model.")
    backend: str = _setting(
        "auto", "auto (ONNX Runtime if an up-to-date model.onnx is beside the model, else PyTorch), onnx or torch."
    )
    threads: int = _setting(
        1, "Inference threads per worker (one per worker keeps the workers off each other's cores)."
    )
    max_body_bytes: int = _setting(16 * 1024 * 1024, "Largest request body in bytes; a bigger one gets 413.")
    max_batch: int = _setting(64, "Most images in one /v1/predict/batch request; more gets 422.")
    max_pixels: int = _setting(
        25_000_000,
        "Most pixels (width × height, summed over a batch) the uploaded images may declare; more gets 413 "
        "before anything is decoded (decompression bombs).",
    )
    top_k: int = _setting(5, f"Classes in an answer when the request gives no top_k (1-{NUM_CLASSES}).")
    data_dir: str | None = _setting(
        None, "Folder with the test images for the page's strip (default: as `fmnist data`)."
    )
    verify: bool = _setting(True, "Check the test images' SHA-256 before showing them.")
    access_log: bool = _setting(False, "Log every request (costs throughput).")
    # Connection bounds (Uvicorn's settings, and the header deadline fmnist/serve/connections.py adds);
    # the defaults are measured in docs/serve.md.
    timeout_header: int = _setting(
        10, "Seconds a client has to send a request's headers, from connecting or from its first byte; then closed."
    )
    timeout_keep_alive: int = _setting(5, "Seconds an idle keep-alive connection stays open between requests.")
    limit_concurrency: int = _setting(
        512, "Open connections per worker beyond which a request gets 503 (each holds a file descriptor)."
    )

    def validate(self) -> ServeSettings:
        """Self, or :class:`FmnistError` naming the first setting out of range."""
        checks = [
            (1 <= self.port <= 65535, "--port must be between 1 and 65535"),
            (1 <= self.workers <= 64, "--workers must be between 1 and 64"),
            (1 <= self.threads <= 64, "--threads must be between 1 and 64"),
            (self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}"),
            (self.max_body_bytes >= 1024, "--max-body-bytes must be at least 1024"),
            (1 <= self.max_batch <= 10_000, "--max-batch must be between 1 and 10000"),
            (self.max_pixels >= 28 * 28, "--max-pixels must be at least 784 (one 28×28 image)"),
            (1 <= self.top_k <= NUM_CLASSES, f"--top-k must be between 1 and {NUM_CLASSES}"),
            (1 <= self.timeout_header <= 3600, "--timeout-header must be between 1 and 3600 seconds"),
            (1 <= self.timeout_keep_alive <= 3600, "--timeout-keep-alive must be between 1 and 3600 seconds"),
            # Uvicorn counts the connection asking too: 1 would answer every request with 503.
            (2 <= self.limit_concurrency <= 1_000_000, "--limit-concurrency must be between 2 and 1000000"),
        ]
        for ok, message in checks:
            if not ok:
                raise FmnistError(message)
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


FIELDS = {f.name: f for f in dataclasses.fields(ServeSettings)}
