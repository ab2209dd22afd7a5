"""`fmnist serve`: the REST API and web page (needs `pip install 'fmnist[serve]'`). Only the
server's settings are imported to build the options; FastAPI and the model load when it runs."""

from __future__ import annotations

from pathlib import Path

from fmnist.cli.options import run_argument, with_settings
from fmnist.core.errors import FmnistError
from fmnist.serve.settings import ServeSettings


@with_settings(ServeSettings)
def serve(run: Path = run_argument(), *, settings: ServeSettings):
    """A REST API and a web page for the model (FastAPI on Uvicorn): open http://HOST:PORT/
    for the page, /docs for the API. Needs `pip install 'fmnist[serve]'`."""
    try:  # optional: FastAPI and Uvicorn, and what they load
        from fmnist.serve.server import serve as run_server
    except ImportError as e:
        raise FmnistError(f"the server needs {e.name}: pip install 'fmnist[serve]'") from None
    run_server(run, settings)
