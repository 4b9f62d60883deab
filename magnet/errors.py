"""The error tree, shared by engine, server and client (no torch here).

Each error knows its HTTP status and a stable code; the server has one handler
that turns any MagnetError into `{"error": {"code", "message"}}` with that
status, and the client raises the same class back from the response.
"""
from __future__ import annotations


class MagnetError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInputError(MagnetError):
    """The request is well-formed JSON but asks for something we cannot do."""

    status = 422
    code = "invalid_input"


class InputTooLongError(InvalidInputError):
    code = "input_too_long"


class UnknownTaskError(InvalidInputError):
    code = "unknown_task"


class UnknownModelError(MagnetError):
    """The request's `model` is not one this server serves (the message lists those it does)."""

    status = 404
    code = "model_not_found"


class UnauthorizedError(MagnetError):
    status = 401
    code = "unauthorized"


class ForbiddenError(MagnetError):
    """The server is not set up to do this (the message names the setting that allows it)."""

    status = 403
    code = "forbidden"


class PayloadTooLargeError(MagnetError):
    status = 413
    code = "payload_too_large"


class OverloadedError(MagnetError):
    """The queue is full; retry after `retry_after` seconds."""

    status = 429
    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(MagnetError):
    """The model backend failed on a valid request."""

    status = 500
    code = "backend_error"


class NotReadyError(MagnetError):
    status = 503
    code = "not_ready"


ERRORS_BY_CODE: dict[str, type[MagnetError]] = {
    cls.code: cls
    for cls in (MagnetError, InvalidInputError, InputTooLongError, UnknownTaskError, UnknownModelError,
                UnauthorizedError, ForbiddenError, PayloadTooLargeError, OverloadedError, BackendError, NotReadyError)
}
