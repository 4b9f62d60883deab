"""ASGI middleware: the request-body size limit and the per-route request metrics."""
from __future__ import annotations

import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magnet.server import metrics
from magnet.server.errors import error_response


class BodyLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, else while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(413, "payload_too_large", self.message(int(length)))(scope, receive, send)
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body with no Content-Length
                raise HTTPException(413, self.message(received))
            return message

        await self.app(scope, counted_receive, send)

    def message(self, size: int) -> str:
        return (f"the request body has {size} bytes, over the limit of {self.max_bytes}: "
                "send fewer or shorter inputs per request (or raise MAGNET_MAX_BODY_BYTES)")


class RequestMetrics:
    """magnet_requests_total{route,status}, latency per route, and requests in flight."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            metrics.IN_FLIGHT.dec()
            route = route_label(scope)
            metrics.REQUESTS.labels(route, str(status)).inc()
            metrics.REQUEST_LATENCY.labels(route).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    """The matched route's template (bounded label values), or "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
