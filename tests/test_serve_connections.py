"""`fmnist serve`'s bounds on connections, on real Uvicorn on 127.0.0.1 with the options
`fmnist serve` gives it (server.uvicorn_options): idle and half-open connections are closed
after the header deadline, idle keep-alive ones after the keep-alive timeout, a request over
the connection limit gets 503, and ordinary requests are answered meanwhile."""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import run_cli

pytest.importorskip("uvicorn", reason="the server's extra is not installed: pip install 'fmnist[serve]'")
import uvicorn  # noqa: E402

from fmnist.serve.connections import HeaderTimeoutProtocol  # noqa: E402
from fmnist.serve.server import uvicorn_options  # noqa: E402
from fmnist.serve.settings import ServeSettings  # noqa: E402

HALF_OPEN = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # a request line and one header, then nothing
WAIT = 30  # seconds to wait for something the server does after a 1-second deadline


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(**settings):
    """A real Uvicorn in a thread with `fmnist serve`'s options; yields the Server."""
    options = uvicorn_options(ServeSettings(port=free_port(), **settings))
    server = uvicorn.Server(uvicorn.Config(hello, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def get(server) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.config.port, timeout=WAIT)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def connect(server, first: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.config.port), timeout=WAIT)
    if first:
        s.sendall(first)
    return s


def exchange(s: socket.socket) -> bytes:
    """One whole request and response on an open connection."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while not answer.endswith(b"\r\n\r\nok"):
        chunk = s.recv(4096)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    return answer


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server closed (each read returns end of file) within WAIT."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + WAIT
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(key.fileobj)
    return closed


def test_300_half_open_connections_are_closed_and_others_are_served_meanwhile():
    with serving(timeout_header=1, limit_concurrency=1000) as server:
        socks = [connect(server, HALF_OPEN) for _ in range(300)]
        try:
            wait_until(lambda: len(server.server_state.connections) >= 300, "the server did not accept them all")
            assert get(server) == 200  # while the 300 are open
            assert closed_by_server(socks) == 300
            wait_until(lambda: not server.server_state.connections, "the server still holds connections")
            assert get(server) == 200
        finally:
            for s in socks:
                s.close()


def test_a_connection_that_sends_nothing_is_closed_too():
    with serving(timeout_header=1) as server, connect(server) as s:
        assert closed_by_server([s]) == 1


def test_a_stalled_second_request_on_a_keep_alive_connection_is_closed():
    """Uvicorn's keep-alive timer stops at the first byte of the next request; the header
    deadline starts there."""
    with serving(timeout_header=1, timeout_keep_alive=600) as server, connect(server) as s:
        assert b"200 OK" in exchange(s)
        s.sendall(HALF_OPEN)
        assert closed_by_server([s]) == 1


def test_keep_alive_connections_are_reused_then_closed_when_idle():
    with serving(timeout_header=600, timeout_keep_alive=1) as server, connect(server) as s:
        for _ in range(3):  # each request on time: the header deadline never closes it
            assert b"200 OK" in exchange(s)
        assert closed_by_server([s]) == 1


def test_a_request_over_the_connection_limit_gets_503():
    with serving(timeout_header=600, limit_concurrency=5) as server:
        idle = [connect(server, HALF_OPEN) for _ in range(4)]  # with the request: 5 open
        wait_until(lambda: len(server.server_state.connections) >= 4, "the server did not accept them")
        assert get(server) == 503
        for s in idle:
            s.close()
        wait_until(lambda: not server.server_state.connections, "the server did not see them close")
        assert get(server) == 200


def test_the_options_fmnist_serve_gives_uvicorn():
    options = uvicorn_options(ServeSettings(timeout_header=7, timeout_keep_alive=3, limit_concurrency=100))
    assert options["http"].func is HeaderTimeoutProtocol and options["http"].keywords == {"timeout_header": 7}
    assert options["timeout_keep_alive"] == 3 and options["limit_concurrency"] == 100


def test_the_bounds_are_serve_options_with_their_defaults(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "serve", "--help")
    assert code == 0
    text = " ".join(out.split())
    for flag, default in (("--timeout-header", 10), ("--timeout-keep-alive", 5), ("--limit-concurrency", 512)):
        assert flag in text and f"(default: {default})" in text.split(flag, 1)[1][:400], flag


@pytest.mark.parametrize(
    "option, value",
    [("--timeout-header", "0"), ("--timeout-keep-alive", "0"), ("--limit-concurrency", "1")],
)
def test_bounds_out_of_range_are_one_error_line(monkeypatch, capsys, tmp_path, option, value):
    code, _, err = run_cli(monkeypatch, capsys, "serve", tmp_path, option, value)
    assert code == 2 and err.startswith(f"error: {option} must be") and err.count("\n") == 1


def test_the_soft_open_file_limit_is_lifted_to_the_hard_one_and_never_lowered():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"hard limit on open files is {hard}")
    code = (
        "import resource; from fmnist.serve.connections import raise_open_file_limit as lift\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(lift(100), lift(500), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["256", "500", "500"]
