"""Load on `fmnist serve`: requests/s, p50/p99 latency and errors at several concurrencies,
for single-image and batch requests. Starts the server itself, on loopback; never a test.

    nice .venv/bin/python benchmarks/load.py seed=runs/seed quick=runs/quick
    nice .venv/bin/python benchmarks/load.py seed=runs/seed --workers 1 2 --requests 500
    nice .venv/bin/python benchmarks/load.py quick=--pretrained --modes single --batching on off --wrk

``--batching on off`` serves each model twice, with and without ``--no-batching``. ``--wrk``
also measures every single-image cell with ``wrk`` (``apt-get install wrk``), an independent
client in C, posting the JSON of test image 0 (a Lua script written next to the results).

Each cell is bounded: a fixed number of requests, or the time limit, whichever comes
first, after a warm-up. The load generator is one asyncio process with httpx.AsyncClient
(one connection per concurrent client), on the same machine as the server: on a 2-core
machine the two share the cores, as the issue asks. Single requests send test images as
JSON pixels (``/v1/predict``); ``upload`` sends the same images as PNG files, through the
photo preprocessing; batch requests send ``--batch`` images to ``/v1/predict/batch``.
Errors are any status but 200, and any connection error or timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.core.machine import cpu_name  # noqa: E402
from fmnist.data import load_split  # noqa: E402
from fmnist.data.images import preprocess_bytes  # noqa: E402

MODES = ("single", "upload", "batch")


@dataclass
class Cell:
    model: str
    backend: str
    workers: int
    mode: str
    concurrency: int
    requests: int
    seconds: float
    images_per_request: int
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    percentiles: tuple[float, float, float] | None = None  # wrk's own p50, p99, p99.9

    def row(self) -> list[str]:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        p50, p99, p999 = self.percentiles or np.percentile(lat, [50, 99, 99.9])
        return [
            self.model,
            self.backend,
            str(self.workers),
            self.mode + (f" ×{self.images_per_request}" if self.images_per_request > 1 else ""),
            str(self.concurrency),
            f"{self.requests:,}",
            f"{self.rps:,.0f}",
            f"{self.rps * self.images_per_request:,.0f}",
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{p999:.1f}",
            str(self.errors),
        ]


HEADER = [
    "model",
    "backend",
    "workers",
    "request",
    "concurrency",
    "requests",
    "req/s",
    "images/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, workers: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    where = ["--pretrained"] if run == "--pretrained" else [run]
    cmd = [sys.executable, "-m", "fmnist", "serve", *where, "--port", str(port), "--workers", str(workers), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {proc.stdout.read().decode()[-2000:]}")
        try:
            # every worker must be up: ask until as many different PIDs answered
            pids = {httpx.get(f"{url}/healthz", timeout=2).json()["pid"] for _ in range(8 * workers)}
            if len(pids) >= workers or time.monotonic() > deadline - 100:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the server did not start in 120 s")


def payloads(images: np.ndarray, mode: str, batch: int) -> list[dict]:
    """Pre-built request bodies, so the load generator spends its time on HTTP, not JSON.
    Uploads use only images the photo preprocessing accepts (a few test images are too faint
    for it: 'no garment found', a correct 422 that would count as an error here)."""
    if mode == "upload":
        images = np.stack([x for x in images if _preprocesses(x)])
    out = []
    for i in range(64):
        if mode == "single":
            body = json.dumps({"pixels": images[i].tolist()}).encode()
            out.append({"content": body, "headers": {"content-type": "application/json"}})
        elif mode == "upload":
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            out.append({"files": {"file": (f"{i}.png", buf.getvalue(), "image/png")}})
        else:
            chunk = [images[(i * batch + j) % len(images)].tolist() for j in range(batch)]
            out.append(
                {"content": json.dumps({"images": chunk}).encode(), "headers": {"content-type": "application/json"}}
            )
    return out


def _preprocesses(pixels: np.ndarray) -> bool:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    try:
        preprocess_bytes(buf.getvalue())
        return True
    except FmnistError:
        return False


async def load(
    url: str, path: str, bodies: list[dict], concurrency: int, requests: int, time_limit: float, warmup: int
):
    """(latencies in ms, errors, requests done, seconds) for ``requests`` requests or
    ``time_limit`` seconds, whichever ends first, ``concurrency`` at a time."""
    # One client (one keep-alive connection) per concurrent user: with one AsyncClient
    # sharing a 16-connection pool, httpx itself was the bottleneck (measured on /healthz:
    # 242 requests/s and p99 360 ms, against 616 and 36 ms with a client each).
    clients = [
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        for _ in range(concurrency)
    ]
    sent, errors = 0, 0
    latencies: list[float] = []

    async def user(client: httpx.AsyncClient, deadline: float, limit: int) -> None:
        nonlocal sent, errors
        # Requests built once and sent again and again: building one costs the client as
        # much CPU as the seed model costs the server.
        prepared = [client.build_request("POST", path, **body) for body in bodies]
        while sent < limit and time.perf_counter() < deadline:
            request = prepared[sent % len(prepared)]
            sent += 1
            t0 = time.perf_counter()
            try:
                ok = (await client.send(request)).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += not ok

    try:
        # warm-up: connections open, thread pools and ONNX Runtime's arenas sized
        await asyncio.gather(*(user(c, time.perf_counter() + 30, warmup) for c in clients))
        sent, errors, latencies = 0, 0, []
        start = time.perf_counter()
        await asyncio.gather(*(user(c, start + time_limit, requests) for c in clients))
        return latencies, errors, len(latencies), time.perf_counter() - start
    finally:
        for c in clients:
            await c.aclose()


def measure(label: str, run: str, workers: int, extra: list[str], images: np.ndarray, args) -> list[Cell]:
    """Every mode and concurrency for one server."""
    cells = []
    proc, url = start_server(run, workers, extra)
    try:
        backend = httpx.get(f"{url}/v1/model").json()["backend"]
        for mode in args.modes:
            bodies = payloads(images, mode, args.batch)
            per = args.batch if mode == "batch" else 1
            path = "/v1/predict/batch" if mode == "batch" else "/v1/predict"
            for c in args.concurrency:
                n = max(args.requests // per, 4 * c)
                lat, errors, done, secs = asyncio.run(
                    load(url, path, bodies, c, n, args.time_limit, warmup=max(2 * c, 20))
                )
                cells.append(Cell(label, backend, workers, mode, c, done, secs, per, lat, errors))
                print("| " + " | ".join(cells[-1].row()) + " |", flush=True)
                if args.wrk and mode == "single":
                    cells.append(run_wrk(label, backend, workers, url, images[0], c, args.time_limit))
                    print("| " + " | ".join(cells[-1].row()) + " |", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return cells


WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("%s"):read("*a")
done = function(summary, latency, requests)
  io.write(string.format("FMNIST %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), 0))
end
"""


