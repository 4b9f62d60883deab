"""The scheduler's promises, measured side by side in one run on the embedded model.

    python bench/bench_scheduler.py                 # default adapter, torch generate backend
    python bench/bench_scheduler.py --requests 16 --tokens 32
    python bench/bench_scheduler.py --skip-vllm     # without the vLLM bf16/fp32 rows

Starts `magnet serve` in this process (uvicorn on loopback, torch generate backend, so
infill and generation share the running decode batch; the machine's default dtype, see
magnet/hardware.py) and prints one table of ratios:

    infill       requests/s with 16 concurrent /v1/infill over 1 request at a time; and the
                 same fills on the engine itself, 16 in one batch over 1 at a time (its bound)
    generate     tokens/s with 16 concurrent /v1/generate over 1 at a time
    embed p99    /v1/embed p99 latency while 4 long generations decode, over idle
    embed tok/s  /v1/embed tokens/s, 32 clients x 8 texts, over a plain transformers forward
                 of the same token ids at batch 32 in this process (no HTTP, no scheduler),
                 over the engine's own forward of them (Engine.embed_token_ids, the fastest
                 in-process forward), and as a share of the served dtype's matmul ceiling (2048^2 matmul, measured here;
                 the model costs ~2 x parameters FLOP per token)
    infill/gen   one /v1/infill stream's tokens/s over one /v1/generate stream's (torch),
                 and over vLLM's own engine in the served dtype (what /v1/generate runs by default)
    stream       per-token time of one streamed /v1/generate (its client in another process)
                 over Engine.generate_stream called directly (the same decode loop without
                 the server)
    vLLM         generate tokens/s of vLLM's engine in bf16 over fp32, 1 and 16 streams
                 (after the server stops; bench_generate.py's direct column)

The infill and generate rows keep the best of `--rounds` rounds of each side, taking turns
(`best_in_turns`); the embed tok/s rows time `--rounds` passes in one go. Every ratio is taken within this run, so the machine's speed cancels out; nothing else
should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import httpx
import torch
from bench_core import text_of  # the same filler prose as the core benchmark (bench/ is on the path)

from magnet.hardware import DTYPE_HELP, cpu_has_native_bf16, dtype_name
from magnet.sampling import INFILL_DEFAULTS

# a streaming /v1/generate client: prints the time per token from the first chunk to the last
# (the count from the usage: a token that adds no text, as after an ignored EOS, sends no chunk)
STREAM_CLIENT = """
import json, sys, time, httpx
stamps, tokens = [], 0
with httpx.stream("POST", sys.argv[1].rstrip("/") + "/v1/generate", content=sys.argv[2],
                  headers={"content-type": "application/json"}, timeout=600) as response:
    for line in response.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            tokens = (json.loads(line[6:]).get("usage") or {}).get("completion_tokens", tokens)
            stamps.append(time.perf_counter())
