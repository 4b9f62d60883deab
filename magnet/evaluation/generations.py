"""Greedy generations and infills for evaluation, kept on disk between runs.

Decoding on CPU is the slow part of the repetition and cloze rows, and greedy outputs depend
only on the model, the decoding code, the settings and the prompts; so they are computed once
per such key and stored in $MAGNET_CACHE_DIR/generations (as the word features are, see
magnet/tagging/features.py).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from magnet.atomic import atomic_file
from magnet.embedded import cache_dir
from magnet.progress import progress
from magnet.sampling import INFILL_DEFAULTS, SamplingParams
from magnet.tagging.features import code_fingerprint, engine_identity

log = logging.getLogger(__name__)


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0)


def decoding_fingerprint() -> str:
    """Hash of the code that turns a prompt into tokens: editing it invalidates cached outputs."""
    import magnet.decoding
    import magnet.layout
    import magnet.sampler

    modules = (magnet.decoding, magnet.layout, magnet.sampler)
    source = code_fingerprint() + "".join(inspect.getsource(m) for m in modules)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def generations_path(engine, kind: str, max_tokens: int, prompts: list) -> Path:
    fields = {"model": asdict(engine_identity(engine)), "engine": asdict(engine.config),
              "code": decoding_fingerprint(), "kind": kind, "max_tokens": max_tokens, "prompts": prompts}
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "generations" / f"{engine.loaded.base.name}-{kind}-{key}.json"


def cached_outputs(engine, kind: str, max_tokens: int, prompts: list, produce: Callable[[object], str],
                   use_cache: bool) -> list[str]:
    """produce(prompt) for every prompt, or the stored outputs of an earlier run with the same key."""
    path = generations_path(engine, kind, max_tokens, prompts)
    if use_cache and path.is_file():
        log.info("%s: cache hit %s", kind, path)
        return json.loads(path.read_text())["outputs"]
    started = time.monotonic()
    outputs = [produce(p) for p in progress(prompts, f"{kind} ({engine.name})", unit="prompt")]
    log.info("%s: %d outputs of %s in %.1fs", kind, len(outputs), engine.name, time.monotonic() - started)
    if use_cache:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps({"model": engine.name, "prompts": prompts, "outputs": outputs}, indent=1))
    return outputs


def continuations(engine, prompts: list[str], max_tokens: int, use_cache: bool = True) -> list[str]:
    """Greedy left-to-right continuation of each prompt (the text after it)."""
    params = greedy(max_tokens)
    return cached_outputs(engine, "continue", max_tokens, prompts,
                          lambda prompt: engine.generate(prompt, params).text, use_cache)


def infills(engine, gaps: list[tuple[str, str]], max_tokens: int, use_cache: bool = True,
            best_of: int = 1) -> list[str]:
    """The fill of the gap between each (prefix, suffix) as /v1/infill makes it by default
    (greedy, INFILL_DEFAULTS), with `best_of` candidates."""
    params = replace(INFILL_DEFAULTS, max_tokens=max_tokens, best_of=best_of)
    return cached_outputs(engine, f"infill-best-of-{best_of}", max_tokens, [list(g) for g in gaps],
                          lambda gap: engine.infill(list(gap), params).text, use_cache)
