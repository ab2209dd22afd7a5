"""The server's routes:

- ``POST /v1/predict``: one image (multipart upload, raw image body, or JSON pixels)
- ``POST /v1/predict/batch``: up to ``max_batch`` images
- ``GET /v1/model``: the model card; ``GET /v1/test-images``: random test images
- ``GET /healthz``, ``GET /livez``, ``GET /readyz`` (503 until the warm-up batch), ``GET /metrics``
- ``GET /``: the web page, from the package's own files (works offline)

(``/openapi.json``, ``/docs`` and the files under ``/static`` are the app's:
:mod:`fmnist.serve.app`.) The handlers take what they serve from ``request.app.state``, set
once by ``create_app``: the model, the settings, the metrics and the two thread pools. Not
through FastAPI dependencies: measured with FastAPI 0.165, each one costs about 10 µs of CPU
per request, a fifth of all that ``/healthz`` costs in the app.

The async handlers only read the request; decoding, preprocessing and inference run in the
thread pools, so a slow photo never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from fmnist.core.errors import FmnistError
from fmnist.core.spec import CLASS_NAMES, NUM_CLASSES
from fmnist.data.images import to_png
from fmnist.serve.inputs import BadRequest, parse_json, preprocess_files
from fmnist.serve.metrics import CONTENT_TYPE, Metrics
from fmnist.serve.model import ServedModel
from fmnist.serve.schemas import PIXELS_SCHEMA, BatchResponse, Health, PredictResponse, Problem, Samples
from fmnist.serve.settings import ServeSettings

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_HINT = (
    "send multipart/form-data with the image as a file field (curl -F file=@photo.jpg), "
    'an image/* body, or application/json {"pixels": 28×28 numbers 0-255}'
)
ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Body or image larger than the server's limits"},
    415: {"model": Problem, "description": "Not an image, or a content type the endpoint does not take"},
    422: {"model": Problem, "description": "Wrong JSON shape, pixels out of range, unreadable image, bad top_k"},
}
# One image's JSON is about 3 KB and parses in about 0.1 ms (docs/serve.md), less than the
# 40-75 µs of CPU of a hop to a thread and back plus the wait for it; bodies up to this size are
# parsed on the event loop.
INLINE_JSON_BYTES = 64 * 1024
TOP_K_HELP = "How many of the most likely classes to return"


# The query's top_k; None means the server's --top-k. FastAPI would document a Query's default
# as fixed when the handler is defined, so `_openapi_extra` documents this one per server.
TopK = Annotated[int | None, Query(ge=1, le=NUM_CLASSES, include_in_schema=False)]

router = APIRouter()  # every route but the two predict routes, whose documentation shows the server's limits


def predict_router(settings: ServeSettings) -> APIRouter:
    """``/v1/predict`` and ``/v1/predict/batch``, documented with these settings' limits (the
    handlers read the limits from ``app.state``, like everything else)."""
    predicts = APIRouter()
    predicts.add_api_route(
        "/v1/predict",
        predict,
        methods=["POST"],
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=_openapi_extra(settings, batch=False),
        summary="Classify one image",
    )
    predicts.add_api_route(
        "/v1/predict/batch",
        predict_batch,
        methods=["POST"],
        response_model=BatchResponse,
        responses=ERRORS,
        openapi_extra=_openapi_extra(settings, batch=True),
        summary=f"Classify up to {settings.max_batch} images",
    )
    return predicts


async def predict(request: Request, top_k: TopK = None) -> Response:
    """One image: a photo of one garment as a multipart upload (field ``file``) or a raw
    ``image/*`` body, preprocessed as ``fmnist predict FILE`` does; or JSON
    ``{"pixels": [[...]]}`` with 28×28 grey levels already in Fashion-MNIST's style
    (light garment on black), which go to the model as they are."""
    kind, payload = await _read(request, batch=False)
    return JSONResponse(await _answer(request, kind, payload, False, top_k))


async def predict_batch(request: Request, top_k: TopK = None) -> Response:
    """Several images in one call: multipart with one ``files`` field per image, or JSON
    ``{"images": [28×28, ...]}``. Answers come in the order sent; one bad image fails
    the whole request, naming it."""
    kind, payload = await _read(request, batch=True)
    return JSONResponse(await _answer(request, kind, payload, True, top_k))


@router.get("/v1/model", summary="The model card")
def model_card(request: Request) -> dict[str, Any]:
    """Name, parameters, FLOPs, validation and test accuracy, classes, normalization,
    training preset, and this server's request limits."""
    return request.app.state.model.card


@router.get(
    "/v1/test-images",
    response_model=Samples,
    responses={404: {"model": Problem, "description": "No test images on this server"}},
    summary="Random test images",
)
def test_images(
    request: Request,
    count: int = Query(12, ge=1, le=64, description="How many"),
    seed: int | None = Query(None, ge=0, description="Seed for a repeatable choice"),
) -> Response:
    """Random images from the 10,000 test images with their true labels, for trying the
    model (the web page's strip). 404 when the data set is not on the server."""
    try:
        test = request.app.state.model.test_images()
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


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz(request: Request) -> Response:
    model: ServedModel = request.app.state.model
    return JSONResponse({"status": "ok", "model": model.name, "backend": model.backend, "pid": os.getpid()})


@router.get("/livez", summary="Liveness: the process answers")
async def livez() -> Response:
    """200 as long as the worker's event loop answers, also while the model warms up."""
    return JSONResponse({"status": "alive", "pid": os.getpid()})


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded and has answered a warm-up batch",
    responses={503: {"model": Problem, "description": "Still warming up, or the warm-up failed (the detail says)"}},
)
async def readyz(request: Request) -> Response:
    """503 until the model has answered one warm-up batch through the request path, then 200:
    send traffic to a worker only when it says ready."""
    model: ServedModel = request.app.state.model
    if not model.ready:
        return JSONResponse({"detail": f"not ready: {model.not_ready}"}, status_code=503)
    return JSONResponse({"status": "ready", "model": model.name, "backend": model.backend, "pid": os.getpid()})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus(request: Request) -> Response:
    """Requests by endpoint and status, request latency and inference time, in the
    Prometheus text format (summed over all workers)."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


async def _answer(request: Request, kind: str, payload: Any, batch: bool, top_k: int | None) -> dict[str, Any]:
    """Decode (uploads only) and classify in the thread pools; the answer's JSON as a dict."""
    state = request.app.state
    model: ServedModel = state.model
    top_k = state.settings.top_k if top_k is None else top_k
    loop = asyncio.get_running_loop()
    seen = None
    if kind == "files":
        pixels, seen = await loop.run_in_executor(state.decoding, _preprocess, payload, state.settings.max_pixels)
    elif len(payload) <= INLINE_JSON_BYTES:  # parsing holds the GIL anyway: a hop to a thread costs more
        pixels = parse_json(payload, batch, state.settings.max_batch)
    else:  # a large batch in a thread, so that the event loop gets its share of the GIL meanwhile
        pixels = await loop.run_in_executor(state.decoding, parse_json, payload, batch, state.settings.max_batch)
    answers, ms = await model.predict(pixels, top_k)  # through the model's queue (serve/batcher.py)
    state.metrics.observe_inference(model.backend, ms / 1000, len(answers))
    if seen is not None:
        for a, url in zip(answers, seen):
            a["model_input_png"] = url
    head = {"model": model.name, "backend": model.backend}
    if batch:
        return {**head, "inference_ms": round(ms, 3), "predictions": answers}
    return {**head, **answers[0], "inference_ms": round(ms, 3)}


async def _read(request: Request, batch: bool) -> tuple[str, Any]:
    """``("json", body bytes)`` or ``("files", [(name, bytes), ...])``; reads, never decodes."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return "json", await request.body()
    if media == "multipart/form-data":
        return "files", await _uploads(request, request.app.state.settings.max_batch if batch else 1, batch)
    if media.startswith("image/") or media == "application/octet-stream":
        if batch:
            raise BadRequest(415, f"a batch is multipart/form-data or JSON, not {media}; {MEDIA_HINT}")
        return "files", [("upload", await request.body())]
    raise BadRequest(415, f"unsupported content type {media or '(none)'!r}; {MEDIA_HINT}")


async def _uploads(request: Request, limit: int, batch: bool) -> list[tuple[str, bytes]]:
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


def _png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png(pixels)).decode("ascii")


def _openapi_extra(settings: ServeSettings, batch: bool) -> dict[str, Any]:
    """What FastAPI cannot infer: the request body (the handlers read it themselves, in three
    media types) and the top_k parameter with this server's default."""
    if batch:
        json_schema = {
            "type": "object",
            "required": ["images"],
            "properties": {
                "images": {"type": "array", "minItems": 1, "maxItems": settings.max_batch, "items": PIXELS_SCHEMA}
            },
        }
        form = {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": settings.max_batch}
        }
    else:
        json_schema = {"type": "object", "required": ["pixels"], "properties": {"pixels": PIXELS_SCHEMA}}
        form = {"file": {"type": "string", "format": "binary"}}
    content: dict[str, Any] = {
        "multipart/form-data": {"schema": {"type": "object", "properties": form}},
        "application/json": {"schema": json_schema},
    }
    if not batch:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
    limits = {"type": "integer", "minimum": 1, "maximum": NUM_CLASSES}
    top_k_schema = {**limits, "default": settings.top_k, "title": "Top K", "description": TOP_K_HELP}
    top_k_doc = {"name": "top_k", "in": "query", "required": False, "schema": top_k_schema, "description": TOP_K_HELP}
    return {"parameters": [top_k_doc], "requestBody": {"required": True, "content": content}}
