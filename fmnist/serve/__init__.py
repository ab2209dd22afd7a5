"""``fmnist serve``: a REST API and a web page for one run's model (FastAPI on Uvicorn).

``fmnist.serve.app.create_app(run, settings)`` builds the app; ``fmnist.serve.server.serve``
runs it with its workers. This package file imports nothing, so that the CLI can read the
settings (:mod:`fmnist.serve.settings`) without loading FastAPI.
"""
