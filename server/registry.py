"""The served models, and what a request's `model` resolves to: once, by one FastAPI dependency.

    models = Registry()                       # the service's (service.models), filled at start
    models.add(model_id, engine, backend)     # the default first, then named adapters, the base
    served = models.resolve(body.model)       # None or the alias = the default; unknown: 404

A route declares its body through `resolved(BodyType)`: the dependency validates the body,
checks the service is ready (503 with the reason otherwise) and resolves `model` to a
`ServedModel` (its id, its torch engine, its generate backend), which the route hands to the
service. Nothing downstream looks the model up again: a model unloaded meanwhile finishes the
requests that already hold it.
"""
# No `from __future__ import annotations` here: FastAPI reads the dependency's body type from
# its signature, and that type is a variable of `resolved`.
import dataclasses
from typing import Any, Generic, TypeVar

from fastapi import Depends, Request

from magnet.errors import UnknownModelError
from magnet.server.model_ids import MODEL_ALIAS

Body = TypeVar("Body")


@dataclasses.dataclass(frozen=True, eq=False)
class ServedModel:
    """One served model: what every route of a request reads, resolved once."""

    id: str  # the served id (the alias resolves to the default's)
    engine: Any  # magnet.engine.Engine: embed, tag, infill, the tokenizer
    backend: Any  # server.generation.GenerateBackend: generate
    default: bool = False  # the default model (the alias's; the tagging heads are its)

    @property
    def tokenizer(self):
        return self.engine.tokenizer


class Registry:
    """Served id -> ServedModel, the default first (server/model_ids.py says which ids)."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}

    def add(self, model_id: str, engine, backend) -> ServedModel:
        served = ServedModel(model_id, engine, backend, default=not self._models)
        self._models[model_id] = served
        return served

    def remove(self, model_id: str) -> None:
        self._models.pop(model_id)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def __getitem__(self, model_id: str) -> ServedModel:
        return self._models[model_id]

    def __iter__(self):
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    @property
    def default(self) -> ServedModel:
        return next(iter(self._models.values()))

    @property
    def engines(self) -> dict:
        return {model_id: served.engine for model_id, served in self._models.items()}

    @property
    def backends(self) -> dict:
        return {model_id: served.backend for model_id, served in self._models.items()}

    def ids(self) -> list[str]:
        """Every id a request may send: the served ids, the alias after the default's."""
        default, *others = self._models
        return list(dict.fromkeys([default, MODEL_ALIAS, *others]))

    def aliases_of(self, model_id: str) -> list[str]:
        """The other ids that mean this model (the alias, for the default)."""
        return [MODEL_ALIAS] if model_id == self.default.id and model_id != MODEL_ALIAS else []

    def resolve(self, requested: str | None) -> ServedModel:
        """The served model a request's `model` means: none or the alias = the default; anything
        unknown is a 404 naming the ids."""
        default = self.default
        if requested is None or requested == MODEL_ALIAS:
            return default
        served = self._models.get(requested)
        if served is not None:
            return served
        raise UnknownModelError(f"unknown model {requested!r}: this server serves {', '.join(map(repr, self.ids()))}; "
                                f"send one of them as `model`, or leave `model` out for {default.id!r}")


@dataclasses.dataclass(frozen=True)
class Resolved(Generic[Body]):
    """A route's validated body and the served model its `model` field names."""

    body: Body
    model: ServedModel


def resolved(body_type: type, default_only: bool = False):
    """The dependency of a route whose body is `body_type`: Depends(...) giving a `Resolved`.
    `default_only`: the route serves the default model whatever the body says (TEI's routes)."""

    async def resolve(body: body_type, request: Request) -> Resolved:
        service = request.app.state.service
        requested = None if default_only else getattr(body, "model", None)
        return Resolved(body, service.serving(requested))

    return Depends(resolve)


async def default_model(request: Request) -> ServedModel:
    """The dependency of a route without a body that serves the default model (TEI's /info)."""
    return request.app.state.service.serving(None)
