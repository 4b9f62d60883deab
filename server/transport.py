"""Limits on a request's head (request line + headers), before the app sees anything.

uvicorn's httptools protocol buffers a header of any size and waits for it forever
(`--body-timeout-s` covers only bodies, server/middleware.py). This protocol, a
subclass of it, keeps the same parser and speed and adds:

    max_header_bytes   the head's bytes; more -> 431 `header_too_large`, connection closed
    header_timeout_s   from the connection's (or the request's) first byte to the end of
                       its headers; later -> 408 `request_timeout`, connection closed

    uvicorn.run(app, http=limited_http_protocol(64 * 1024, 10.0))

At most one read (256 KiB) beyond the limit is held at once.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from magnet.server.errors import error_body


def head_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer with our JSON error body, closing the connection."""
    body = json.dumps(error_body(code, message)).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._awaiting_headers, self._header_bytes, self._refused = True, 0, False
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._awaiting_headers and not self._refused:  # all of it was head: no header block ended
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", "header_too_large",
                             f"the request line and headers are over {self.max_header_bytes} bytes: send shorter "
                             "headers (or raise MAGNET_MAX_HEADER_BYTES)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers, self._header_bytes = True, 0
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and (self.cycle is None or self.cycle.response_complete):
            self._refuse(408, "Request Timeout", "request_timeout",
                         f"the request headers did not arrive within {self.header_timeout_s:g} s: send them "
                         "whole (or raise MAGNET_HEADER_TIMEOUT_S)")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        self._refused = True
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self.transport.write(head_response(status, reason, code, message))
            self.transport.close()


def limited_http_protocol(max_header_bytes: int, header_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with these limits."""
    return type("MagnetHttpProtocol", (LimitedHttpToolsProtocol,),
                {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s})
