"""The outermost layer of the app (plain ASGI, no per-request objects): refuses a body over
the limit before it is read (413), counts the bytes of a body sent without a length, and
records every request's endpoint, status and latency (499 for a client that hung up)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from fmnist.serve.metrics import Endpoints, Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# nginx's "client closed request": the client hung up before its request was answered. Its
# own status, never 500: a client that goes away is no fault of the server's to alert on.
CLIENT_CLOSED = 499
log = logging.getLogger("uvicorn.error")  # Uvicorn's own log, shown in its format


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server's limit of {limit:,} bytes")


class Guard:
    def __init__(self, app: Callable, max_body_bytes: int, metrics: Metrics, routes: Iterable[Any]):
        self.app, self.limit, self.metrics = app, max_body_bytes, metrics
        self.endpoint = Endpoints(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_recording(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.limit:
                await _refuse(send_recording, BodyTooLarge(self.limit))
                return
            if declared == -1:
                await _refuse(send_recording, HTTPException(400, "the Content-Length header is not a number"))
                return
            seen = 0

            async def receive_counting() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise BodyTooLarge(self.limit)
                return message

            try:
                await self.app(scope, receive_counting, send_recording)
            except BodyTooLarge as e:  # raised where no exception handler stood between
                if started:
                    raise
                await _refuse(send_recording, e)
            except ClientDisconnect:
                status = CLIENT_CLOSED
                log.info(_closed_line(scope))
        finally:
            self.metrics.observe_request(
                self.endpoint(scope["path"]), scope["method"], status, time.perf_counter() - start
            )


def _closed_line(scope: Scope) -> str:
    host, port = scope.get("client") or ("?", 0)
    return (
        f'{host}:{port} - "{scope["method"]} {scope["path"]}": the client closed the connection '
        f"before its request was read to the end; nothing answered (counted as status {CLIENT_CLOSED})"
    )


def _content_length(scope: Scope) -> int | None:
    """The declared body size, None when absent, -1 when not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


async def _refuse(send: Send, error: HTTPException) -> None:
    body = json.dumps({"detail": error.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.status_code == 413:
        headers.append((b"connection", b"close"))  # the unread body must not be taken for a next request
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
