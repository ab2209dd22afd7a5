"""The FastAPI app: ``create_app(run, settings)`` loads the model once, and serves the routes
of :mod:`fmnist.serve.routes`, the page's files under ``/static``, and ``/openapi.json`` and
``/docs`` (Swagger UI from the package's own files: works offline).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from fmnist._version import __version__
from fmnist.serve.guard import Guard
from fmnist.serve.inputs import BadRequest
from fmnist.serve.metrics import Metrics
from fmnist.serve.model import ServedModel
from fmnist.serve.routes import STATIC_DIR, predict_router, router
from fmnist.serve.settings import ServeSettings

DOCS_ASSETS = "/docs-assets"


def create_app(run: str | os.PathLike, settings: ServeSettings | None = None) -> FastAPI:
    """The app for the model in ``run`` (a run folder or model file), loaded now, once."""
    settings = (settings or ServeSettings()).validate()
    metrics = Metrics()
    inference = ThreadPoolExecutor(settings.threads, thread_name_prefix="fmnist-inference")
    model = ServedModel(run, settings, executor=inference, metrics=metrics)
    app = FastAPIOffline(
        lifespan=_lifespan,
        title="fmnist",
        version=__version__,
        summary="Fashion-MNIST classifier: the model of one training run, over HTTP.",
        docs_url="/docs",
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    app.state.model, app.state.settings, app.state.metrics = model, settings, metrics
    # CPU work runs in threads, never on the event loop, and only `threads` inferences and
    # two photo decodings at a time per worker. Measured on 2 cores: one thread per request
    # (FastAPI's pool) made 16 concurrent requests fight over the GIL and the cores, and
    # anyio's hop to a thread cost 130-140 µs of CPU per request against 40-75 µs for a
    # plain executor, as much as the seed model's inference itself.
    app.state.inference = inference
    app.state.decoding = ThreadPoolExecutor(2, thread_name_prefix="fmnist-decoding")
    _add_error_handlers(app)
    app.include_router(predict_router(settings))
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The metrics name each request by the route that answers it, read from app.routes when
    # the app starts (Starlette builds the middleware then), after every route is in place.
    app.add_middleware(Guard, max_body_bytes=settings.max_body_bytes, metrics=metrics, routes=app.routes)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    # Start and warm up before the server listens: /readyz is 503 until then (a warm-up that
    # failed keeps it there, with the reason), /livez answers once the loop runs.
    await app.state.model.warm()
    yield
    await app.state.model.close()
    app.state.inference.shutdown(wait=False, cancel_futures=True)
    app.state.decoding.shutdown(wait=False, cancel_futures=True)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, e: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "body"))
        text = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return JSONResponse({"detail": text}, status_code=422)
