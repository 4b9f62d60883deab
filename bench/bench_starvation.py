"""Can one request starve the others? Measured against a running server, one table row per case.

    magnet serve --generate-backend torch --heads none &
    python bench/bench_starvation.py --url http://127.0.0.1:8000 [--cases starve,leave,nbestof,flood]

    starve    a big embed (12 texts x ~850 tokens) runs; one-word embeds are sent one after another
              meanwhile: their latency (p50, max) beside the big one's duration
    leave     the big embed's client leaves after 3 s; the latency of a one-word embed sent then
    nbestof   /v1/completions {"prompt", "suffix", "n": 16, "best_of": 16, "max_tokens": 4}: its status
              and duration; one-word embeds meanwhile
    flood     --clients clients each embedding 8 texts in a loop for --seconds: statuses, p95 latency

Every case waits for the server to be idle (its queue empty) before it starts.
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

LONG_TEXT = "The cat sat on the mat and looked at the bird in the tall tree. " * 57  # ~850 tokens
SMALL = {"input": "hello"}
NBESTOF = {"prompt": "The cat sat", "suffix": "the mat.", "n": 16, "best_of": 16, "max_tokens": 4}


def small_latencies(url: str, until: threading.Event, limit_s: float) -> list[float]:
    """One-word embeds one after another until `until` is set (or limit_s): the latency of each
    answered 200 (a 429 is a figure of its own, `refused`)."""
    latencies, deadline = [], time.monotonic() + limit_s
    with httpx.Client(timeout=limit_s) as client:
        while not until.is_set() and time.monotonic() < deadline:
            started = time.perf_counter()
            status = client.post(f"{url}/v1/embed", json=SMALL).status_code
            latencies.append(time.perf_counter() - started if status == 200 else float("nan"))
            time.sleep(0.2)
    return latencies


def summary(latencies: list[float]) -> dict:
    ok = [x for x in latencies if x == x]
    return {"small_embeds": len(ok), "small_refused": len(latencies) - len(ok),
            "small_p50": f"{statistics.median(ok):.2f} s" if ok else "-",
            "small_max": f"{max(ok):.2f} s" if ok else "-"}


def wait_idle(url: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        depth = next((float(line.split()[-1]) for line in text.splitlines() if line.startswith("magnet_queue_depth ")), 0)
        running = next((float(line.split()[-1]) for line in text.splitlines()
                        if line.startswith("magnet_running_decodes ")), 0)
        if depth == 0 and running == 0 and httpx.post(f"{url}/v1/embed", json=SMALL, timeout=timeout).is_success:
            return
        time.sleep(1)


def row(case: str, **figures) -> None:
    print(f"| {case} | " + " | ".join(f"{k} {v}" for k, v in figures.items()) + " |", flush=True)


def starve(url: str, limit_s: float) -> None:
    done = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        smalls = pool.submit(small_latencies, url, done, limit_s)
        time.sleep(0.5)
        started = time.perf_counter()
        big = httpx.post(f"{url}/v1/embed", json={"input": [LONG_TEXT] * 12}, timeout=limit_s)
        big_s = time.perf_counter() - started
        done.set()
        latencies = smalls.result()
    tokens = big.json()["usage"]["prompt_tokens"] if big.is_success else "-"
    row("starve", big=f"{big.status_code} {tokens} tokens in {big_s:.1f} s", **summary(latencies))


def leave(url: str, limit_s: float) -> None:
    try:
        httpx.post(f"{url}/v1/embed", json={"input": [LONG_TEXT] * 12}, timeout=3.0)
    except httpx.TimeoutException:
        pass
    started = time.perf_counter()
    answer = httpx.post(f"{url}/v1/embed", json=SMALL, timeout=limit_s)
    row("leave", small_after_big_left=f"{answer.status_code} in {time.perf_counter() - started:.2f} s")


def nbestof(url: str, limit_s: float) -> None:
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        smalls = pool.submit(small_latencies, url, done, limit_s)
        started = time.perf_counter()
        try:
            status = httpx.post(f"{url}/v1/completions", json=NBESTOF, timeout=limit_s).status_code
        except httpx.TimeoutException:
            status = "no answer"
        took = time.perf_counter() - started
        time.sleep(1.0)
        done.set()
        latencies = smalls.result()
    row("nbestof", completions=f"{status} in {took:.1f} s", **summary(latencies))


def flood(url: str, clients: int, seconds: float) -> None:
    texts = [f"sentence number {i} about a quiet morning by the river" for i in range(8)]
    deadline = time.monotonic() + seconds
    results: list[tuple[int, float]] = []

    def client_loop() -> None:
        with httpx.Client(timeout=600) as client:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                status = client.post(f"{url}/v1/embed", json={"input": texts}).status_code
                results.append((status, time.perf_counter() - started))
                if status == 429:
                    time.sleep(1.0)

    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(client_loop)
    ok = sorted(latency for status, latency in results if status == 200)
    refused = sum(status == 429 for status, _ in results)
    p95 = ok[int(0.95 * (len(ok) - 1))] if ok else float("nan")
    row("flood", clients=clients, seconds=seconds, answered_200=len(ok), refused_429=refused,
        p95_200=f"{p95:.1f} s", max_200=f"{max(ok, default=float('nan')):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--cases", default="starve,leave,nbestof,flood")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--limit-s", type=float, default=300.0, help="longest wait for one request")
    args = parser.parse_args()
    print("| case | figures |\n| --- | --- |")
    for case in args.cases.split(","):
        wait_idle(args.url)
        if case == "flood":
            flood(args.url, args.clients, args.seconds)
        else:
            {"starve": starve, "leave": leave, "nbestof": nbestof}[case](args.url, args.limit_s)


if __name__ == "__main__":
    main()
