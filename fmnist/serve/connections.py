"""Bounds on what a connection may hold: a deadline for each request's headers.

Uvicorn (0.55) has a keep-alive timeout (idle *between* requests, armed when a response
ends) and ``limit_concurrency`` (a 503 to a request that arrives while that many
connections are open), but nothing bounds a connection whose request never finishes
arriving: one that sends ``GET / HTTP/1.1`` and a header, then nothing, is held forever,
and so is one that connects and sends nothing (its keep-alive timer never starts). Enough
of them exhaust the process's file descriptors.

:class:`HeaderTimeoutProtocol` is Uvicorn's own HTTP protocol (h11, or httptools when it is
installed: whichever ``http="auto"`` picks) with one timer more: armed when the connection
is made and when the first bytes of a further request arrive, cancelled once the request's
headers are complete, and closing the connection if it fires first. A subclass rather than
a proxy in front or a patched Uvicorn: it is the smallest thing that sees both when a
request starts and when its headers end. Bodies are not timed: the app reads them, within
``--max-body-bytes``; see docs/serve.md.

Uvicorn is given ``functools.partial(HeaderTimeoutProtocol, timeout_header=...)`` as its
``http`` class, which pickles into ``--workers`` processes as it is.

Connections over ``--limit-concurrency`` are still accepted (to be answered 503), so a flood
of idle ones holds a descriptor each until its header deadline: :func:`raise_open_file_limit`
lifts the soft limit on open files (1024 on most Linux systems) to the hard one, as Go's
runtime does for every program. Measured in docs/serve.md: at 1024, 1,100 idle connections
left ordinary requests timing out until the deadline freed them; lifted, they did not.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

# Enough for any sensible --limit-concurrency plus a flood held until the header deadline.
OPEN_FILES = 65536


def raise_open_file_limit(target: int = OPEN_FILES) -> int:
    """Lift the soft limit on open files towards ``target`` (never above the hard limit,
    never lowering it); the limit now in force. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):  # a container may refuse it: the old limit stays
            pass
    return soft


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def __init__(self, *args: Any, timeout_header: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_header = timeout_header
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._awaiting_headers():
            self._disarm()
        elif self._header_timer is None:  # the first bytes of a further request
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        """No request in progress: none yet, or the last one answered. Both of Uvicorn's
        protocols make a new ``cycle`` when a request's headers are complete."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.timeout_header, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and not self.transport.is_closing():
            self.transport.close()
