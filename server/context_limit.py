"""How many tokens a prompt plus its completion may take (vLLM's `max_model_len`).

The torch path checks prompts against the engine's limit (--max-length, capped by
the model's context); vLLM against its own --vllm-max-model-len. The served
limit is the smaller, so an answer computed from it is never refused.
"""
from __future__ import annotations


def max_model_len(service) -> int:
    engine_limit = service.engine.max_length
    return min(engine_limit, getattr(service.backend, "max_model_len", engine_limit))
