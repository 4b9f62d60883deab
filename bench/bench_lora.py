"""What serving other adapters as vLLM LoRAs costs, against the merged default and the torch path.

    python bench/bench_lora.py                  # 64 tokens, greedy, 1 and 8 concurrent streams

Columns, each the service's own generate backend in this process:

    merged        vLLM on the merged default checkpoint, no LoRA layers (the server without --adapter NAME=DIR)
    merged+lora   the same checkpoint on an engine started with LoRAs beside it (default requests)
    named lora    a named rank-64 adapter as a LoRA on that engine (its delta from the default is rank 128)
    base lora     the base model as a LoRA on that engine (delta rank 64)
    torch         the torch backend, a merged copy of the weights (what --vllm-adapters torch serves)

The named adapter is the shipped default adapter again under another name: the cost of a
LoRA request depends on its rank, not on its values. Per level, the columns take turns for
--rounds rounds and the best round is kept.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

from bench_generate import Level, Stream, run_level, warm_up

from magnet.loading import ModelSpec, resolve_adapter_path
from magnet.sampling import SamplingParams

COLUMNS = ("merged", "merged+lora", "named lora", "base lora", "torch")


def stream_of(backend, params: SamplingParams) -> Stream:
    async def stream(prompt: str) -> AsyncIterator[int]:
        async for chunk in backend.stream(prompt, params):
            yield chunk.completion_tokens

    return stream


@contextlib.asynccontextmanager
async def backends(args) -> AsyncIterator[dict[str, object]]:
    from magnet.engine import Engine
    from magnet.server.generation import TorchGenerateBackend
    from magnet.server.settings import Settings
    from magnet.server.vllm_backend import VllmGenerateBackend

    settings = Settings(vllm_kv_cache_gb=args.vllm_kv_cache_gb, vllm_max_model_len=args.vllm_max_model_len)
    spec = ModelSpec(device="cpu", dtype="float32")
    plain = VllmGenerateBackend(settings, spec, "default")
    with_loras = VllmGenerateBackend(settings, spec, "default",
                                     others={"named": resolve_adapter_path("default"), "base": None})
    torch_backend = TorchGenerateBackend(Engine.from_spec(spec))
    started = []
    try:
        for backend in (plain, with_loras, torch_backend):
            print(f"starting {type(backend).__name__} ...", file=sys.stderr, flush=True)
            await backend.start()
            started.append(backend)
        yield {"merged": plain, "merged+lora": with_loras, "named lora": with_loras.for_model("named"),
               "base lora": with_loras.for_model("base"), "torch": torch_backend}
    finally:
        for backend in started:
            await backend.close()


async def measure(streams: dict[str, Stream], args) -> dict[str, dict[int, Level]]:
    best: dict[str, dict[int, Level]] = {name: {} for name in streams}
    for c in args.concurrency:
        for round_ in range(args.rounds):
            for name, stream in streams.items():
                print(f"{name}: {c} streams, round {round_ + 1}", file=sys.stderr, flush=True)
                level = await run_level(stream, c, max(c, args.min_requests))
                if c not in best[name] or level.tokens_per_s > best[name][c].tokens_per_s:
                    best[name][c] = level
    return best


def print_table(results: dict[str, dict[int, Level]], args) -> None:
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ngenerate tokens/s, {args.tokens} tokens per request, greedy, best of {args.rounds} alternating "
          f"rounds; {os.cpu_count()} CPUs, load average {load}; ratio = over 'merged'")
    print("| streams | " + " | ".join(COLUMNS) + " |")
    print("|---:|" + "---:|" * len(COLUMNS))
    for c in args.concurrency:
        merged = results["merged"][c].tokens_per_s
        cells = [f"{results[name][c].tokens_per_s:.1f} ({results[name][c].tokens_per_s / merged:.2f}x)"
                 for name in COLUMNS]
        print(f"| {c} | " + " | ".join(cells) + " |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--min-requests", type=int, default=2, help="requests per level at least")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level (best kept)")
    parser.add_argument("--vllm-kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--vllm-max-model-len", type=int, default=1024)
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, ignore_eos=True)
    async with backends(args) as served:
        streams = {name: stream_of(served[name], params) for name in COLUMNS}
        for stream in streams.values():
            await warm_up(stream)
        results = await measure(streams, args)
    print_table(results, args)


if __name__ == "__main__":  # vLLM spawns its engine processes: keep this guard
    asyncio.run(main())
