"""The scheduler's promises, measured side by side in one run on the embedded model.

    python bench/bench_scheduler.py                 # default adapter, torch generate backend
    python bench/bench_scheduler.py --requests 16 --tokens 32

Starts `magnet serve` in this process (uvicorn on loopback, torch generate backend, so
infill and generation share the running decode batch) and prints one table of ratios:

    infill       requests/s with 16 concurrent /v1/infill over 1 request at a time
    generate     tokens/s with 16 concurrent /v1/generate over 1 at a time
    embed p99    /v1/embed p99 latency while 4 long generations decode, over idle
    embed tok/s  /v1/embed tokens/s, 32 clients x 8 texts, over a plain transformers forward
                 of the same token ids at batch 32 in this process (no HTTP, no scheduler)
    stream       per-token time of one streamed /v1/generate over Engine.generate_stream
                 called directly (the same decode loop without the server)

Every ratio is taken within this run, so the machine's speed cancels out; nothing else
should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
import torch
from bench_core import text_of  # the same filler prose as the core benchmark (bench/ is on the path)

STORIES = [
    ("Tom wanted a dog for his birthday.", "He named the puppy Max and walked him every day."),
    ("Anna studied hard for her math test.", "She got the best grade in her class."),
    ("The power went out during the storm.", "When the lights came back, everyone cheered."),
    ("Jake forgot his lunch at home.", "His friend shared a sandwich with him."),
]


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


async def bench_infill(http: httpx.AsyncClient, n: int, tokens: int) -> tuple[float, float]:
    async def infill(i: int):
        prefix, suffix = STORIES[i % len(STORIES)]
        body = {"prefix": f"{prefix} ", "suffix": f" {suffix}", "max_tokens": tokens}
        response = await http.post("/v1/infill", json=body)
        response.raise_for_status()

    await infill(0)  # warm-up
    alone = await one_by_one(infill, n)
    together = await timed_all(infill(i) for i in range(n))
    return n / alone, n / together


async def bench_generate(http: httpx.AsyncClient, n: int, tokens: int) -> tuple[float, float]:
    async def generate(i: int) -> int:
        body = {"prompt": text_of(8, i), "max_tokens": tokens, "ignore_eos": True}
        response = await http.post("/v1/generate", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    counts: list[int] = []

    async def counted(i: int):
        counts.append(await generate(i))

    await generate(0)
    alone = await one_by_one(counted, n)
    alone_tokens, counts[:] = sum(counts), []
    together = await timed_all(counted(i) for i in range(n))
    return alone_tokens / alone, sum(counts) / together


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


async def bench_embed_throughput(http: httpx.AsyncClient, engine, clients: int, per_request: int,
                                 rounds: int) -> tuple[float, float]:
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

    plain()
    started = time.perf_counter()
    for _ in range(rounds):
        plain()
    plain_rate = rounds * sum(len(s) for s in seqs) / (time.perf_counter() - started)
    return service_rate, plain_rate


async def bench_stream(http: httpx.AsyncClient, engine, tokens: int) -> tuple[float, float]:
    from magnet.sampling import SamplingParams

    prompt = text_of(16)

    async def served() -> float:
        body = {"prompt": prompt, "max_tokens": tokens, "stream": True, "ignore_eos": True}
        stamps = []
        async with http.stream("POST", "/v1/generate", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    json.loads(line[6:])
                    stamps.append(time.perf_counter())
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)

    def direct() -> float:
        params = SamplingParams(max_tokens=tokens, ignore_eos=True)
        stamps = [time.perf_counter() for _ in engine.generate_stream(prompt, params)]
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)

    await served()
    server_times = [await served() for _ in range(3)]
    direct_times = [direct() for _ in range(3)]
    return min(server_times), min(direct_times)


async def main(args) -> None:
    from magnet.server.app import create_app
    from magnet.server.settings import Settings
    from magnet.server.testing import serve_on_loopback

    settings = Settings(adapter=args.adapter, heads="none", generate_backend="torch")
    app = create_app(settings)
    with serve_on_loopback(app, ready_timeout=600) as url:
        engine = app.state.service.engine
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            rows = []
            alone, together = await bench_infill(http, args.requests, args.tokens)
            rows.append((f"infill, {args.requests} concurrent / 1 at a time (req/s)", together, alone, ">= 6"))
            alone, together = await bench_generate(http, args.requests, args.tokens)
            rows.append((f"generate, {args.requests} concurrent / 1 at a time (tok/s)", together, alone, ">= 6"))
            idle, busy = await bench_embed_during_generation(http, args.embeds, args.long_tokens)
            rows.append(("embed p99 (s), 4 generations running / idle", busy, idle, "<= 2"))
            served, plain = await bench_embed_throughput(http, engine, 32, 8, args.rounds)
            rows.append(("embed tok/s, 32 clients x 8 texts / plain forward at batch 32", served, plain, ">= 1.0"))
            server, direct = await bench_stream(http, engine, args.tokens)
            rows.append(("per-token time (s), one stream served / Engine.generate_stream", server, direct, "<= 1.1"))
    print(f"\n{engine.name}, adapter {args.adapter}, torch threads {torch.get_num_threads()}, "
          f"{args.tokens} tokens per request\n")
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
    parser.add_argument("--rounds", type=int, default=3, help="embed throughput rounds")
    asyncio.run(main(parser.parse_args()))
