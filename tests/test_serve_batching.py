"""`fmnist serve`'s dynamic batching: concurrent requests share forward passes and still get
exactly the answers they get alone; a lone request waits at most --batch-wait (a fake
clock, no timing); a full queue answers 503 with Retry-After; --no-batching still works; the
batcher's metrics are exposed."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.data import load_split  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.batcher import Batcher, Clock, Unavailable  # noqa: E402
from fmnist.serve.inputs import preprocess_files  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402


@pytest.fixture(scope="module")
def images(synthetic_dir):
    return load_split("test", synthetic_dir, verify=False).images


def png(seed: int) -> bytes:
    """A light rectangle on black, which the photo preprocessing finds."""
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    top, left = rng.integers(2, 10, 2)
    a[top : top + rng.integers(8, 16), left : left + rng.integers(6, 16)] = rng.integers(120, 255)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def without_png(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k in ("predicted", "predicted_name", "confidence", "top")}


def test_concurrent_mixed_requests_share_one_pass_and_get_their_answers_alone(synthetic_run, images):
    # 8 JSON singles, 2 JSON batches of 3, 2 uploads, 1 upload batch of 2: 18 images. The
    # batch size is exactly that and the wait far longer, so all of them make one forward pass.
    jsons = [(f"/v1/predict?top_k={1 + i % 10}", {"pixels": images[i].tolist()}) for i in range(8)]
    jsons += [
        (f"/v1/predict/batch?top_k={k}", {"images": [x.tolist() for x in images[10 + k : 13 + k]]}) for k in (2, 7)
    ]
    uploads = [("/v1/predict?top_k=3", {"file": ("a.png", png(1), "image/png")})]
    uploads += [("/v1/predict?top_k=10", {"file": ("b.png", png(2), "image/png")})]
    uploads += [("/v1/predict/batch?top_k=4", [("files", (f"{i}.png", png(i), "image/png")) for i in (3, 4)])]
    settings = ServeSettings(batch_size=18, batch_wait=1000)
    with TestClient(create_app(synthetic_run, settings)) as client, ThreadPoolExecutor(len(jsons) + 3) as pool:
        before = client.get("/metrics").text  # the warm-up batch was one pass already
        sent = [pool.submit(client.post, path, json=body) for path, body in jsons]
        sent += [pool.submit(client.post, path, files=files) for path, files in uploads]
        got = [f.result().json() for f in sent]
        text = client.get("/metrics").text
        model = client.app.state.model
        alone = [model.answer(np.array(body.get("pixels", body.get("images"))), _k(path)) for path, body in jsons]
        for path, files in uploads:
            parts = files if isinstance(files, list) else [("file", files["file"])]
            alone.append(model.answer(preprocess_files([(n, d) for _, (n, d, _) in parts], 10**8), _k(path)))

    def delta(name: str) -> float:
        return metric(text, name) - metric(before, name)

    assert delta("fmnist_batch_images_count") == 1 and delta("fmnist_batch_images_sum") == 18
    assert delta("fmnist_queue_wait_seconds_count") == 13
    for answer, (expected, _) in zip(got, alone):
        answers = answer.get("predictions", [answer])
        assert [without_png(a) for a in answers] == expected  # bit for bit: the floats too


def _k(path: str) -> int:
    return int(path.rsplit("=", 1)[1])


class FakeClock(Clock):
    """Time passes only when the batcher waits, and then all of the time it asked for."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.t += seconds
        return False


def _batcher(clock: FakeClock, runs: list, **kw) -> Batcher:
    def run(pixels, top_ks):
        runs.append((clock.now(), [len(p) for p in pixels]))
        return [[{"n": i} for i in range(len(p))] for p in pixels], 1.0

    options = dict(max_batch=8, max_wait=0.005, max_queue=64) | kw
    return Batcher(run, ThreadPoolExecutor(1), clock=clock, **options)


def test_a_lone_request_waits_the_batch_wait_and_no_longer():
    async def go():
        clock, runs = FakeClock(), []
        b = _batcher(clock, runs)
        b.start()
        answers, ms = await b.submit(np.zeros((1, 28, 28)), 5)
        full = await asyncio.gather(*(b.submit(np.zeros((2, 28, 28)), 5) for _ in range(4)))  # 8: a full batch
        await b.close()
        return runs, answers, full

    runs, answers, full = asyncio.run(go())
    assert runs[0] == (0.005, [1]) and answers == [{"n": 0}]  # waited exactly the wait, for nothing
    assert runs[1] == (0.005, [2, 2, 2, 2]) and [a for a, _ in full] == [[{"n": 0}, {"n": 1}]] * 4  # full: no wait