print((stamps[-1] - stamps[0]) / (tokens - 1))
"""

STORIES = [
    ("Tom wanted a dog for his birthday.", "He named the puppy Max and walked him every day."),
    ("Anna studied hard for her math test.", "She got the best grade in her class."),
    ("The power went out during the storm.", "When the lights came back, everyone cheered."),
    ("Jake forgot his lunch at home.", "His friend shared a sandwich with him."),
]


def story_gap(i: int) -> tuple[str, str]:
    """The i-th infill of the infill rows: (prefix, suffix) around the gap, one of STORIES in turn."""
    prefix, suffix = STORIES[i % len(STORIES)]
    return f"{prefix} ", f" {suffix}"


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


async def timed_all(coros) -> float:
    started = time.perf_counter()
    await asyncio.gather(*coros)
    return time.perf_counter() - started


async def one_by_one(make, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await make(i)
    return time.perf_counter() - started


async def best_in_turns(rounds: int, *measures) -> list[float]:
    """The highest rate each async `measure()` returns in `rounds` rounds, the measures taking
    turns within a round (so a slow spell of the machine falls on both sides of a ratio)."""
    best = [0.0] * len(measures)
    for _ in range(rounds):
        for i, measure in enumerate(measures):
            best[i] = max(best[i], await measure())
    return best


async def bench_infill(http: httpx.AsyncClient, n: int, tokens: int, rounds: int) -> tuple[float, float, float]:
    """(requests/s one at a time, requests/s all at once, tokens/s one at a time): the best of
    `rounds` of each, taking turns (one round of 16 fills at once lasts under a second, a
    sample the machine's noise moves by 10-20%)."""
    generated = 0

    async def infill(i: int):
        nonlocal generated
        prefix, suffix = story_gap(i)
        body = {"prefix": prefix, "suffix": suffix, "max_tokens": tokens}
        response = await http.post("/v1/infill", json=body)
        response.raise_for_status()
        generated += response.json()["usage"]["completion_tokens"]

    tokens_per_fill = 0.0

    async def alone() -> float:
        nonlocal generated, tokens_per_fill
        generated = 0
        seconds = await one_by_one(infill, n)
        tokens_per_fill = generated / n  # greedy: the same fills every round
        return n / seconds

    async def together() -> float:
        return n / await timed_all(infill(i) for i in range(n))

    await infill(0)  # warm-up
    alone_rate, together_rate = await best_in_turns(rounds, alone, together)
    return alone_rate, together_rate, alone_rate * tokens_per_fill


def engine_infill_rates(engine, n: int, tokens: int, rounds: int) -> tuple[float, float]:
    """(requests/s one at a time, requests/s all n in one batch) of `bench_infill`'s fills
    called on the engine itself: the served ratio's bound, with no HTTP, no tokenizer thread
    and every request there at once (one prefill of all n, then as many steps as the longest
    fill). The best of `rounds` of each side, taking turns."""
    requests = [list(story_gap(i)) for i in range(n)]
    params = replace(INFILL_DEFAULTS, max_tokens=tokens)
    alone = together = float("inf")
    for _ in range(rounds):
        alone = min(alone, timed_once(lambda: [engine.infill(request, params) for request in requests]))
        together = min(together, timed_once(lambda: engine.infill_batch(requests, [params] * n)))
    return n / alone, n / together


MAIN_THREAD = False  # --main-thread-measures: run them on this thread instead (how this benchmark used to)


async def on_model_thread(worker, fn, *args):
    """`fn(*args)` on the service's model thread, between its requests. Every torch call of
    this process runs on that one thread: torch ops on a second thread give OpenMP a second
    team of workers, and libgomp, then counting more threads than cores, stops spinning
    between parallel regions (--main-thread-measures shows the cost; README)."""
    if MAIN_THREAD:
        return fn(*args)
    call = worker.call("bench", fn, *args, priced=False)
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, worker.loop))  # the server's loop


def matmul_ceiling(dtype: torch.dtype, size: int = 2048, repeat: int = 10) -> float:
    """FLOP/s of a size x size matmul in `dtype` on this CPU: best of `repeat`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(timed_once(lambda: a @ b) for _ in range(repeat))
    return 2 * size ** 3 / best


def parameter_count(model) -> int:
    """The model's weights: its parameters, and the decoder's packed linears (magnet/packed.py),
    whose weights are buffers; a tied output projection shares the embeddings' count."""
    from magnet.packed import PackedLinear

    packed = sum(m.in_features * m.out_features for m in model.get_decoder().modules() if isinstance(m, PackedLinear))
    return sum(p.numel() for p in model.parameters()) + packed


