"""Generate throughput, side by side in one run, at 1 and 16 concurrent streams:

    service  /v1/generate (stream) over HTTP on loopback: `magnet serve --generate-backend vllm`
    direct   vLLM's AsyncLLM in this process on the same merged checkpoint and engine settings
    torch    the torch fallback (rows of the model worker's running decode batch)

    python bench/bench_generate.py                     # 64 tokens, greedy, concurrency 1 and 16
    python bench/bench_generate.py --tokens 128 --concurrency 1 4 16 --skip torch
    python bench/bench_generate.py --dtype float32     # every column in fp32 (default: the machine's rule)

Each level runs max(concurrency, --min-requests) streamed requests through `concurrency`
client tasks; tokens/s = generated tokens (from usage) / wall time. All three are started
(and warmed up) first; then, per level, the columns take turns for --rounds rounds so that
load from other processes hits them alike, and the best round is kept (torch runs once:
it is the slowest column). Only one column runs at a
time; the idle vLLM engines wait without using the CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import torch

from magnet.hardware import DTYPE_HELP, default_dtype, dtype_name

PROMPTS = [
    "The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
    "The three laws of thermodynamics are", "import numpy as np\n", "My favourite recipe for bread",
    "The history of the Roman Empire", "Dear hiring manager,", "A haiku about the sea:",
    "The best way to learn a language is", "class Stack:\n", "In 1969, astronauts",
    "Photosynthesis is the process", "Here is a list of fruits:", "The quick brown fox",
    "Machine learning models",
]

Stream = Callable[[str], AsyncIterator[int]]  # prompt -> yields once per chunk: tokens so far


@dataclass
class Level:
    tokens_per_s: float
    first_chunk_ms: float  # mean time to the first streamed chunk


async def run_level(stream: Stream, concurrency: int, n_requests: int) -> Level:
    """n_requests streams through `concurrency` tasks; total tokens / wall time."""
    queue = [PROMPTS[i % len(PROMPTS)] for i in range(n_requests)]
    tokens, firsts = [], []

    async def client():
        while queue:
            prompt, start, first, count = queue.pop(), time.perf_counter(), None, 0
            async for count in stream(prompt):
                first = first or time.perf_counter() - start
            tokens.append(count)
            firsts.append(first)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return Level(sum(tokens) / wall, 1000 * sum(firsts) / len(firsts))


async def warm_up(stream: Stream) -> None:
    async for _ in stream("Hello"):
        pass


# ---- the three columns: each an async context giving a Stream -------------------------


@contextlib.asynccontextmanager
async def direct_column(args) -> AsyncIterator[Stream]:
    """vLLM's own async engine, no service in between."""
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    from magnet.loading import ModelSpec, load_tokenizer
    from magnet.merged import merged_checkpoint
    from magnet.server.vllm_backend import engine_args, prepare_environment, shutdown_engine

    prepare_environment()
    spec = ModelSpec(device="cpu", dtype=args.dtype)
    path = merged_checkpoint(spec)
    tokenizer = load_tokenizer(path)
    engine = AsyncLLM.from_engine_args(engine_args(path, None, args, spec))
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0, output_kind=RequestOutputKind.DELTA)

    async def stream(prompt: str) -> AsyncIterator[int]:
        prompt_ids = TokensPrompt(prompt_token_ids=tokenizer(prompt)["input_ids"])
        count = 0
        async for out in engine.generate(prompt_ids, params, uuid.uuid4().hex):
            count += len(out.outputs[0].token_ids)
            yield count

    try:
        yield stream
    finally:
        shutdown_engine(engine)


@contextlib.asynccontextmanager
async def torch_column(args) -> AsyncIterator[Stream]:
    from magnet.engine import Engine
    from magnet.loading import ModelSpec
    from magnet.sampling import SamplingParams
    from magnet.server.generation import TorchGenerateBackend

    backend = TorchGenerateBackend(Engine.from_spec(ModelSpec(device="cpu", dtype=args.dtype)))
    await backend.start()
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)

    async def stream(prompt: str) -> AsyncIterator[int]:
        async for chunk in backend.stream(prompt, params):
            yield chunk.completion_tokens

    try:
        yield stream
    finally:
        await backend.close()


