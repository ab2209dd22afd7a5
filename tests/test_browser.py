"""The web page and the HTML report in a real browser: Debian's Chromium driven headless by
Playwright, against a real Uvicorn server on a free loopback port.

In CI (the CI variable set) a missing Chromium or Playwright fails these tests; elsewhere
they are skipped with the reason."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from conftest import needs_real_data
from PIL import Image

from fmnist.core.spec import CLASS_NAMES
from fmnist.data import load_split
from fmnist.reporting.report import write_report
from fmnist.runtime.predict import Prediction, predict_files

CHROMIUM = Path("/usr/bin/chromium")
# A browser process, a server thread and the real data's smoke run: seconds per test.
pytestmark = pytest.mark.slow


def _browser_problem() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install 'fmnist[dev]'"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)"
    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install 'fmnist[serve]'"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {problem}", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A page that refuses any request off this machine, and records what it refused and
    every console error: the page and the report must work offline."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    p = context.new_page()
    p.outside, p.errors = [], []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "file:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            p.outside.append(route.request.url)
            route.abort()

    p.route("**/*", only_local)
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    yield p
    context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(browser, smoke_run):
    """`fmnist serve`'s app on real Uvicorn in a thread, for the smoke run (real data: the
    point is a real garment's right label)."""
    import uvicorn

    from fmnist.serve.app import create_app
    from fmnist.serve.settings import ServeSettings

    # A low pixel limit, so that a test can see the page scale a large photo down to fit it.
    app = create_app(smoke_run, ServeSettings(max_pixels=1_000_000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(10)


def answers(page) -> int:
    return int(page.get_attribute("#result", "data-answers") or 0)


def wait_for_answer(page, before: int) -> None:
    """Until the page shows its next answer; an error message shown instead fails the test."""
    page.wait_for_function(
        f"Number(document.getElementById('result').dataset.answers || 0) > {before}"
        " || !document.getElementById('error').hidden",
        timeout=15000,
    )
    assert page.is_hidden("#error"), page.text_content("#error")


@needs_real_data
def test_page_classifies_an_upload_a_drawing_and_a_test_image(page, live_server, smoke_run, tmp_path):
    # A test image as a file, one that the model gets right through the photo preprocessing.
    test = load_split("test")
    paths = []
    for i in range(30):
        paths.append(tmp_path / f"test-{i}.png")
        Image.fromarray(test.images[i]).save(paths[-1])
    results = predict_files(smoke_run, paths)
    right = [(p, r) for i, (p, r) in enumerate(results) if isinstance(r, Prediction) and r.predicted == test.labels[i]]
    assert right, "the smoke model gets none of 30 test images right"
    upload, expected = right[0]

    page.goto(live_server)
    page.wait_for_function("document.querySelectorAll('#model-card dd').length > 5")
    assert "seed" in page.text_content("#model-card")

    n = answers(page)
    page.set_input_files("#file-input", str(upload))
    wait_for_answer(page, n)
    assert page.text_content("#result-label") == expected.predicted_name == CLASS_NAMES[expected.predicted]
    assert page.locator("#bars li").count() == 5
    assert page.evaluate("document.getElementById('seen').naturalWidth") == 28

    # A photo over the server's pixel limit: the page scales it down instead of failing.
    photo = Image.new("L", (1500, 1000), 255)
    photo.paste(Image.fromarray(255 - test.images[0]).resize((560, 560)), (400, 200))
    photo.save(tmp_path / "large-photo.png")
    n = answers(page)
    page.set_input_files("#file-input", str(tmp_path / "large-photo.png"))
    wait_for_answer(page, n)
    assert page.is_hidden("#error")
    assert page.text_content("#result-label") in CLASS_NAMES

    n = answers(page)
    box = page.locator("#draw-canvas").bounding_box()
    x, y = box["x"], box["y"]
    page.mouse.move(x + 70, y + 40)
    page.mouse.down()
    for px, py in ((200, 40), (200, 240), (70, 240), (70, 40)):  # a bag-like outline
        page.mouse.move(x + px, y + py, steps=8)
    page.mouse.up()
    wait_for_answer(page, n)
    assert page.text_content("#result-label") in CLASS_NAMES
    assert page.get_attribute("#seen", "src").startswith("data:image/png;base64,")

    page.wait_for_selector(".sample")
    sample = page.locator(".sample").nth(2)
    index, label = int(sample.get_attribute("data-index")), int(sample.get_attribute("data-label"))
    assert label == test.labels[index]
    n = answers(page)
    sample.click()
    wait_for_answer(page, n)
    assert f"actual: {CLASS_NAMES[label]} (test image {index})" in page.text_content("#result-actual")
    assert page.locator("#bars li").count() == 5
    assert page.is_hidden("#error")
    assert not page.outside and not page.errors, (page.outside, page.errors)
    pixels = np.array(
        page.evaluate(
            "(() => { const c = document.querySelectorAll('.sample canvas')[2];"
            " return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data).filter((_, i) => i % 4 == 0); })()"
        )
    )
    assert np.array_equal(pixels.reshape(28, 28), test.images[index])  # the strip shows the real image


@needs_real_data
def test_api_docs_render_offline(page, live_server):
    page.goto(f"{live_server}/docs")
    page.wait_for_selector(".opblock", timeout=15000)
    assert page.locator(".opblock").count() >= 6
    assert not page.outside, page.outside


def test_every_image_in_the_report_loads(page, synthetic_run, synthetic_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    report = write_report(run, synthetic_dir, verify=False)
    page.goto(report.resolve().as_uri())
    images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert len(images) >= 6
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert not broken, broken
    assert not page.outside and not page.errors, (page.outside, page.errors)
