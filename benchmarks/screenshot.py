"""docs/serve.png: the web page of `fmnist serve`, in the same headless Chromium the browser
tests drive (Debian's, through Playwright; never a downloaded browser). Not a test.

    .venv/bin/python benchmarks/screenshot.py runs/quick --out docs/serve.png

It uploads a test image made to look like a product photo (dark garment on white, enlarged,
off centre), so the page shows the 28×28 image the model saw beside its answer.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmnist.data import load_split  # noqa: E402
from fmnist.serve.app import create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def photo_of(pixels: np.ndarray) -> bytes:
    """A test image as a product photo: dark on white, 8× larger, off centre, JPEG."""
    big = Image.fromarray(255 - pixels).resize((224, 224), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (400, 300), 255)
    canvas.paste(big, (120, 40))
    buf = io.BytesIO()
    canvas.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run folder to serve")
    ap.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    ap.add_argument("--index", type=int, default=0, help="test image to upload as a photo")
    args = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(args.run), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        photo = Path(tmp) / "product-photo.jpg"
        photo.write_bytes(photo_of(load_split("test").images[args.index]))
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 880}, device_scale_factor=1)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector(".sample")
        page.wait_for_function("document.querySelectorAll('#model-card dd').length > 5")
        page.set_input_files("#file-input", str(photo))
        page.wait_for_function("Number(document.getElementById('result').dataset.answers || 0) >= 1")
        box = page.locator("#draw-canvas").bounding_box()
        x, y = box["x"], box["y"]
        page.mouse.move(x + 90, y + 50)  # a trouser-like drawing, left as it is on the canvas
        page.mouse.down()
        for px, py in ((175, 50), (185, 230), (150, 230), (133, 110), (115, 230), (80, 230), (90, 50)):
            page.mouse.move(x + px, y + py, steps=6)
        page.mouse.up()
        page.wait_for_function("Number(document.getElementById('result').dataset.answers || 0) >= 2")
        page.set_input_files("#file-input", str(photo))  # the photo's answer is the one shown
        page.wait_for_function("Number(document.getElementById('result').dataset.answers || 0) >= 3")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
