"""`fmnist serve`: the REST API and web page (needs `pip install 'fmnist[serve]'`). Only the
server's settings are imported to build the options; FastAPI and the model load when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from fmnist.cli.options import model_source, optional_run_argument, pretrained_option, with_settings
from fmnist.core.errors import FmnistError
from fmnist.serve.settings import ServeSettings


@with_settings(ServeSettings)
def serve(
    run: Optional[Path] = optional_run_argument(), pretrained: bool = pretrained_option(), *, settings: ServeSettings
):
    """A REST API and a web page for the model (FastAPI on Uvicorn): open http://HOST:PORT/
    for the page, /docs for the API. Needs `pip install 'fmnist[serve]'`."""
    try:  # optional: FastAPI and Uvicorn, and what they load
        from fmnist.serve.server import serve as run_server
    except ImportError as e:
        raise FmnistError(f"the server needs {e.name}: pip install 'fmnist[serve]'") from None
    run_server(model_source(run, pretrained), settings)