def test_cancelled_callers_are_skipped_and_submissions_stay_whole():
    async def go():
        clock, runs = FakeClock(), []
        b = _batcher(clock, runs, max_batch=4)
        tasks = [asyncio.ensure_future(b.submit(np.zeros((n, 28, 28)), 1)) for n in (1, 2, 3, 1)]
        await asyncio.sleep(0)  # all four queued
        tasks[1].cancel()
        b.start()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        return runs, done

    runs, done = asyncio.run(go())
    # The 2 is skipped and takes no room: 1 + 3 fill the batch, and the last 1 waits for the next.
    assert [sizes for _, sizes in runs] == [[1, 3], [1]]
    assert isinstance(done[1], asyncio.CancelledError) and [len(d[0]) for d in (done[0], done[2], done[3])] == [1, 3, 1]


def test_a_full_queue_answers_503_with_retry_after(synthetic_run, images):
    settings = ServeSettings(max_batch=2, batch_queue=2, batch_size=1, batch_wait=0)
    body = {"pixels": images[0].tolist()}
    with TestClient(create_app(synthetic_run, settings)) as client, ThreadPoolExecutor(3) as pool:
        release = threading.Event()
        client.app.state.inference.submit(release.wait)  # the one inference thread is busy
        batcher = client.app.state.model.batcher
        queued = [pool.submit(client.post, "/v1/predict", json=body)]
        # in its pass (the warm-up batch was the first)
        until(lambda: metric(client.get("/metrics").text, "fmnist_batch_images_count") == 2)
        queued += [pool.submit(client.post, "/v1/predict", json=body) for _ in range(2)]
        until(lambda: batcher._queued_images == 2)  # and two waiting
        full = client.post("/v1/predict", json=body)
        release.set()
        assert [f.result().status_code for f in queued] == [200] * 3
        text = client.get("/metrics").text
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
    assert "busy (2 images queued, the limit is 2)" in full.json()["detail"]
    assert metric(text, "fmnist_queue_rejected_total") == 1 and metric(text, "fmnist_queue_images") == 0


def test_without_batching_each_request_is_its_own_pass(synthetic_run, images):
    with TestClient(create_app(synthetic_run, ServeSettings(batching=False))) as client:
        model = client.app.state.model
        got = client.post("/v1/predict?top_k=10", json={"pixels": images[0].tolist()}).json()
        batch = client.post("/v1/predict/batch", json={"images": [x.tolist() for x in images[:3]]})
        text = client.get("/metrics").text
    assert model.batcher is None and batch.status_code == 200
    probs = model.predictor.probabilities(images[:1].reshape(1, 1, 28, 28).astype(np.float32))[0]
    assert [t["probability"] for t in sorted(got["top"], key=lambda t: t["label"])] == probs.tolist()
    assert metric(text, "fmnist_batch_images_count") == 0


def until(condition) -> None:
    deadline = time.monotonic() + 30  # a bound on the test, never an assert on time
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class SizeDependent:
    """A predictor whose rounding changes below 3 images, or with the position (``shifty``)."""

    def __init__(self, shifty: bool = False):
        self.shifty = shifty

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        p = np.repeat(x.reshape(len(x), -1)[:, :1].astype(np.float64), 10, 1) / 255
        if self.shifty:
            return p + 1e-12 * np.arange(len(x))[:, None]
        return p + (1e-12 if len(x) < 3 else 0.0)


def test_passes_are_padded_to_the_size_from_which_answers_are_bitwise_the_same(synthetic_run):
    app = create_app(synthetic_run, ServeSettings(batch_size=8))
    model = app.state.model
    model.predictor = SizeDependent()
    with TestClient(app):
        assert model.padding == 3 and model.batcher is not None
        x = np.full((1, 1, 28, 28), 51, np.float32)
        assert np.array_equal(model.probabilities(x), SizeDependent().probabilities(np.repeat(x, 8, 0))[:1])
    shifty = create_app(synthetic_run, ServeSettings(batch_size=8))
    shifty.state.model.predictor = SizeDependent(shifty=True)
    with pytest.warns(UserWarning, match="without batching"), TestClient(shifty):
        assert shifty.state.model.batcher is None


def test_the_queue_must_hold_a_whole_batch_request():
    with pytest.raises(FmnistError, match="--batch-queue 10 is less than --max-batch 64"):
        ServeSettings(batch_queue=10).validate()


def test_unavailable_is_a_503_with_retry_after():
    e = Unavailable("busy", 3)
    assert e.status == 503 and e.headers == {"Retry-After": "3"}