@contextlib.asynccontextmanager
async def service_column(args) -> AsyncIterator[Stream]:
    """`magnet serve` in a child process (its own GIL, as deployed), streamed over HTTP."""
    from magnet.client import AsyncMagnetClient

    server = start_server(args)
    client = AsyncMagnetClient(f"http://127.0.0.1:{args.port}", timeout=600)

    async def stream(prompt: str) -> AsyncIterator[int]:
        async for chunk in client.generate_stream(prompt, max_tokens=args.tokens, temperature=0.0):
            yield chunk.usage.completion_tokens if chunk.usage else 0

    try:
        await wait_ready(client, server)
        yield stream
    finally:
        await client.aclose()
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def start_server(args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "magnet.cli", "serve", "--generate-backend", "vllm", "--port", str(args.port),
           "--vllm-kv-cache-gb", str(args.vllm_kv_cache_gb), "--vllm-max-model-len", str(args.vllm_max_model_len)]
    cmd += ["--dtype", args.dtype] if args.dtype else []
    log = open(args.server_log, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


async def wait_ready(client, server: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}): see its log")
        try:
            if (await client.http.get("/ready")).status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(2)
    raise SystemExit("the server was not ready in time")


# ---- report -----------------------------------------------------------------------------


def ratio(a: dict, b: dict, c: int) -> str:
    return f"{a[c].tokens_per_s / b[c].tokens_per_s:.2f}x" if a and b else "-"


def print_table(results: dict[str, dict[int, Level]], args) -> None:
    service, direct, on_torch = (results.get(k, {}) for k in ("service", "direct", "torch"))
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ngenerate throughput, {args.tokens} tokens per request, greedy, dtype {args.dtype or 'auto'} "
          f"(auto: {dtype_name(default_dtype(torch.device('cpu')))} here); tokens/s (mean first-chunk ms), "
          f"best of {args.rounds} alternating rounds (torch: 1); {os.cpu_count()} CPUs, load average {load}")
    print("| streams | service | vLLM direct | torch | service/direct | direct/torch | service/torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for c in args.concurrency:
        cells = [f"{r[c].tokens_per_s:.1f} ({r[c].first_chunk_ms:.0f} ms)" if r else "-"
                 for r in (service, direct, on_torch)]
        print(f"| {c} | " + " | ".join(cells)
              + f" | {ratio(service, direct, c)} | {ratio(direct, on_torch, c)} | {ratio(service, on_torch, c)} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--min-requests", type=int, default=4, help="requests per level at least")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level (best kept)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["service", "direct", "torch"])
    parser.add_argument("--port", type=int, default=8397)
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--vllm-kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--vllm-max-model-len", type=int, default=2048)
    parser.add_argument("--server-log", default=os.path.join(tempfile.gettempdir(), "magnet-bench-server.log"))
    return parser.parse_args()


async def main() -> None:
    args = parse_args()
    openers = {"service": service_column, "direct": direct_column, "torch": torch_column}
    async with contextlib.AsyncExitStack() as stack:
        streams = {}
        for name, opener in openers.items():
            if name not in args.skip:
                print(f"starting {name} ...", file=sys.stderr, flush=True)
                streams[name] = await stack.enter_async_context(opener(args))
                await warm_up(streams[name])
        results = await measure(streams, args)
    print_table(results, args)


async def measure(streams: dict[str, Stream], args) -> dict[str, dict[int, Level]]:
    """Columns alternate within each level (drift from other load hits them alike);
    the best of --rounds is kept. torch runs one round: it is the slowest column."""
    runs: dict[str, dict[int, list[Level]]] = {name: {} for name in streams}
    for c in args.concurrency:
        for round_ in range(args.rounds):
            for name, stream in streams.items():
                if name == "torch" and round_ > 0:
                    continue
                print(f"{name}: {c} streams, round {round_ + 1}", file=sys.stderr, flush=True)
                level = await run_level(stream, c, max(c, args.min_requests))
                runs[name].setdefault(c, []).append(level)
    return {name: {c: max(levels, key=lambda lv: lv.tokens_per_s) for c, levels in by_c.items()}
            for name, by_c in runs.items()}


if __name__ == "__main__":  # vLLM spawns its engine processes: keep this guard
    asyncio.run(main())
