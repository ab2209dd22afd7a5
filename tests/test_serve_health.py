"""/livez and /readyz: the process answers at once; ready only after the model has answered its
warm-up batch (the app's start-up, which a TestClient outside ``with`` has not run)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fmnist.serve import model as fmodel  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402


@pytest.mark.parametrize("batching", [True, False])
def test_readyz_is_503_until_the_warm_up_batch_then_200(synthetic_run, batching):
    app = create_app(synthetic_run, ServeSettings(batching=batching))
    cold = TestClient(app)  # outside `with`: the app's start-up (the warm-up) has not run
    assert cold.get("/livez").status_code == 200
    r = cold.get("/readyz")
    assert r.status_code == 503 and "warming up" in r.json()["detail"]
    with TestClient(app) as client:
        assert app.state.model.ready
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/healthz").status_code == 200


def test_a_failed_warm_up_stays_unready_and_says_why(monkeypatch, synthetic_run):
    async def broken(self, pixels, top_k):
        raise RuntimeError("no memory for the model")

    monkeypatch.setattr(fmodel.ServedModel, "predict", broken)
    app = create_app(synthetic_run, ServeSettings(batching=False))
    with pytest.warns(UserWarning, match="warm-up failed"), TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and "no memory for the model" in r.json()["detail"]
        assert client.get("/livez").status_code == 200
