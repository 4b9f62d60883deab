"""The model ids this server answers to, defined here and nowhere else.

The loaded model's name is "<base>+<adapter folder>" (magnet/loading.py), e.g.
"SmolLM2-135M-Instruct+adapter". Every adapter `magnet train` writes sits in a
folder called "adapter", so that name says little and changes with the base;
MODEL_ALIAS is the id that never changes: clients that only want "the model
this server serves" send it (or no `model` at all).

With named adapters (settings.adapters, `--adapter NAME=DIR`) the server also
serves each under its NAME, and the base without any adapter under the base's
own name ("SmolLM2-135M-Instruct"), so a client can compare against it. The
service keeps one engine per served id (`service.engines`, the default first);
the alias is the only id that is not a key there.
"""
from __future__ import annotations

from magnet.errors import UnknownModelError

MODEL_ALIAS = "magnet"


def engine_ids(default_name: str, base_name: str, adapter_names: list[str]) -> list[str]:
    """The ids that get an engine: the default model, each named adapter, then the base
    (only with named adapters, and only when the default is not the base already). A clash
    (a NAME equal to the default's or the base's name) is refused at start-up."""
    ids = [default_name, *adapter_names]
    if adapter_names and base_name != default_name:
        ids.append(base_name)
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ValueError(f"named adapter(s) {', '.join(map(repr, clashes))} clash with a served model's name "
                         f"(the default is {default_name!r}, the base {base_name!r}): choose other NAMEs")
    return ids


def served_ids(service) -> list[str]:
    """Every id a request may send: the engines' ids, the alias after the default's."""
    default, *others = service.engines
    return list(dict.fromkeys([default, MODEL_ALIAS, *others]))


def aliases_of(service, model_id: str) -> list[str]:
    """The other ids that mean this model (the alias, for the default)."""
    return [MODEL_ALIAS] if model_id == service.model_name and model_id != MODEL_ALIAS else []


def require_known_model(service, requested: str | None) -> str:
    """The served id (a key of service.engines) a request's `model` means: none or the alias
    = the default; anything unknown is a 404 naming the ids."""
    default = service.model_name  # also: 503 while loading
    if requested is None or requested == MODEL_ALIAS:
        return default
    if requested in service.engines:
        return requested
    known = served_ids(service)
    raise UnknownModelError(f"unknown model {requested!r}: this server serves {', '.join(map(repr, known))}; "
                            f"send one of them as `model`, or leave `model` out for {default!r}")
