"""The end of the grace period: what is still running gets a JSON 503, never a plain 500.

On SIGTERM uvicorn stops accepting and waits up to its graceful-shutdown timeout, then
cancels what is left, which it answers `500 Internal Server Error` in plain text (and
cuts streams with no error). A client does not retry a 500. So the server tells
`Draining` when the shutdown begins (server/cli.py); at `--graceful-shutdown-s` every
request still in flight is cancelled here and answered `503 not_ready` (retryable), a
stream that already started gets an `event: error` of the same shape; uvicorn's own
timeout is a little later (DEADLINE_MARGIN_S), so these answers are sent first.
From the start of the shutdown, /ready and new requests answer 503 too.
"""
from __future__ import annotations

import asyncio
import logging

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magnet.errors import NotReadyError
from magnet.server.errors import error_event, error_response

DEADLINE_MARGIN_S = 2.0  # uvicorn's own timeout comes this much after ours
log = logging.getLogger(__name__)


class Draining:
    """The shutdown's state, shared by the server (which begins it) and the middleware."""

    def __init__(self):
        self.began = False
        self.expired = False
        self.grace_s = 0.0
        self.requests: set[asyncio.Task] = set()  # the tasks serving requests now

    def begin(self, grace_s: float) -> None:
        """The shutdown has begun: in `grace_s`, cancel what is still running."""
        if self.began:
            return
        self.began, self.grace_s = True, grace_s
        asyncio.get_running_loop().call_later(grace_s, self.expire)

    def expire(self) -> None:
        self.expired = True
        if self.requests:
            log.warning("the grace period of %g s is over: %d request(s) still running get 503",
                        self.grace_s, len(self.requests))
        for task in list(self.requests):
            task.cancel()

    def error(self) -> NotReadyError:
        return NotReadyError(f"the server is shutting down and its grace period ({self.grace_s:g} s) ended before "
                             "this request finished: retry on another replica")


class ShutdownDeadline:
    """Answers the requests the deadline cancelled: 503 `not_ready` (JSON), or an `event: error`
    closing a stream that already started."""

    def __init__(self, app: ASGIApp, draining: Draining):
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        task = asyncio.current_task()
        started = ended = streaming = False

        async def tracked_send(message: Message) -> None:
            nonlocal started, ended, streaming
            if message["type"] == "http.response.start":
                started = True
                streaming = any(name == b"content-type" and value.startswith(b"text/event-stream")
                                for name, value in message.get("headers", []))
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        self.draining.requests.add(task)
        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if not self.draining.expired or task.cancelling() > 1:
                raise  # not ours: uvicorn's, or a disconnect
            task.uncancel()
            error = self.draining.error()
            if not started:
                await error_response(error.status, error.code, error.message)(scope, receive, send)
            elif not ended:
                event = error_event(error.code, error.message).encode() if streaming else b""
                await send({"type": "http.response.body", "body": event, "more_body": False})
        finally:
            self.draining.requests.discard(task)


class MagnetServer(uvicorn.Server):
    """uvicorn's server, which tells the service when the shutdown begins (the deadline starts),
    and stops when the model fails to load (a bad adapter refuses to start)."""

    def __init__(self, config: uvicorn.Config, service):
        super().__init__(config)
        self.service = service

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self._load_watch = asyncio.ensure_future(self.stop_if_load_fails())

    async def stop_if_load_fails(self) -> None:
        while not self.service.ready and not self.service.load_error:
            await asyncio.sleep(0.1)
        if self.service.load_error:
            log.error("the model failed to load: stopping (%s)", self.service.load_error)
            self.should_exit = True

    async def shutdown(self, sockets=None) -> None:
        self.service.draining.begin(self.service.settings.graceful_shutdown_s)
        await super().shutdown(sockets)
