"""The package as a user installs it: the wheel built from this tree, installed into a fresh
virtual environment outside the repository, works with no training and no checkout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import write_dataset
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    assert done.returncode == 0, f"{cmd}: rc {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this tree, with the constraints file given on
    the command line (as the README says); returns its bin folder."""
    tmp = tmp_path_factory.mktemp("pkg")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(ROOT)], cwd=tmp)
    wheel = next((tmp / "dist").glob("fmnist-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fmnist/pretrained/quick.safetensors" in names and "fmnist/py.typed" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    run([sys.executable, "-m", "venv", str(tmp / "venv")], cwd=tmp)
    pip = [str(tmp / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "-c", str(ROOT / "constraints.txt"), f"{wheel}[serve]"], cwd=tmp, timeout=900)
    return tmp / "venv" / "bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_installed_package_predicts_trains_and_serves_with_no_checkout(installed, tmp_path):
    fmnist = str(installed / "fmnist")
    here = tmp_path / "elsewhere"
    here.mkdir()
    version = run([fmnist, "--version"], cwd=here).stdout
    assert "fmnist" in version

    # A garment photo: a light shape on a dark background, saved as PNG.
    img = Image.new("L", (64, 64), 0)
    img.paste(220, (20, 8, 44, 56))
    img.save(here / "photo.png")
    out = run([fmnist, "predict", "--pretrained", "photo.png"], cwd=here).stdout
    assert "photo.png" in out and "%" in out

    data = write_dataset(here / "data", 300, 100)
    run([fmnist, "train", "--model", "seed", "--epochs", "1", "--val-size", "50", "--data-dir", str(data),
         "--no-verify", "--out", "run", "--plain"], cwd=here)  # fmt: skip
    assert (here / "run" / "model.safetensors").is_file()

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    server = subprocess.Popen(
        [fmnist, "serve", "--pretrained", "--port", str(port)],
        cwd=here,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=5) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, server.stdout.read().decode() if server.poll() is not None else "no answer"
        pixels = [[0] * 28 for _ in range(28)]
        for row in range(4, 26):
            pixels[row][9:19] = [220] * 10
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/predict",
            data=json.dumps({"pixels": pixels}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["top"] and 0 < answer["top"][0]["probability"] <= 1
    finally:
        server.terminate()
        server.wait(timeout=30)
