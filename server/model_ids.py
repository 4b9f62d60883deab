"""The model ids this server answers to, defined here and nowhere else.

The loaded model's name is "<base>+<adapter folder>" (magnet/loading.py), e.g.
"SmolLM2-135M-Instruct+adapter". Every adapter `magnet train` writes sits in a
folder called "adapter", so that name says little and changes with the base;
MODEL_ALIAS is the id that never changes: clients that only want "the model
this server serves" send it (or no `model` at all).

With named adapters (settings.adapters, `--adapter NAME=DIR`) the server also
serves each under its NAME, and the base without any adapter under the base's
own name ("SmolLM2-135M-Instruct"), so a client can compare against it. The
service keeps one served model per id (server/registry.py: `service.models`, the
default first), and a request's `model` is resolved there once; the alias is the only
id that is not a key there.
"""
from __future__ import annotations

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
