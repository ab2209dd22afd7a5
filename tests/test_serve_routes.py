"""The server's routes and its metrics' endpoints come from one place: every route of the app
is counted under its own path, nothing else gets a label of its own, and the documentation of
the predict routes shows the server's settings."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
from fastapi.testclient import TestClient  # noqa: E402
from starlette.routing import Mount, Route  # noqa: E402

from fmnist.core.spec import NUM_CLASSES  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.metrics import OTHER, Endpoints, iter_route_contexts  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402

# What the metrics counted by name before they were derived from the routes: none may go missing.
NAMED_BEFORE = {"/", "/v1/predict", "/v1/predict/batch", "/v1/model", "/v1/test-images", "/healthz", "/metrics"}
NAMED_BEFORE |= {"/openapi.json", "/docs", "/static", "/docs-assets"}


@pytest.fixture(scope="module")
def client(synthetic_run, synthetic_dir):
    settings = ServeSettings(data_dir=str(synthetic_dir), verify=False, max_batch=3, top_k=2)
    with TestClient(create_app(synthetic_run, settings)) as c:
        yield c


def test_the_metrics_count_every_route_under_its_own_path(client):
    paths = {r.path for r in iter_route_contexts(client.app.routes)}
    assert paths >= NAMED_BEFORE and set(client.get("/openapi.json").json()["paths"]) <= paths
    assert Endpoints(client.app.routes).labels == paths | {OTHER}
    mounts = {
        r.path for r in iter_route_contexts(client.app.routes) if isinstance(getattr(r, "original_route", r), Mount)
    }
    assert mounts == {"/static", "/docs-assets"}
    for path in sorted(paths):
        client.get(f"{path}/style.css" if path in mounts else path)  # a POST route's 405 is counted all the same
    client.get("/static")  # a mount's own path is no file under it
    client.get("/v1/predict/batch/x")
    text = client.get("/metrics").text
    counted = set(re.findall(r'fmnist_http_requests_total\{endpoint="([^"]*)"', text))
    assert counted == paths | {OTHER}


def test_a_new_route_is_counted_without_being_listed():
    async def app(scope, receive, send):  # pragma: no cover - never called
        pass

    endpoints = Endpoints([Route("/v1/runs/{name}", app), Route("/healthz", app), Mount("/files", app=app)])
    assert endpoints("/v1/runs/seed") == "/v1/runs/{name}"
    assert endpoints("/healthz") == "/healthz"
    assert endpoints("/files/a/b.png") == "/files"
    for path in ("/v1/runs", "/v1/runs/a/b", "/files", "/healthz/", "/etc/passwd"):
        assert endpoints(path) == OTHER, path


def test_the_predict_routes_document_this_servers_settings(client):
    spec = client.get("/openapi.json").json()["paths"]
    assert spec["/v1/predict/batch"]["post"]["summary"] == "Classify up to 3 images"
    batch = spec["/v1/predict/batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["properties"]["images"]["maxItems"] == 3
    for path in ("/v1/predict", "/v1/predict/batch"):
        [top_k] = spec[path]["post"]["parameters"]
        assert top_k["name"] == "top_k" and top_k["in"] == "query" and not top_k["required"]
        assert top_k["schema"] | {"default": None} == {
            "type": "integer",
            "minimum": 1,
            "maximum": NUM_CLASSES,
            "default": None,
            "title": "Top K",
            "description": top_k["description"],
        }
        assert top_k["schema"]["default"] == 2


def test_top_k_defaults_to_the_servers_and_keeps_its_bounds(client):
    zeros = {"pixels": [[0] * 28] * 28}
    assert len(client.post("/v1/predict", json=zeros).json()["top"]) == 2
    assert len(client.post(f"/v1/predict?top_k={NUM_CLASSES}", json=zeros).json()["top"]) == NUM_CLASSES
    batch = client.post("/v1/predict/batch?top_k=1", json={"images": [zeros["pixels"]]}).json()
    assert len(batch["predictions"][0]["top"]) == 1
    for bad, words in (("0", "greater than or equal to 1"), (str(NUM_CLASSES + 1), "less than or equal to 10")):
        r = client.post(f"/v1/predict?top_k={bad}", json=zeros)
        assert r.status_code == 422 and r.json()["detail"] == f"top_k: Input should be {words}"
