"""Optional API key: when set, every route but the probes, /metrics and the API docs needs
`Authorization: Bearer KEY`.

Checked in an ASGI middleware, before the body is read or parsed, so a caller
without the key learns nothing but 401 (no 422 for a bad body, no redirect).
The key comes from MAGNET_API_KEY or, better, a file (MAGNET_API_KEY_FILE,
`--api-key-file`): a flag's value is visible to anyone who can run `ps`.
"""
from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from magnet.errors import UnauthorizedError
from magnet.server.api_docs import DOCS_PATHS

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"}) | DOCS_PATHS


def read_api_key(api_key: str | None, api_key_file: str | None) -> str | None:
    """The configured key: the file's first line wins over the plain value."""
    if api_key_file:
        try:
            key = Path(api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"api_key_file {api_key_file}: {exc.strerror}: point it at a readable file") from None
        if not key:
            raise ValueError(f"api_key_file {api_key_file} is empty: write the key into it")
        return key
    return api_key or None


def key_error(expected: str, authorization: str) -> UnauthorizedError | None:
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return UnauthorizedError("this server needs an API key: send 'Authorization: Bearer KEY'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return UnauthorizedError("the API key is wrong: check MAGNET_API_KEY(_FILE) on the server and the client")
    return None


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_key or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        error = key_error(self.api_key, headers.get(b"authorization", b"").decode("latin-1"))
        if error is None:
            return await self.app(scope, receive, send)
        from magnet.server.errors import magnet_error_response

        await magnet_error_response(error)(scope, receive, send)
