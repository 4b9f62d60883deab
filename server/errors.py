"""One error handler: every failure becomes `{"error": {"code", "message"}}` with its status.

MagnetError subclasses carry their status and code (magnet/errors.py); request
validation errors become 422 `invalid_input` with one line per bad field;
Starlette's own HTTP errors (404, 405, 413 from the body limit) keep their
status with a code the client maps back.
"""
from __future__ import annotations

import json
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from magnet.errors import (
    BackendError,
    InputTooLongError,
    InvalidInputError,
    MagnetError,
    OverloadedError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from magnet.protocol import describe_errors
from magnet.server.disconnect import CLIENT_CLOSED, ClientGone

UNREADABLE_BODY = "There was an error parsing the body"
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: PayloadTooLargeError.code}

# The routes that speak OpenAI's API (their router's tag: server/openai_routes.py, chat_routes.py)
# answer a request it cannot take as OpenAI and vLLM do: 400, not 422, with `type` and `param`
# beside code and message, and an input too long is `context_length_exceeded` (the SDK raises
# BadRequestError; LangChain reads that code as a context overflow).
OPENAI_TAG = "openai"
OPENAI_CODES = {InputTooLongError.code: "context_length_exceeded"}


def speaks_openai(request: Request) -> bool:
    return OPENAI_TAG in getattr(request.scope.get("route"), "tags", ())


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict | None = None,
                   request: Request | None = None) -> JSONResponse:
    """The error body with its status; on an OpenAI route (`request` given), in OpenAI's shape."""
    body = error_body(code, message)
    if request is not None and speaks_openai(request) and status < 500:
        status = 400 if status == 422 else status
        body["error"].update(code=OPENAI_CODES.get(code, code), param=None,
                             type="invalid_request_error" if status in (400, 404) else code)
    return JSONResponse(body, status_code=status, headers=headers)


def error_event(code: str, message: str) -> str:
    """An error after a stream's first byte: a server-sent `error` event of the same shape."""
    return f"event: error\ndata: {json.dumps(error_body(code, message))}\n\n"


def is_json(media_type: str) -> bool:
    """application/json, or a +json type (what FastAPI reads as JSON)."""
    main = media_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or main.endswith("+json")


async def why_unreadable(request: Request) -> str:
    """Bad UTF-8, or JSON nested deeper than the parser's recursion allows."""
    try:
        (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        return "the request body could not be read: send JSON encoded as UTF-8"
    except Exception:  # the body is gone (already streamed): say both
        pass
    else:
        return "the request body nests too deeply (arrays or objects within each other): send flatter JSON"
    return "the request body could not be read: send JSON encoded as UTF-8, not nested too deeply"


def magnet_error_response(exc: MagnetError, request: Request | None = None) -> JSONResponse:
    headers = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.code, exc.message, headers, request)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MagnetError)
    async def on_magnet_error(request: Request, exc: MagnetError) -> JSONResponse:
        return magnet_error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        media = request.headers.get("content-type", "")
        if not is_json(media) and any(tuple(error.get("loc", ())) == ("body",) for error in exc.errors()):
            return error_response(422, InvalidInputError.code, f"the request body must be JSON sent with "
                                  f"Content-Type: application/json (this one came as {media or 'no Content-Type'})",
                                  request=request)
        return error_response(422, InvalidInputError.code, describe_errors(exc.errors()), request=request)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNREADABLE_BODY:  # FastAPI's word for a body json can't load
            return error_response(422, InvalidInputError.code, await why_unreadable(request), request=request)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(ClientGone)
    async def on_client_gone(_request: Request, _exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it: for the log and the metrics

    @app.exception_handler(Exception)
    async def on_bug(_request: Request, exc: Exception) -> JSONResponse:
        # Reached only by a bug: bad input is refused with a 4xx before this.
        return error_response(500, BackendError.code, f"internal error: {type(exc).__name__}: {exc}")