def run_wrk(label: str, backend: str, workers: int, url: str, image: np.ndarray, c: int, seconds: float) -> Cell:
    """One cell measured by wrk (one thread, ``c`` connections): its own counts and percentiles."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-wrk-"))
    (folder / "body.json").write_text(json.dumps({"pixels": image.tolist()}))
    (folder / "post.lua").write_text(WRK_SCRIPT % (folder / "body.json"))
    cmd = ["wrk", "-t1", f"-c{c}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", str(folder / "post.lua")]
    out = subprocess.run([*cmd, f"{url}/v1/predict"], capture_output=True, text=True, check=True).stdout
    fields = [int(x) for x in out.split("FMNIST ", 1)[1].split()]
    done, micros, io_errors, status_errors, p50, p99, p999 = fields[:7]
    cell = Cell(f"{label}, wrk", backend, workers, "single", c, done, micros / 1e6, 1, [], io_errors + status_errors)
    cell.percentiles = (p50 / 1000, p99 / 1000, p999 / 1000)
    return cell


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER, e.g. seed=runs/seed")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="server worker counts to measure")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--batching", nargs="+", default=["on"], choices=["on", "off"], help="serve with and/or without")
    ap.add_argument("--wrk", action="store_true", help="also measure the single-image cells with wrk")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--requests", type=int, default=3000, help="requests per cell at most")
    ap.add_argument("--time-limit", type=float, default=8.0, help="seconds per cell at most")
    ap.add_argument("--batch", type=int, default=16, help="images per batch request")
    ap.add_argument("--server-args", default="", help="extra `fmnist serve` options, e.g. '--backend torch'")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    images = load_split("test").images[:1024]
    cells: list[Cell] = []
    print(f"# {cpu_name()}, {os.cpu_count()} cores; {date.today()}; server and load generator on the same machine")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for spec in args.runs:
        name, _, run = spec.partition("=")
        for workers in args.workers:
            for batching in args.batching:
                extra = args.server_args.split() + ([] if batching == "on" else ["--no-batching"])
                label = f"{name} ({'batching' if batching == 'on' else 'no batching'})"
                cells += measure(label, run, workers, extra, images, args)
    if args.json:
        args.json.write_text(
            json.dumps([{**dict(zip(HEADER, c.row())), "seconds": round(c.seconds, 2)} for c in cells], indent=1)
        )


if __name__ == "__main__":
    main()
