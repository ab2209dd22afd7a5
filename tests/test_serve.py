"""`fmnist serve`'s API through the ASGI test client: every endpoint, agreement with
`fmnist predict`, and every kind of bad request ending in a 4xx with a message."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

if os.environ.get("CI") and importlib.util.find_spec("fastapi") is None:
    pytest.fail("CI must test the server: install the serve extra (make venv does)", pytrace=False)
pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fmnist.core.spec import CLASS_NAMES  # noqa: E402
from fmnist.data import load_split  # noqa: E402
from fmnist.runtime.modelfile import read_model_info  # noqa: E402
from fmnist.runtime.predict import predict, predict_files  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.schemas import BatchResponse, PredictResponse, Samples  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def test_set(synthetic_dir):
    return load_split("test", synthetic_dir, verify=False)


@pytest.fixture(scope="module")
def client(synthetic_run, synthetic_dir):
    settings = ServeSettings(data_dir=str(synthetic_dir), verify=False)
    with TestClient(create_app(synthetic_run, settings)) as c:
        yield c


@pytest.fixture(scope="module")
def strict(synthetic_run, tmp_path_factory):
    """Small limits, and no test images (an empty data folder)."""
    empty = tmp_path_factory.mktemp("no-data")
    settings = ServeSettings(max_body_bytes=64 * 1024, max_batch=3, max_pixels=10_000, data_dir=str(empty))
    with TestClient(create_app(synthetic_run, settings)) as c:
        yield c


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def garment(seed: int) -> np.ndarray:
    """A light shape on black that the photo preprocessing finds (the synthetic test images
    are too noisy for it: it sees no garment in them)."""
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    top, left = rng.integers(2, 10, 2)
    a[top : top + rng.integers(8, 16), left : left + rng.integers(6, 16)] = rng.integers(120, 255)
    return a


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def probs(answer: dict) -> dict[int, float]:
    return {t["label"]: t["probability"] for t in answer["top"]}


# --- the endpoints -----------------------------------------------------------------------


def test_health_and_model_card(client, synthetic_run):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "seed" and health["pid"] == os.getpid()
    card = client.get("/v1/model").json()
    info = read_model_info(synthetic_run)
    assert card["name"] == "seed" and card["backend"] == "torch"  # no model.onnx in the synthetic run
    assert card["parameters"] == info.params == 225_034
    assert card["flops_per_image"] == info.flops_per_image
    assert card["validation_accuracy"] == pytest.approx(info.val_accuracy)
    assert card["test_accuracy"] is None  # `fmnist evaluate` was not run
    assert card["classes"] == list(CLASS_NAMES)
    assert set(card["normalization"]) >= {"mean", "std"}
    assert "preset" in card and card["limits"]["max_batch"] == 64
    assert card["calibrated"] is True and card["temperature"] == info.temperature


def test_the_server_reports_calibrated_probabilities(client, synthetic_run, test_set):
    """softmax(logits / T) with the model file's temperature, not the raw softmax."""
    import torch

    from fmnist.runtime.inference import predict_logits, softmax
    from fmnist.runtime.modelfile import load_model

    model, info = load_model(synthetic_run)
    assert info.temperature is not None and abs(info.temperature - 1) > 1e-3
    logits = predict_logits(model, torch.from_numpy(test_set.images[:1]).unsqueeze(1)).numpy()
    got = client.post("/v1/predict?top_k=10", json={"pixels": test_set.images[0].tolist()}).json()
    probs = [t["probability"] for t in sorted(got["top"], key=lambda t: t["label"])]
    assert probs == pytest.approx(softmax(logits, info.temperature)[0].tolist(), abs=1e-6)
    assert probs != pytest.approx(softmax(logits)[0].tolist(), abs=1e-4)


