"""Adapters loaded and unloaded while the server runs, with vLLM's routes and bodies:

    POST /v1/load_lora_adapter    {"lora_name": "legal", "lora_path": "/ckpt/legal"}  -> 200, text
    POST /v1/unload_lora_adapter  {"lora_name": "legal"}                              -> 200, text

Off unless `--max-runtime-adapters N` allows up to N such adapters at once (each is a copy of
the model's weights): a 403 names the setting. Behind the API key like every route. Before any weight is read, the adapter's manifest is
checked against the served base (magnet/loading.py's rule), then its files
(magnet/adapter_checks.py); only then does a new engine load on the model worker, the
default's base weights with the adapter merged, as `--adapter NAME=DIR` does at start. The
name is served at once (`model`, /v1/models). It generates on torch: vLLM's LoRA slots are
sized when its engine starts, so for a vLLM LoRA restart with `--adapter NAME=DIR`.
Unloading stops new requests naming it (404); requests already running finish on the
engine they hold. The default model cannot be unloaded.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from magnet.adapter_checks import CONFIG_FILE, AdapterCheckError, check_adapter_files
from magnet.errors import InvalidInputError, UnknownModelError
from magnet.loading import AdapterMismatchError, check_adapter_fits
from magnet.manifest import AdapterManifest
from magnet.server.model_ids import MODEL_ALIAS
from magnet.server.routes import ERRORS, service_of
from magnet.server.settings import adapter_name_problem

lora_api = APIRouter(prefix="/v1", responses={**ERRORS, 403: ERRORS[401]}, tags=["adapters"])  # 403: off
# vLLM answers these with a line of text (errors stay JSON, as on every route)
TEXT_ANSWER = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "what was done"}}


class LoadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # vLLM's load_inplace and the like

    lora_name: str = Field(description="the id requests send as `model`")
    lora_path: str = Field(description="an adapter folder on the server (adapter_config.json, weights, magnet.json)")


class UnloadLoraRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # vLLM's lora_int_id

    lora_name: str


@lora_api.post("/load_lora_adapter", response_model=None, responses=TEXT_ANSWER)
async def load_lora_adapter(body: LoadLoraRequest, request: Request) -> PlainTextResponse:
    service = service_of(request)
    service.require_ready()
    service.require_runtime_adapter_room()  # before any path on the server is looked at
    problem = adapter_name_problem(body.lora_name)
    if problem:
        raise InvalidInputError(f"lora_name {body.lora_name!r}: {problem}")
    if body.lora_name in service.models.ids():
        raise InvalidInputError(f"lora_name {body.lora_name!r} is already served: unload it first, or choose another")
    adapter = await asyncio.to_thread(checked_adapter, service.engine, body.lora_path)
    await service.add_model(body.lora_name, adapter)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@lora_api.post("/unload_lora_adapter", response_model=None, responses=TEXT_ANSWER)
async def unload_lora_adapter(body: UnloadLoraRequest, request: Request) -> PlainTextResponse:
    service = service_of(request)
    if body.lora_name in (service.model_name, MODEL_ALIAS):
        raise InvalidInputError(f"{body.lora_name!r} is the default model: it cannot be unloaded")
    if body.lora_name not in service.models:
        raise UnknownModelError(f"no adapter {body.lora_name!r} is loaded: the served models are "
                                f"{', '.join(map(repr, service.models.ids()))}")
    service.remove_model(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


def checked_adapter(default_engine, lora_path: str) -> Path:
    """The adapter folder, proven servable on the default's base before any weight is loaded:
    its manifest names this base, then its files read and are finite. Else a 422 saying why."""
    try:
        path = Path(lora_path).expanduser()
        found = (path / CONFIG_FILE).is_file()
    except (RuntimeError, OSError, ValueError) as exc:  # "~nobody", a NUL byte, an unencodable name
        raise InvalidInputError(f"lora_path {lora_path!r} is not a usable path ({exc}): send an adapter folder's "
                                "path on the server") from None
    if not found:
        raise InvalidInputError(f"lora_path {lora_path!r}: no {CONFIG_FILE} there; point it at an adapter folder "
                                "on the server (what `magnet train` writes)")
    try:
        check_adapter_fits(default_engine.loaded.base, AdapterManifest.load(path), path)
        check_adapter_files(path)
    except (AdapterCheckError, AdapterMismatchError, TypeError, KeyError, ValueError) as exc:
        raise InvalidInputError(f"lora_path {lora_path!r}: {exc}") from None
    return path
