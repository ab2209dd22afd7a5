"""A client that hangs up before its request body is in: one info line in the server's log,
no traceback, and status 499 in /metrics (never a 5xx that would page someone), in the app
itself and on real Uvicorn with one worker or two."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

if os.environ.get("CI") and importlib.util.find_spec("fastapi") is None:
    pytest.fail("CI must test the server: install the serve extra (make venv does)", pytrace=False)
pytest.importorskip("fastapi", reason="the server's extra is not installed: pip install 'fmnist[serve]'")

from fmnist.serve.app import create_app  # noqa: E402
from fmnist.serve.guard import CLIENT_CLOSED  # noqa: E402

# What each content type's reader gets before the client goes: a part of the body it declared.
CUT_SHORT = {
    "image/png": b"\x89PNG",
    "application/json": b'{"pix',
    "multipart/form-data; boundary=xx": b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\x89PN',
}


def _scope(content_type: str) -> dict:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"1000"), (b"host", b"x")]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/predict",
        "raw_path": b"/v1/predict",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _hang_up(app, content_type: str) -> list[dict]:
    """The request with a part of its body, then the disconnect Uvicorn reports; what the app sent."""
    messages = [{"type": "http.request", "body": CUT_SHORT[content_type], "more_body": True}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    await app(_scope(content_type), receive, send)
    return sent


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("content_type", list(CUT_SHORT))
def test_a_hang_up_mid_body_is_an_info_line_and_a_499(synthetic_run, caplog, content_type):
    app = create_app(synthetic_run)
    # Listen on uvicorn's own logger: a server started earlier in this process (uvicorn's
    # logging config) stops it propagating to the root logger, where caplog listens.
    seen = _Records()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(seen)
    try:
        with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="uvicorn.error"):
            sent = asyncio.run(_hang_up(app, content_type))
    finally:
        logger.removeHandler(seen)
    assert sent == []  # nobody is left to answer
    records = [r for r in seen.records if "closed the connection" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO and records[0].name == "uvicorn.error"
    assert "POST /v1/predict" in records[0].getMessage()
    assert not [r for r in [*caplog.records, *seen.records] if r.levelno >= logging.WARNING]
    text = app.state.metrics.exposition().decode()
    assert f'fmnist_http_requests_total{{endpoint="/v1/predict",method="POST",status="{CLIENT_CLOSED}"}} 1.0' in text
    assert 'status="5' not in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a real server starting (its workers load the model)
@pytest.mark.parametrize("workers", [1, 2])
def test_real_uvicorn_logs_a_hang_up_without_traceback_and_counts_no_5xx(synthetic_run, workers):
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", str(synthetic_run), "--port", str(port)]
    cmd += ["--workers", str(workers), "--access-log"]  # --access-log: the info level, where the line goes
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # against a hang, not a timing check
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
        for content_type, part in CUT_SHORT.items():
            with socket.create_connection(("127.0.0.1", port)) as s:
                head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n"
                s.sendall(head.encode() + part)
        line = f'endpoint="/v1/predict",method="POST",status="{CLIENT_CLOSED}"}} {len(CUT_SHORT)}.0'
        while line not in (text := httpx.get(f"{url}/metrics").text):  # the server sees each close soon after
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert 'status="5' not in text
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    assert "Traceback" not in log and "ERROR" not in log and "ClientDisconnect" not in log, log
    assert log.count("the client closed the connection") == len(CUT_SHORT), log
