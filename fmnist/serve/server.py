"""Running the app: Uvicorn with one or several worker processes.

The model is loaded once in this process first, so a bad run folder ends in one ``error:``
line instead of a traceback per worker. With one worker that app is the one served; with
several, each worker builds its own (``app_from_env``, found by Uvicorn by name), and
prometheus-client counts in a temporary folder that all of them share.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from fmnist.core.errors import FmnistError
from fmnist.runtime.modelfile import resolve_model_path
from fmnist.serve.app import create_app
from fmnist.serve.connections import HeaderTimeoutProtocol, raise_open_file_limit
from fmnist.serve.metrics import MULTIPROC_ENV
from fmnist.serve.settings import ServeSettings

CONFIG_ENV = "FMNIST_SERVE_CONFIG"  # how the parent hands the run and settings to its workers
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serve(run: str | os.PathLike, settings: ServeSettings) -> None:
    """Serve ``run``'s model until interrupted (Ctrl-C or SIGTERM)."""
    settings.validate()
    path = resolve_model_path(run).resolve()
    _check_port_free(settings.host, settings.port)
    raise_open_file_limit()
    torch.set_num_threads(settings.threads)
    app = create_app(path, settings)  # fails here, once, if the model cannot be served
    model = app.state.model
    url = f"http://{_url_host(settings.host)}:{settings.port}"
    print(
        f"serving {path.parent.name} ({model.name} on {model.card['backend_name']}, "
        f"{settings.workers} worker{'s' if settings.workers > 1 else ''}) at {url}/ ; API docs at {url}/docs",
        file=sys.stderr,
    )
    if settings.host not in LOOPBACK:
        print(
            f"warning: listening on {settings.host}: anyone who can reach it can use it (no authentication)",
            file=sys.stderr,
        )
    common = uvicorn_options(settings)
    if settings.workers == 1:
        _freeze_garbage_collector()
        uvicorn.run(app, **common)
        return
    del app, model
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="fmnist-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    os.environ[CONFIG_ENV] = json.dumps({"run": str(path), "settings": settings.to_dict()})
    try:
        config = TcpConfig(f"{__name__}:app_from_env", factory=True, workers=settings.workers, **common)
        Multiprocess(config, sockets=[config.bind_socket()]).run()  # what uvicorn.run does for workers
    except KeyboardInterrupt:
        pass
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)


def uvicorn_options(settings: ServeSettings) -> dict[str, Any]:
    """What ``uvicorn.Config`` gets, one worker or several (the tests serve with these too)."""
    return dict(
        host=settings.host,
        port=settings.port,
        access_log=settings.access_log,
        log_level="info" if settings.access_log else "warning",
        timeout_graceful_shutdown=5,
        http=functools.partial(HeaderTimeoutProtocol, timeout_header=settings.timeout_header),
        timeout_keep_alive=settings.timeout_keep_alive,
        limit_concurrency=settings.limit_concurrency,
    )


class TcpConfig(uvicorn.Config):
    """Uvicorn's config, with a listening socket that says it is TCP.

    With several workers Uvicorn binds the socket itself and leaves its protocol number at 0;
    accepted connections inherit it, asyncio then never sets TCP_NODELAY on them, and every
    keep-alive request after a connection's first waits for the client's delayed ACK.
    Measured here: 44-48 ms per request at concurrency 1 with --workers 2, against 4-5 ms
    with one worker (uvicorn issue #3149, open in 0.54)."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.set_inheritable(True)
        return sock


def app_from_env() -> FastAPI:
    """A worker's app, from what :func:`serve` put in the environment."""
    config = json.loads(os.environ[CONFIG_ENV])
    settings = ServeSettings(**config["settings"])
    torch.set_num_threads(settings.threads)
    app = create_app(Path(config["run"]), settings)
    _freeze_garbage_collector()
    return app


def _freeze_garbage_collector() -> None:
    """Move everything loaded so far (PyTorch, FastAPI, the model: ~240,000 objects) out of
    the garbage collector's sight: a full collection over them took 0.25 s here, a pause
    that would land on whichever requests were in flight."""
    gc.collect()
    gc.freeze()


def _check_port_free(host: str, port: int) -> None:
    """One clear line now rather than Uvicorn's log after the model has loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FmnistError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise FmnistError(
                f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host"
            ) from None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
