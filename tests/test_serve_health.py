"""/livez and /readyz: the process answers at once; ready only after the model has answered its
warm-up batch. The warm-up is held on a gate in the test, so nothing depends on timing."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fmnist.serve import model as fmodel  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402


def wait_ready(client: TestClient, tries: int = 2000) -> int:
    for _ in range(tries):
        status = client.get("/readyz").status_code
        if status != 503:
            return status
        threading.Event().wait(0.005)
    return 503


@pytest.mark.parametrize("batching", [True, False])
def test_readyz_is_503_until_the_warm_up_batch_then_200(monkeypatch, synthetic_run, batching):
    gate = threading.Event()
    real_start = fmodel.ServedModel.start

    async def held_start(self):
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
        await real_start(self)

    monkeypatch.setattr(fmodel.ServedModel, "start", held_start)
    with TestClient(create_app(synthetic_run, ServeSettings(batching=batching))) as client:
        assert client.get("/livez").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and "warming up" in r.json()["detail"]
        gate.set()
        assert wait_ready(client) == 200
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/healthz").status_code == 200


def test_a_failed_warm_up_stays_unready_and_says_why(monkeypatch, synthetic_run):
    async def broken(self, pixels, top_k):
        raise RuntimeError("no memory for the model")

    monkeypatch.setattr(fmodel.ServedModel, "predict", broken)
    app = create_app(synthetic_run, ServeSettings(batching=False))
    with pytest.warns(UserWarning, match="warm-up failed"), TestClient(app) as client:
        for _ in range(2000):
            r = client.get("/readyz")
            if "failed" in r.json()["detail"]:
                break
            threading.Event().wait(0.005)
        assert r.status_code == 503 and "no memory for the model" in r.json()["detail"]
        assert client.get("/livez").status_code == 200
