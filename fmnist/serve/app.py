"""The FastAPI app: ``create_app(run, settings)`` loads the model once and answers on

- ``POST /v1/predict``: one image (multipart upload, raw image body, or JSON pixels)
- ``POST /v1/predict/batch``: up to ``max_batch`` images
- ``GET /v1/model``: the model card; ``GET /v1/test-images``: random test images
- ``GET /healthz``, ``GET /metrics`` (Prometheus), ``/openapi.json`` and ``/docs``
- ``GET /``: the web page, from the package's own files (works offline)

The async handlers only read the request; decoding, preprocessing and inference run in the
thread pool, so a slow photo never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from fmnist._version import __version__
from fmnist.core.errors import FmnistError
from fmnist.core.spec import CLASS_NAMES, NUM_CLASSES
from fmnist.data.images import to_png
from fmnist.serve.guard import Guard
from fmnist.serve.inputs import BadRequest, parse_json, preprocess_files
from fmnist.serve.metrics import CONTENT_TYPE, Metrics
from fmnist.serve.model import ServedModel
from fmnist.serve.schemas import PIXELS_SCHEMA, BatchResponse, Health, PredictResponse, Problem, Samples
from fmnist.serve.settings import ServeSettings

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS = "/docs-assets"
ENDPOINTS = {
    "/",
    "/v1/predict",
    "/v1/predict/batch",
    "/v1/model",
    "/v1/test-images",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/docs",
}
MEDIA_HINT = (
    "send multipart/form-data with the image as a file field (curl -F file=@photo.jpg), "
    'an image/* body, or application/json {"pixels": 28×28 numbers 0-255}'
)
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Body or image larger than the server's limits"},
    415: {"model": Problem, "description": "Not an image, or a content type the endpoint does not take"},
    422: {"model": Problem, "description": "Wrong JSON shape, pixels out of range, unreadable image, bad top_k"},
}


def create_app(run: str | os.PathLike, settings: ServeSettings | None = None) -> FastAPI:
    """The app for the model in ``run`` (a run folder or model file), loaded now, once."""
    settings = (settings or ServeSettings()).validate()
    model = ServedModel(run, settings)
    metrics = Metrics()
    # CPU work runs in threads, never on the event loop, and only `threads` inferences and
    # two photo decodings at a time per worker. Measured on 2 cores: one thread per request
    # (FastAPI's pool) made 16 concurrent requests fight over the GIL and the cores, and
    # anyio's hop to a thread cost 130-140 µs of CPU per request against 40-75 µs for a
    # plain executor, as much as the seed model's inference itself.
    inference = ThreadPoolExecutor(settings.threads, thread_name_prefix="fmnist-inference")
    decoding = ThreadPoolExecutor(2, thread_name_prefix="fmnist-decoding")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        inference.shutdown(wait=False, cancel_futures=True)
        decoding.shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(
        lifespan=lifespan,
        title="fmnist",
        version=__version__,
        summary="Fashion-MNIST classifier: the model of one training run, over HTTP.",
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    app.state.model, app.state.settings, app.state.metrics = model, settings, metrics
    _add_error_handlers(app)

    async def answer(kind: str, payload: Any, batch: bool, top_k: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        seen = None
        if kind == "files":
            pixels, seen = await loop.run_in_executor(decoding, _preprocess, payload, settings.max_pixels)
            answers, ms = await loop.run_in_executor(inference, model.answer, pixels, top_k)
        else:
            job = partial(_parse_and_answer, model, payload, batch, settings.max_batch, top_k)
            answers, ms = await loop.run_in_executor(inference, job)
        metrics.observe_inference(model.backend, ms / 1000, len(answers))
        if seen is not None:
            for a, url in zip(answers, seen):
                a["model_input_png"] = url
        head = {"model": model.name, "backend": model.backend}
        if batch:
            return {**head, "inference_ms": round(ms, 3), "predictions": answers}
        return {**head, **answers[0], "inference_ms": round(ms, 3)}

    TopK = Query(settings.top_k, ge=1, le=NUM_CLASSES, description="How many of the most likely classes to return")

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=_request_body(batch=False, max_batch=settings.max_batch),
        summary="Classify one image",
    )
    async def predict(request: Request, top_k: int = TopK) -> Response:
        """One image: a photo of one garment as a multipart upload (field ``file``) or a raw
        ``image/*`` body, preprocessed as ``fmnist predict FILE`` does; or JSON
        ``{"pixels": [[...]]}`` with 28×28 grey levels already in Fashion-MNIST's style
        (light garment on black), which go to the model as they are."""
        kind, payload = await _read(request, settings, batch=False)
        return JSONResponse(await answer(kind, payload, False, top_k))

    @app.post(
        "/v1/predict/batch",
        response_model=BatchResponse,
        responses=ERRORS,
        openapi_extra=_request_body(batch=True, max_batch=settings.max_batch),
        summary=f"Classify up to {settings.max_batch} images",
    )
    async def predict_batch(request: Request, top_k: int = TopK) -> Response:
        """Several images in one call: multipart with one ``files`` field per image, or JSON
        ``{"images": [28×28, ...]}``. Answers come in the order sent; one bad image fails
        the whole request, naming it."""
        kind, payload = await _read(request, settings, batch=True)
        return JSONResponse(await answer(kind, payload, True, top_k))

    @app.get("/v1/model", summary="The model card")
    def model_card() -> dict[str, Any]:
        """Name, parameters, FLOPs, validation and test accuracy, classes, normalization,
        training preset, and this server's request limits."""
        return model.card

    @app.get(
        "/v1/test-images",
        response_model=Samples,
        responses={404: {"model": Problem, "description": "No test images on this server"}},
        summary="Random test images",
    )
    def test_images(
        count: int = Query(12, ge=1, le=64, description="How many"),
        seed: int | None = Query(None, ge=0, description="Seed for a repeatable choice"),
    ) -> Response:
        """Random images from the 10,000 test images with their true labels, for trying the
        model (the web page's strip). 404 when the data set is not on the server."""
        try:
            test = model.test_images()
        except FmnistError as e:
            raise HTTPException(404, f"no test images on this server: {e}") from None
        rng = random.Random(seed)
        picks = rng.sample(range(len(test)), min(count, len(test)))
        images = [
            {
                "index": i,
                "label": int(test.labels[i]),
                "name": CLASS_NAMES[int(test.labels[i])],
                "pixels": test.images[i].tolist(),
            }
            for i in picks
        ]
        return JSONResponse({"images": images})

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "model": model.name, "backend": model.backend, "pid": os.getpid()})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        """Requests by endpoint and status, request latency and inference time, in the
        Prometheus text format (summed over all workers)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes, metrics=metrics, endpoints=ENDPOINTS)
    return app


async def _read(request: Request, settings: ServeSettings, batch: bool) -> tuple[str, Any]:
    """``("json", body bytes)`` or ``("files", [(name, bytes), ...])``; reads, never decodes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json", await request.body()
    if media == "multipart/form-data":
        return "files", await _uploads(request, settings, batch)
    if media.startswith("image/") or media == "application/octet-stream":
        if batch:
            raise BadRequest(415, f"a batch is multipart/form-data or JSON, not {media}; {MEDIA_HINT}")
        return "files", [("upload", await request.body())]
    raise BadRequest(415, f"unsupported content type {media or '(none)'!r}; {MEDIA_HINT}")


async def _uploads(request: Request, settings: ServeSettings, batch: bool) -> list[tuple[str, bytes]]:
    limit = settings.max_batch if batch else 1
    try:
        form = await request.form(max_files=limit + 1, max_fields=limit + 16)
    except HTTPException as e:  # Starlette's 400 for a malformed form or too many parts
        if "Too many files" in str(e.detail):
            what = "one image per request here; send several to /v1/predict/batch"
            raise BadRequest(
                422, what if not batch else f"more than {limit} images in one batch; this server takes at most {limit}"
            ) from None
        raise BadRequest(422, f"unreadable multipart form: {e.detail}") from None
    try:
        files, texts = [], []
        for key, value in form.multi_items():
            if isinstance(value, str):
                texts.append(key)
            else:
                files.append((value.filename or f"file {len(files) + 1}", await value.read()))
    finally:
        await form.close()
    if not files:
        hint = f" (the field {texts[0]!r} holds text: with curl, write -F {texts[0]}=@photo.jpg)" if texts else ""
        raise BadRequest(422, f"no file in the form{hint}; {MEDIA_HINT}")
    if len(files) > limit:
        if not batch:
            raise BadRequest(422, "one image per request here; send several to /v1/predict/batch")
        raise BadRequest(422, f"more than {limit} images in one batch; this server takes at most {limit}")
    return files


def _preprocess(files: list[tuple[str, bytes]], max_pixels: int) -> tuple[np.ndarray, list[str]]:
    """The pixels the model will see, and the same as PNG data URLs to show the user."""
    pixels = preprocess_files(files, max_pixels)
    return pixels, [_png_data_url(p) for p in pixels]


def _parse_and_answer(model: ServedModel, body: bytes, batch: bool, max_batch: int, top_k: int):
    return model.answer(parse_json(body, batch, max_batch), top_k)


def _png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(pixels)).decode("ascii")


def _request_body(batch: bool, max_batch: int) -> dict[str, Any]:
    if batch:
        json_schema = {
            "type": "object",
            "required": ["images"],
            "properties": {"images": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": PIXELS_SCHEMA}},
        }
        form = {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": max_batch}}
    else:
        json_schema = {"type": "object", "required": ["pixels"], "properties": {"pixels": PIXELS_SCHEMA}}
        form = {"file": {"type": "string", "format": "binary"}}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": form}},
        "application/json": {"schema": json_schema},
    }
    if not batch:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    return {"requestBody": {"required": True, "content": content}}


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "body"))
        text = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"detail": text}, status_code=422)