def test_json_answer_for_test_image_0_is_fmnist_predicts(client, synthetic_run, synthetic_dir, test_set):
    expected = predict(synthetic_run, [0], synthetic_dir, top_k=5, verify=False)[0]
    r = client.post("/v1/predict", json={"pixels": test_set.images[0].tolist()})
    assert r.status_code == 200, r.text
    got = PredictResponse.model_validate(r.json())
    assert got.predicted == expected.predicted and got.predicted_name == expected.predicted_name
    assert [t.label for t in got.top] == [t["label"] for t in expected.top]
    assert [t.probability for t in got.top] == pytest.approx([t["probability"] for t in expected.top], abs=1e-6)
    assert got.model == "seed" and got.inference_ms > 0 and got.model_input_png is None


def test_upload_is_preprocessed_like_predict_files_and_agrees_with_json(client, synthetic_run, tmp_path):
    path = tmp_path / "garment.png"
    path.write_bytes(png(garment(3)))
    [(_, expected)] = predict_files(synthetic_run, [path], top_k=5, save_preprocessed=tmp_path / "seen")
    upload = client.post("/v1/predict", files={"file": ("garment.png", path.read_bytes(), "image/png")}).json()
    raw = client.post("/v1/predict", content=path.read_bytes(), headers={"content-type": "image/png"}).json()
    seen = decode_data_url(upload["model_input_png"])
    assert np.array_equal(seen, np.asarray(Image.open(expected.preprocessed)))  # the CLI's preprocessing
    assert upload["predicted"] == raw["predicted"] == expected.predicted
    assert probs(upload) == pytest.approx({t["label"]: t["probability"] for t in expected.top}, abs=1e-6)
    assert probs(raw) == pytest.approx(probs(upload), abs=1e-6)
    # What the model saw, sent back as JSON pixels, gets the same answer.
    as_json = client.post("/v1/predict", json={"pixels": seen.tolist()}).json()
    assert probs(as_json) == pytest.approx(probs(upload), abs=1e-6)


def test_batch_equals_single(client, test_set):
    images = [test_set.images[i].tolist() for i in range(5)]
    batch = client.post("/v1/predict/batch", json={"images": images}).json()
    BatchResponse.model_validate(batch)
    singles = [client.post("/v1/predict", json={"pixels": p}).json() for p in images]
    assert [a["predicted"] for a in batch["predictions"]] == [s["predicted"] for s in singles]
    for a, s in zip(batch["predictions"], singles):
        assert probs(a) == pytest.approx(probs(s), abs=1e-6)
    files = [("files", (f"{i}.png", png(garment(i)), "image/png")) for i in range(2)]
    uploaded = client.post("/v1/predict/batch", files=files).json()["predictions"]
    one_by_one = [client.post("/v1/predict", files={"file": f[1]}).json() for f in files]
    assert [a["predicted"] for a in uploaded] == [s["predicted"] for s in one_by_one]
    assert [a["model_input_png"] for a in uploaded] == [s["model_input_png"] for s in one_by_one]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k(client, test_set, k):
    answer = client.post(f"/v1/predict?top_k={k}", json={"pixels": test_set.images[1].tolist()}).json()
    assert len(answer["top"]) == k and answer["top"][0]["label"] == answer["predicted"]
    p = [t["probability"] for t in answer["top"]]
    assert p == sorted(p, reverse=True)
    if k == 10:
        assert sum(p) == pytest.approx(1.0, abs=1e-6)


def test_test_images(client, strict, test_set):
    r = client.get("/v1/test-images?count=3&seed=7")
    assert r.status_code == 200
    images = Samples.model_validate(r.json()).images
    assert len(images) == 3 and r.json() == client.get("/v1/test-images?count=3&seed=7").json()
    for s in images:
        assert np.array_equal(np.array(s.pixels), test_set.images[s.index])
        assert s.label == test_set.labels[s.index] and s.name == CLASS_NAMES[s.label]
    missing = strict.get("/v1/test-images")
    assert missing.status_code == 404 and "no test images" in missing.json()["detail"]


