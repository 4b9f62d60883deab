"""Optional API key: when MAGNET_API_KEY is set, /v1/* needs `Authorization: Bearer KEY`."""
from __future__ import annotations

import hmac

from fastapi import Request

from magnet.errors import UnauthorizedError


def require_api_key(request: Request) -> None:
    """FastAPI dependency of the /v1 routers (/health, /ready and /metrics stay open)."""
    expected = request.app.state.service.settings.api_key
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("this server needs an API key: send 'Authorization: Bearer KEY'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise UnauthorizedError("the API key is wrong: check MAGNET_API_KEY on the server and the client")
