"""The model ids this server answers to, defined here and nowhere else.

The loaded model's name is "<base>+<adapter folder>" (magnet/loading.py), e.g.
"SmolLM2-135M-Instruct+adapter". Every adapter `magnet train` writes sits in a
folder called "adapter", so that name says little and changes with the base;
MODEL_ALIAS is the id that never changes: clients that only want "the model
this server serves" send it (or no `model` at all).
"""
from __future__ import annotations

from magnet.errors import UnknownModelError

MODEL_ALIAS = "magnet"


def served_ids(service) -> list[str]:
    """[the loaded model's name, the alias] (one entry if they are equal)."""
    return list(dict.fromkeys([service.model_name, MODEL_ALIAS]))


def require_known_model(service, requested: str | None) -> None:
    """Accept no model, the loaded name or the alias; anything else is a 404 naming the ids."""
    if requested is None:
        return
    known = served_ids(service)
    if requested not in known:
        raise UnknownModelError(f"unknown model {requested!r}: this server serves one model, "
                                f"{' or '.join(map(repr, known))}; send that as `model`, or leave `model` out")
