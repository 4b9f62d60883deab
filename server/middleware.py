"""ASGI middleware: request ids (and the request's price, server/admission.py), the request-body
size and time limits, per-route metrics (a stream the client left: 499)."""
from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magnet.server import metrics
from magnet.server.admission import REQUEST_CHARGE, new_request_charge
from magnet.server.disconnect import CLIENT_CLOSED
from magnet.server.errors import error_response


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("magnet_request_id", default="-")
REQUEST_ID_PATTERN = re.compile(r"^[\w.:@/+=-]{1,128}$")  # what we echo back: no header injection
log = logging.getLogger("magnet.access")


def request_id_of(request) -> str:
    """The id RequestId gave this request (what every response's `id` field carries)."""
    return request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex


class RequestId:
    """X-Request-Id: the caller's (if sane) or a new one, echoed on the response, in the
    access log line and in `scope["state"]["request_id"]` for the routes' `id` fields."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token, charge = REQUEST_ID.set(request_id), new_request_charge()
        status, started = 500, time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            status = scope["state"].get("status", status)  # RequestMetrics': 499 for a stream the client left
            client = "%s:%s" % tuple(scope["client"]) if scope.get("client") else "-"
            log.info("%s %s %s %s %d %.1fms", client, request_id, scope["method"], printable(scope["path"]), status,
                     1000 * (time.perf_counter() - started))
            REQUEST_ID.reset(token)
            REQUEST_CHARGE.reset(charge)


def printable(text: str) -> str:
    """`text` with control characters escaped (\\n, \\x1b): a path is percent-decoded before it
    reaches the app, and must not write a line, or a terminal escape, of its own into the log."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class BodyLimit:
    """413 for bodies over `max_bytes`: at once from Content-Length, else while reading;
    408 for a body that is not fully sent within `timeout_s` (a stalled client must not
    hold a connection, or shutdown, forever)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(413, "payload_too_large", self.message(int(length)))(scope, receive, send)
        received, complete = 0, False
        deadline = time.monotonic() + self.timeout_s

        async def counted_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: later receives wait for a disconnect, untimed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout_s:g} s: "
                                         "send it whole (or raise MAGNET_BODY_TIMEOUT_S)") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # a chunked body with no Content-Length
                raise HTTPException(413, self.message(received))
            return message

        await self.app(scope, counted_receive, send)

    def message(self, size: int) -> str:
        return (f"the request body has {size} bytes, over the limit of {self.max_bytes}: "
                "send fewer or shorter inputs per request (or raise MAGNET_MAX_BODY_BYTES)")


class RequestMetrics:
    """magnet_requests_total{route,status}, latency per route, and requests in flight. A response
    cut short because the client left (a stream it stopped reading) counts as 499, in
    magnet_cancelled_total too, and `scope["state"]["status"]` tells the access log."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        started = time.perf_counter()
        complete = gone = False

        async def receive_watched() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_with_status(message: Message) -> None:
            nonlocal status, complete
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive_watched, send_with_status)
        finally:
            metrics.IN_FLIGHT.dec()
            route = route_label(scope)
            if gone and not complete and status != CLIENT_CLOSED:  # started, then the client left
                status = CLIENT_CLOSED
                metrics.CANCELLED.labels(route.rsplit("/", 1)[-1] or "stream").inc()
            scope.setdefault("state", {})["status"] = status
            metrics.REQUESTS.labels(route, str(status)).inc()
            metrics.REQUEST_LATENCY.labels(route).observe(time.perf_counter() - started)


def route_label(scope: Scope) -> str:
    """The matched route's template (bounded label values), or "unmatched". A request refused
    before routing (413, 401) is matched against the app's routes here."""
    route = scope.get("route")
    if route is None and scope.get("app") is not None:
        from starlette.routing import Match

        route = next((r for r in scope["app"].routes if r.matches(scope)[0] is Match.FULL), None)
    return getattr(route, "path", None) or "unmatched"
