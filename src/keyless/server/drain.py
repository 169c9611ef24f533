"""Stopping so that a load balancer can follow (``--shutdown-delay``).

A load balancer (kube-proxy after the endpoints controller, a cloud load balancer's health
check, an ingress) learns that a replica is going away some time after the replica does. So on
SIGTERM each process first only says so: ``/readyz`` answers 503 and every response carries
``Connection: close``, while requests are served as before, for the delay. Clients' kept-alive
connections are closed after their next answer, at a moment the client expects, and new
connections stop arriving once the balancer has seen the 503. Then the process stops accepting,
finishes the requests in flight, drops the idle connections left, and exits (server/run.py).

SIGINT (Ctrl-C at a terminal, where nothing balances) skips the delay, and a second signal
during the delay cuts it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CLOSE = (b"connection", b"close")


class Draining(Protocol):
    draining: bool


class CloseWhileDraining:
    """ASGI wrapper: while the process drains, each answer asks the client to close."""

    def __init__(self, app: ASGIApp, state: Draining) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.state.draining:
            await self.app(scope, receive, send)
            return

        async def send_close(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _CLOSE]
            await send(message)

        await self.app(scope, receive, send_close)


class Shutdown:
    """The delay between the first signal and the listeners' stop, cut short by a second."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._hurry = asyncio.Event()
        self.signalled = False

    def signal(self, signum: int) -> bool:
        """Note a signal; True for the first (the caller starts draining)."""
        first = not self.signalled
        self.signalled = True
        if not first or signum == signal.SIGINT:
            self._hurry.set()
        return first

    async def wait(self) -> None:
        """Return when the delay has passed, or at once if hurried."""
        if self.delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), timeout=self.delay)