def test_metrics_count_requests_statuses_and_inference(synthetic_run, test_set):
    with TestClient(create_app(synthetic_run)) as c:
        for _ in range(3):
            c.post("/v1/predict", json={"pixels": test_set.images[0].tolist()})
        c.post("/v1/predict", json={"pixels": [[1]]})
        c.get("/no/such/page")
        text = c.get("/metrics").text
    assert 'fmnist_http_requests_total{endpoint="/v1/predict",method="POST",status="200"} 3.0' in text
    assert 'fmnist_http_requests_total{endpoint="/v1/predict",method="POST",status="422"} 1.0' in text
    assert 'fmnist_http_requests_total{endpoint="other",method="GET",status="404"} 1.0' in text
    assert 'fmnist_http_request_duration_seconds_count{endpoint="/v1/predict"} 4.0' in text
    assert 'fmnist_inference_seconds_count{backend="torch"} 3.0' in text
    assert "fmnist_images_total 3.0" in text


def test_openapi_docs_and_page_need_no_network(client):
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/v1/test-images", "/healthz", "/metrics"} <= paths
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/*"} <= set(body)
    assert {"413", "415", "422"} <= set(spec["paths"]["/v1/predict"]["post"]["responses"])
    for url in ("/docs", "/"):
        page = client.get(url)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        refs = [m.split('"')[1] for m in page.text.split() if m.startswith(("src=", "href="))]
        assert refs and not [r for r in refs if "//" in r], refs  # nothing from another host
        for ref in refs:
            if ref.startswith("/") and not ref.startswith("/openapi") and ref not in ("/docs", "/metrics"):
                assert client.get(ref).status_code == 200, ref


# --- bad requests: always a 4xx with a message, never a 5xx ------------------------------

ZEROS = [[0] * 28 for _ in range(28)]


def _json(obj) -> dict:
    return {"content": json.dumps(obj), "headers": {"content-type": "application/json"}}


def _raw(data: bytes, ctype: str | None) -> dict:
    return {"content": data, "headers": {"content-type": ctype} if ctype else {}}


BAD = {
    # name: (path, request kwargs, expected status, words in the message)
    "not-json": ("/v1/predict", _raw(b"{pixels: 1", "application/json"), 422, "not valid JSON"),
    "empty-json": ("/v1/predict", _raw(b"", "application/json"), 422, "not valid JSON"),
    "not-utf8": ("/v1/predict", _raw(b"\xff\xfe\x00", "application/json"), 422, "not valid JSON"),
    "no-pixels-key": ("/v1/predict", _json({"image": ZEROS}), 422, '"pixels"'),
    "json-list": ("/v1/predict", _json([ZEROS]), 422, '"pixels"'),
    "flat-784": ("/v1/predict", _json({"pixels": [0] * 784}), 422, "got shape 784"),
    "27-rows": ("/v1/predict", _json({"pixels": ZEROS[:27]}), 422, "got shape 27×28"),
    "ragged": ("/v1/predict", _json({"pixels": [*ZEROS[:27], [0] * 27]}), 422, "different lengths"),
    "3-d": ("/v1/predict", _json({"pixels": [ZEROS]}), 422, "got shape 1×28×28"),
    "scalar": ("/v1/predict", _json({"pixels": 5}), 422, "a single value"),
    "over-255": ("/v1/predict", _json({"pixels": [[256] * 28] * 28}), 422, "0 to 255"),
    "negative": ("/v1/predict", _json({"pixels": [[0] * 27 + [-1]] + ZEROS[1:]}), 422, "row 0, column 27"),
    "nan": (
        "/v1/predict",
        _raw(b'{"pixels": [[NaN' + b", 0" * 27 + b"]" + b", [0]" * 27 + b"]}", "application/json"),
        422,
        "NaN",
    ),
    "infinity": ("/v1/predict", _raw(b'{"pixels": [[Infinity]]}', "application/json"), 422, "Infinity"),
    "1e999": (
        "/v1/predict",
        _raw(
            b'{"pixels": [[1e999'
            + b", 0" * 27
            + b"]"
            + b", "
            + b", ".join([b"[" + b", ".join([b"0"] * 28) + b"]"] * 27)
            + b"]}",
            "application/json",
        ),
        422,
        "0 to 255",
    ),
    "huge-int": ("/v1/predict", _json({"pixels": [[10**40] * 28] * 28}), 422, "numbers"),
    "strings": ("/v1/predict", _json({"pixels": [["7"] * 28] * 28}), 422, "numbers"),
    "nulls": ("/v1/predict", _json({"pixels": [[None] * 28] * 28}), 422, "numbers"),
    "deep-nesting": (
        "/v1/predict",
        _raw(b'{"pixels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
        422,
        "",
    ),
    "top-k-0": ("/v1/predict?top_k=0", _json({"pixels": ZEROS}), 422, "top_k"),
    "top-k-negative": ("/v1/predict?top_k=-3", _json({"pixels": ZEROS}), 422, "top_k"),
    "top-k-11": ("/v1/predict?top_k=11", _json({"pixels": ZEROS}), 422, "top_k"),
    "top-k-huge": ("/v1/predict?top_k=99999999999999999999999", _json({"pixels": ZEROS}), 422, "top_k"),
    "top-k-text": ("/v1/predict?top_k=five", _json({"pixels": ZEROS}), 422, "top_k"),
    "text-plain": ("/v1/predict", _raw(b"a shirt", "text/plain"), 415, "content type"),
    "no-content-type": ("/v1/predict", _raw(b"\x89PNG", None), 415, "content type"),
    "form-urlencoded": ("/v1/predict", {"data": {"file": "x"}}, 415, "content type"),
    "text-as-image": ("/v1/predict", _raw(b"just words", "image/png"), 415, "not an image"),
    "empty-image": ("/v1/predict", _raw(b"", "image/jpeg"), 415, "empty"),
    "truncated-png": (
        "/v1/predict",
        {
            "files": {
                "file": (
                    "cut.png",
                    png(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[:2000],
                    "image/png",
                )
            }
        },
        422,
        "truncated",
    ),
    "non-image-upload": ("/v1/predict", {"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415, "notes.txt"),
    "flat-image": (
        "/v1/predict",
        {"files": {"file": ("grey.png", png(np.full((40, 40), 128, np.uint8)), "image/png")}},
        422,
        "no garment",
    ),
    "png-100000x100000": (
        "/v1/predict",
        {"files": {"file": ("bomb.png", png_declaring(100_000, 100_000), "image/png")}},
        413,
        "bomb",
    ),
    "png-8000x8000": ("/v1/predict", _raw(png_declaring(8000, 8000), "image/png"), 413, "64,000,000 pixels"),
    "two-files-to-single": (
        "/v1/predict",
        {"files": [("file", ("a.png", png(np.eye(28, dtype=np.uint8) * 255), "image/png"))] * 2},
        422,
        "/v1/predict/batch",
    ),
    "text-field-not-file": (
        "/v1/predict",
        {"data": {"file": "photo.jpg"}, "files": {"x": ("", b"", "")}},
        422,
        "-F file=@",
    ),
    "multipart-no-boundary": ("/v1/predict", _raw(b"--x\r\n\r\n", "multipart/form-data"), 422, ""),
    "batch-10000": (
        "/v1/predict/batch",
        _raw(b'{"images": [' + b",".join([b"0"] * 10_000) + b"]}", "application/json"),
        422,
        "10,000 images",
    ),
    "batch-empty": ("/v1/predict/batch", _json({"images": []}), 422, "non-empty"),
    "batch-one-bad": ("/v1/predict/batch", _json({"images": [ZEROS, ZEROS[:3]]}), 422, "images[1]"),
    "batch-raw-image": (
        "/v1/predict/batch",
        _raw(png(np.eye(28, dtype=np.uint8)), "image/png"),
        415,
        "multipart/form-data or JSON",
    ),
    "get-predict": ("/v1/predict", {"method": "GET"}, 405, ""),
    "unknown-path": ("/v2/predict", {"method": "GET"}, 404, ""),
}


def _send(c: TestClient, path: str, kwargs: dict):
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    return c.request(method, path, **kwargs)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_requests_get_a_4xx_with_a_message(client, name):
    path, kwargs, status, words = BAD[name]
    r = _send(client, path, kwargs)
    assert r.status_code == status, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and words in detail, detail


def test_limits_are_settings(strict):
    """The small limits of `strict`: 64 KiB bodies, 3 images per batch, 10,000 pixels."""
    big = strict.post("/v1/predict", content=b"0" * 70_000, headers={"content-type": "application/json"})
    assert big.status_code == 413 and "65,536 bytes" in big.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(20):
            yield b"0" * 8192

    chunked = strict.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    garment = np.zeros((80, 80), np.uint8)
    garment[10:70, 20:60] = 220
    one = strict.post("/v1/predict", files={"file": ("a.png", png(garment), "image/png")})
    assert one.status_code == 200, one.text  # 6,400 pixels
    two = strict.post("/v1/predict/batch", files=[("files", (f"{i}.png", png(garment), "image/png")) for i in range(2)])
    assert two.status_code == 413 and "12,800 pixels" in two.json()["detail"]  # the limit is per request
    four = strict.post("/v1/predict/batch", json={"images": [ZEROS] * 4})
    assert four.status_code == 422 and "at most 3" in four.json()["detail"]
    files = [("files", (f"{i}.png", png(np.eye(28, dtype=np.uint8) * 255), "image/png")) for i in range(5)]
    many = strict.post("/v1/predict/batch", files=files)
    assert many.status_code == 422 and many.json()["detail"]
    assert strict.get("/healthz").status_code == 200  # and the server is still fine


# --- the command ---------------------------------------------------------------------------


def test_serve_command_errors_are_one_line(monkeypatch, capsys, tmp_path, synthetic_run):
    code, _, err = run_cli(monkeypatch, capsys, "serve", tmp_path / "nothing")
    assert code == 2 and err.startswith("error: ") and "no such model file" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(monkeypatch, capsys, "serve", synthetic_run, "--workers", "0")
    assert code == 2 and "--workers" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(monkeypatch, capsys, "serve", synthetic_run, "--port", port)
    assert code == 2 and f"127.0.0.1:{port}" in err and "--port" in err


def test_workers_listen_on_a_socket_that_gets_tcp_nodelay():
    """Keep-alive requests to several workers must not wait on delayed ACKs (server.TcpConfig)."""
    from fmnist.serve.server import TcpConfig

    config = TcpConfig("fmnist.serve.server:app_from_env", factory=True, host="127.0.0.1", port=free_port(), workers=2)
    with config.bind_socket() as sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_share_their_metrics(synthetic_run, test_set):
    """Real Uvicorn with --workers 2: requests land on both, and /metrics counts them all."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", str(synthetic_run), "--port", str(port), "--workers", "2"]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        # A new connection each time, so both workers get some. The second worker may still be
        # loading the model when the first answers: go on until both have answered (or 60 s).
        pids, sent = set(), 0
        deadline = time.monotonic() + 60
        while sent < 40 or (len(pids) < 2 and time.monotonic() < deadline):
            r = httpx.post(f"{url}/v1/predict", json={"pixels": test_set.images[0].tolist()})
            assert r.status_code == 200
            sent += 1
            pids.add(httpx.get(f"{url}/healthz").json()["pid"])
            if len(pids) < 2 and sent >= 40:
                time.sleep(0.1)
        with httpx.Client(base_url=url) as keep_alive:  # one connection: TCP_NODELAY matters
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                keep_alive.get("/healthz")
                times.append(time.perf_counter() - t0)
        assert sorted(times)[5] < 0.030, times  # without TCP_NODELAY: about 44 ms each
        text = httpx.get(f"{url}/metrics").text
        assert len(pids) == 2, pids
        assert f'fmnist_http_requests_total{{endpoint="/v1/predict",method="POST",status="200"}} {sent}.0' in text
        assert f"fmnist_images_total {sent}.0" in text
    finally:
        server.terminate()
        server.wait(30)
    assert server.returncode in (0, -15), server.stdout.read().decode()[-2000:]
