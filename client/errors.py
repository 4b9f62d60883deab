"""Errors only the client raises: the server was never reached, or the URL points past its root.

Both are MagnetErrors, so `except MagnetError` still catches every failure of a call; httpx's
own exceptions never escape the client.
"""
from __future__ import annotations

import httpx

from magnet.errors import MagnetError

API_PREFIX = "/v1"  # the routes' prefix, which the client adds itself


class ConnectionFailedError(MagnetError):
    """No answer: the connection was refused, dropped or timed out (after the retries)."""

    status = None  # no HTTP answer came
    code = "connection_failed"


class WrongBaseUrlError(MagnetError, ValueError):
    """base_url must be the server's root (http://host:8000), without /v1."""

    status = None
    code = "wrong_base_url"


def check_base_url(base_url: str, source: str) -> str:
    """The root URL, or WrongBaseUrlError when it ends in /v1 (the OpenAI SDK's form)."""
    path = httpx.URL(base_url).path.rstrip("/")
    if path.endswith(API_PREFIX):
        root = base_url.rstrip("/")[: -len(API_PREFIX)]
        raise WrongBaseUrlError(f"{source} {base_url!r} ends in {API_PREFIX}: drop it and give the server's root, "
                                f"{root!r}; the client adds {API_PREFIX}/... itself (the OpenAI SDK is the one "
                                f"that takes .../v1)")
    return base_url


def connection_error(base_url: str, exc: httpx.TransportError, attempts: int) -> ConnectionFailedError:
    """What failed and what to do, for an httpx transport error that ended a call."""
    tries = f" ({attempts} tries)" if attempts > 1 else ""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        fix = ("the server took longer than the client's timeout: pass a larger timeout= "
               "(MagnetClient(timeout=...)), or ask for less (fewer inputs, smaller max_tokens)")
    elif isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        fix = (f"nothing answered at {base_url}: start the server (magnet serve) or point the client at it "
               "(base_url=... or MAGNET_URL)")
    else:
        fix = "the connection dropped before the answer was complete: check the server's log (it may have restarted)"
    return ConnectionFailedError(f"{type(exc).__name__}{tries}: {exc or 'no details'}; {fix}")
