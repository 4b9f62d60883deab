"""Typed HTTP client of the Magnet service (httpx + pydantic; no torch).

    from magnet.client import MagnetClient, AsyncMagnetClient, Retry
    from magnet.client import MagnetEncoder    # MTEB's encoder protocol over MagnetClient

Errors are the classes of `magnet.errors`, raised with the server's message:
InvalidInputError (and InputTooLongError, UnknownTaskError) 422,
UnauthorizedError 401, ForbiddenError 403, PayloadTooLargeError 413, OverloadedError 429,
BackendError 500, NotReadyError 503; any other status is a MagnetError whose
`.status` is the HTTP status. No answer at all (refused, dropped, timed out, after
the retries) raises ConnectionFailedError; a base URL ending in /v1, WrongBaseUrlError.
Results are the pydantic models of `magnet.protocol`, the same the server answers with.
"""
from magnet.client.aio import AsyncMagnetClient
from magnet.client.base import Retry
from magnet.client.errors import ConnectionFailedError, WrongBaseUrlError
from magnet.client.mteb import MagnetEncoder
from magnet.client.sync import MagnetClient
from magnet.errors import (
    BackendError,
    ForbiddenError,
    InputTooLongError,
    InvalidInputError,
    MagnetError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnknownTaskError,
)

__all__ = [
    "MagnetClient", "AsyncMagnetClient", "Retry", "MagnetEncoder",
    "MagnetError", "InvalidInputError", "InputTooLongError", "UnknownTaskError", "UnauthorizedError", "ForbiddenError",
    "PayloadTooLargeError", "OverloadedError", "BackendError", "NotReadyError",
    "ConnectionFailedError", "WrongBaseUrlError",
]