def timed_once(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


async def bench_vllm_dtypes(args) -> dict[str, dict[int, float]]:
    """{dtype: {streams: tokens/s}} of vLLM's own engine, greedy, args.tokens per request."""
    from argparse import Namespace

    from bench_generate import direct_column, run_level, warm_up

    results = {}
    for dtype in ("bfloat16", "float32"):  # one engine at a time
        column = Namespace(tokens=args.tokens, dtype=dtype, vllm_kv_cache_gb=1.0, vllm_max_model_len=2048)
        async with direct_column(column) as stream:
            await warm_up(stream)
            results[dtype] = {c: (await run_level(stream, c, c)).tokens_per_s for c in (1, args.requests)}
    return results


async def bench_generate(http: httpx.AsyncClient, n: int, tokens: int, rounds: int) -> tuple[float, float]:
    async def generate(i: int) -> int:
        body = {"prompt": text_of(8, i), "max_tokens": tokens, "ignore_eos": True}
        response = await http.post("/v1/generate", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    counts: list[int] = []

    async def counted(i: int):
        counts.append(await generate(i))

    async def alone() -> float:
        counts[:] = []
        seconds = await one_by_one(counted, n)
        return sum(counts) / seconds

    async def together() -> float:
        counts[:] = []
        seconds = await timed_all(counted(i) for i in range(n))
        return sum(counts) / seconds

    await generate(0)
    alone_rate, together_rate = await best_in_turns(rounds, alone, together)
    return alone_rate, together_rate


async def embed_latencies(http: httpx.AsyncClient, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        started = time.perf_counter()
        response = await http.post("/v1/embed", json={"input": text_of(12, i)})
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


async def bench_embed_during_generation(http: httpx.AsyncClient, n: int, long_tokens: int) -> tuple[float, float]:
    await embed_latencies(http, 3)
    idle = p99(await embed_latencies(http, n))
    bodies = [{"prompt": text_of(20, i), "max_tokens": long_tokens, "ignore_eos": True} for i in range(4)]
    generations = [asyncio.ensure_future(http.post("/v1/generate", json=body)) for body in bodies]
    await asyncio.sleep(0.5)  # the four are decoding
    busy = p99(await embed_latencies(http, n))
    running = sum(not g.done() for g in generations)
    answers = await asyncio.gather(*generations)
    tokens = [a.json()["usage"]["completion_tokens"] for a in answers]
    print(f"embed p99 under load: {running} of 4 generations still running when the last embed returned "
          f"(they generated {tokens} tokens)")
    return idle, busy


async def bench_embed_throughput(http: httpx.AsyncClient, engine, worker, clients: int, per_request: int,
                                 rounds: int) -> tuple[float, float, float]:
    """tokens/s: served, a plain transformers forward, Engine.embed_token_ids (the same batches of 32)."""
    texts = [text_of(24, i) for i in range(clients * per_request)]
    tokens = 0

    async def client(c: int):
        nonlocal tokens
        for _ in range(rounds):
            batch = texts[c * per_request:(c + 1) * per_request]
            response = await http.post("/v1/embed", json={"input": batch})
            response.raise_for_status()
            tokens += response.json()["usage"]["prompt_tokens"]

    await client(0)
    tokens = 0
    served = await timed_all(client(c) for c in range(clients))
    service_rate = tokens / served
    seqs = [engine.embed_ids(t, engine.instruction, truncate=False) for t in texts]
    width = max(len(s) for s in seqs)
    batches = [seqs[i:i + 32] for i in range(0, len(seqs), 32)]

    def plain():
        with torch.inference_mode():
            for group in batches:
                ids = torch.tensor([s + [engine.pad_id] * (width - len(s)) for s in group])
                padding = (torch.arange(width)[None] < torch.tensor([len(s) for s in group])[:, None]).long()
                engine.model.get_decoder()(input_ids=ids, attention_mask=padding)

    def direct():  # the engine's own forward (magnet/lean.py, compiled where it can be), no server
        for group in batches:
            engine.embed_token_ids(group)

    def rate(forward) -> float:
        forward()
        started = time.perf_counter()
        for _ in range(rounds):
            forward()
        return rounds * sum(len(s) for s in seqs) / (time.perf_counter() - started)

    return service_rate, await on_model_thread(worker, rate, plain), await on_model_thread(worker, rate, direct)


async def bench_stream(http: httpx.AsyncClient, engine, worker, tokens: int) -> tuple[float, float]:
    from magnet.sampling import SamplingParams

    prompt = text_of(16)

    async def served() -> float:
        # the client in a process of its own, as a real one is: parsing the stream here would
        # take the interpreter lock from the server's event loop and worker thread
        body = json.dumps({"prompt": prompt, "max_tokens": tokens, "stream": True, "ignore_eos": True})
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", STREAM_CLIENT, str(http.base_url), body],
                                       capture_output=True, text=True, check=True)
        return float(done.stdout)

    def direct() -> float:
        params = SamplingParams(max_tokens=tokens, ignore_eos=True)
        stamps, count = [], 0
        for chunk in engine.generate_stream(prompt, params):
            stamps.append(time.perf_counter())
            count = chunk.completion_tokens or count  # the last chunk carries the count
        return (stamps[-1] - stamps[0]) / (count - 1)

    await served()
    server_times = [await served() for _ in range(3)]
    direct_times = [await on_model_thread(worker, direct) for _ in range(3)]
    return min(server_times), min(direct_times)


async def main(args) -> None:
    from magnet.server.app import create_app
    from magnet.server.settings import Settings
    from magnet.server.testing import serve_on_loopback

    # 32 clients x 8 texts queue ~20 s of work on 2 cores: above the default estimated-wait
    # limit (429), so the throughput rows raise it; admission is not what they measure.
    settings = Settings(adapter=args.adapter, heads="none", generate_backend="torch", dtype=args.dtype,
                        max_queue_wait_s=args.max_queue_wait_s)
    app = create_app(settings)
    with serve_on_loopback(app, ready_timeout=600) as url:
        engine, worker = app.state.service.engine, app.state.service.worker
        served_dtype = dtype_name(engine.loaded.dtype)
        # emulated bf16 (no native bf16 on this CPU) takes minutes a 2048^2 product: not measured
        measure_bf16 = cpu_has_native_bf16() or served_dtype == "bfloat16"
        ceiling = await on_model_thread(worker, matmul_ceiling, torch.bfloat16) if measure_bf16 else float("nan")
        fp32_ceiling = await on_model_thread(worker, matmul_ceiling, torch.float32)
        flop_per_token = 2 * parameter_count(engine.model)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            rows = []
            alone, together, infill_rate = await bench_infill(http, args.requests, args.tokens, args.rounds)
            rows.append((f"infill, {args.requests} concurrent / 1 at a time (req/s)", together, alone, ">= 6"))
            alone, together = await on_model_thread(worker, engine_infill_rates, engine, args.requests, args.tokens,
                                                    args.rounds)
            rows.append((f"infill, {args.requests} in one batch / 1 at a time, the engine alone (req/s)", together,
                         alone, "(bound)"))
            alone, together = await bench_generate(http, args.requests, args.tokens, args.rounds)
            generate_rate = alone
            rows.append((f"generate, {args.requests} concurrent / 1 at a time (tok/s)", together, alone, ">= 6"))
            rows.append(("infill 1 stream / generate 1 stream, both torch (tok/s)", infill_rate, generate_rate,
                         ">= 0.8"))
            idle, busy = await bench_embed_during_generation(http, args.embeds, args.long_tokens)
            rows.append(("embed p99 (s), 4 generations running / idle", busy, idle, "<= 2"))
            served, plain, direct = await bench_embed_throughput(http, engine, worker, 32, 8, args.rounds)
            rows.append((f"embed tok/s, 32 clients x 8 texts / plain forward at batch 32 ({served_dtype})",
                         served, plain, ">= 0.9"))
            rows.append(("embed tok/s, 32 clients x 8 texts / Engine.embed_token_ids at batch 32, no server",
                         served, direct, ">= 0.9"))
            served_ceiling = ceiling if served_dtype == "bfloat16" else fp32_ceiling
            rows.append((f"embed FLOP/s, 32 clients x 8 texts / {served_dtype} matmul ceiling",
                         served * flop_per_token, served_ceiling, "(share)"))
            server, direct = await bench_stream(http, engine, worker, args.tokens)
            rows.append(("per-token time (s), one stream served / Engine.generate_stream", server, direct, "<= 1.1"))
    if not args.skip_vllm:
        vllm = await bench_vllm_dtypes(args)
        rows.append((f"infill 1 stream (torch) / vLLM generate 1 stream {served_dtype} (tok/s)", infill_rate,
                     vllm[served_dtype][1], ">= 0.8"))
        for streams in (1, args.requests):
            rows.append((f"vLLM generate bf16 / fp32, {streams} stream(s) (tok/s)", vllm["bfloat16"][streams],
                         vllm["float32"][streams], "(> 1: bf16)"))
    bf16 = f"{ceiling / 1e9:.0f} GFLOP/s" if measure_bf16 else "emulated, not measured"
    print(f"\n{engine.name}, adapter {args.adapter}, served in {served_dtype} (narrow products: "
          f"{engine.narrow.describe()}, magnet/narrow.py), torch threads {torch.get_num_threads()}, "
          f"{args.tokens} tokens per request; matmul 2048^2: bf16 {bf16}, fp32 {fp32_ceiling / 1e9:.0f} GFLOP/s; "
          f"load average "
          f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| measure | this | over | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, a, b, target in rows:
        print(f"| {name} | {a:.4g} | {b:.4g} | {a / b:.2f} | {target} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default="default")
    parser.add_argument("--requests", type=int, default=16, help="concurrent infill/generate requests")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per infill/generate request")
    parser.add_argument("--embeds", type=int, default=40, help="embed requests per latency sample")
    parser.add_argument("--long-tokens", type=int, default=400, help="tokens of the 4 long generations")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the infill and generate rows (the best kept) and passes of the embed tok/s rows")
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--skip-vllm", action="store_true", help="leave out the vLLM bf16/fp32 rows")
    parser.add_argument("--max-queue-wait-s", type=float, default=300, help="the server's --max-queue-wait-s")
    parser.add_argument("--main-thread-measures", action="store_true",
                        help="run the in-process measures on the benchmark's own thread (shows what a second "
                             "torch thread costs the service)")
    args = parser.parse_args()
    MAIN_THREAD = args.main_thread_measures
    asyncio.run(main(args))
