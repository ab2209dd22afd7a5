"""Idle and slow clients against `fmnist serve`: what half-open connections cost the server,
how long it holds them, what an ordinary request gets meanwhile, and what the connection
limit and the keep-alive timeout do. Starts the server itself, on loopback; every loop is
bounded; never a test (tests/test_serve_connections.py checks the behaviour).

    .venv/bin/python benchmarks/slow_clients.py runs/seed
    .venv/bin/python benchmarks/slow_clients.py runs/seed --connections 1100 --nofile 1024

A half-open connection sends a request line and one header, then nothing, as in the issue.
"""

from __future__ import annotations

import argparse
import http.client
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fmnist.core.machine import cpu_name  # noqa: E402

LOG = "slow_clients.log"
HALF_OPEN = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run: str, port: int, extra: list[str], nofile: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fmnist", "serve", run, "--port", str(port), *extra]

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    # The log goes to a file: an unread pipe fills up (accept() failures are logged each second)
    # and would stall the server on its own stderr.
    log = open(LOG, "wb")  # noqa: SIM115 (the server writes it until it ends)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if request(port, timeout=2)[0] == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start: " + Path(LOG).read_text()[-2000:])


def request(port: int, timeout: float = 5.0) -> tuple[int | str, float]:
    """An ordinary GET /healthz on a new connection: (status or error name, milliseconds)."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        status: int | str = conn.getresponse().status
    except OSError as e:
        status = type(e).__name__
    finally:
        conn.close()
    return status, (time.perf_counter() - t0) * 1000


def proc(pid: int) -> tuple[int, int]:
    """The server's open file descriptors and resident memory (KiB)."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS")
    )
    return fds, rss


def open_half(port: int, n: int) -> list[tuple[socket.socket, float]]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HALF_OPEN)
        s.setblocking(False)
        socks.append((s, time.monotonic()))
    return socks


def wait_closed(socks: list[tuple[socket.socket, float]], limit_s: float) -> list[float]:
    """Seconds from opening to the server's close, for each socket closed within ``limit_s``."""
    sel = selectors.DefaultSelector()
    for s, t in socks:
        sel.register(s, selectors.EVENT_READ, t)
    held, deadline = [], time.monotonic() + limit_s
    while len(held) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if not data or b"\r\n\r\n" in data:  # closed, or answered (a 408/400 would be)
                held.append(time.monotonic() - key.data)
                sel.unregister(key.fileobj)
    for s, _ in socks:
        s.close()
    return held


def keep_alive_hold(port: int, limit_s: float) -> float | None:
    """Seconds the server keeps an idle keep-alive connection after a response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=limit_s)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.recv(65536)
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            if not s.recv(65536):
                return time.monotonic() - t0
    except OSError:
        return time.monotonic() - t0
    finally:
        s.close()
    return None


def median_request(port: int, n: int = 20) -> tuple[list, float]:
    results = [request(port) for _ in range(n)]
    return sorted({str(r[0]) for r in results}), statistics.median(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--timeout-header", type=int, default=None, help="passed to fmnist serve (default: its own)")
    ap.add_argument("--limit-concurrency", type=int, default=None, help="passed to fmnist serve")
    ap.add_argument("--nofile", type=int, default=None, help="the server's soft limit on open files")
    args = ap.parse_args()
    extra = []
    if args.timeout_header:
        extra += ["--timeout-header", str(args.timeout_header)]
    if args.limit_concurrency:
        extra += ["--limit-concurrency", str(args.limit_concurrency)]
    port = free_port()
    server = start(args.run, port, extra, args.nofile)
    try:
        print(f"{date.today()} {cpu_name()}, {os.cpu_count()} cores; fmnist serve {' '.join(extra) or '(defaults)'}")
        fds0, rss0 = proc(server.pid)
        statuses, ms = median_request(port)
        print(f"idle: {fds0} fds, {rss0 / 1024:.0f} MiB; GET /healthz {statuses} median {ms:.1f} ms")
        socks = open_half(port, args.connections)
        time.sleep(0.5)  # let the server accept them all
        fds1, rss1 = proc(server.pid)
        statuses, ms = median_request(port)
        print(
            f"{args.connections} half-open: {fds1} fds (+{fds1 - fds0}), {rss1 / 1024:.0f} MiB "
            f"(+{(rss1 - rss0) / max(1, args.connections):.1f} KiB each); GET /healthz {statuses} median {ms:.1f} ms"
        )
        held = wait_closed(socks, 120)
        spread = f"{min(held):.2f}-{max(held):.2f} s after opening" if held else ""
        print(f"closed by the server: {len(held)} of {args.connections} within 120 s, {spread}")
        statuses, ms = median_request(port)
        print(f"afterwards: {proc(server.pid)[0]} fds; GET /healthz {statuses} median {ms:.1f} ms")
        hold = keep_alive_hold(port, 60)
        print(
            f"an idle keep-alive connection was closed {hold:.2f} s after its response" if hold else "keep-alive: held"
        )
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
