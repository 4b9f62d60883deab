"""Magnet's embedding engine against a peer: vLLM's own pooling runner, on the same merged
checkpoint, dtype and texts, in one run.

    python bench/bench_embed_peer.py [--texts 256] [--words 24] [--rounds 3] [--dtype D]

Both read the same strings (the default instruction + filler prose, as /v1/embed reads them),
in process (no HTTP: bench_scheduler.py measures the service against the plain forward). vLLM
pools the last token of a *causal* read (its runner for decoder models), Magnet of a
bidirectional one: the same cost per token, so tokens/s compare; the vectors do not. Prints the
best of `--rounds` for each, taking turns, and the ratio.

Every text is distinct and vLLM's prefix cache is off: a causal reader may reuse the keys of
a prefix it has read before (the texts of an earlier round, the repeats of a short filler
cycle), which a bidirectional reader cannot, and which a stream of distinct texts does not
offer; with the cache on, the rounds after the first would time cache hits. The
instruction every text starts with (9 tokens) is shorter than one cache block.
"""
from __future__ import annotations

import argparse
import random
import time

from bench_core import WORDS  # the filler prose of the other benchmarks (bench/ is on the path)

from magnet.hardware import DTYPE_HELP, dtype_name


def distinct_text(n_words: int, index: int) -> str:
    """`n_words` of the filler prose in an order of their own: no two texts share a prefix
    beyond a few words (bench_core.text_of's texts repeat every len(WORDS))."""
    words = list(WORDS)
    random.Random(index).shuffle(words)
    return " ".join(words[:n_words])


def best_rate(embed, texts: list[str], tokens: int, rounds: int) -> float:
    embed(texts[:32])  # warm-up
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        embed(texts)
        best = max(best, tokens / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--words", type=int, default=24, help="filler words per text (bench_scheduler's 24)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    args = parser.parse_args()

    from magnet.engine import Engine
    from magnet.loading import ModelSpec
    from magnet.merged import merged_checkpoint
    from magnet.server.vllm_backend import prepare_environment

    prepare_environment()
    spec = ModelSpec(device="cpu", dtype=args.dtype)
    engine = Engine.from_spec(spec)
    texts = [engine.instruction + distinct_text(args.words, i) for i in range(args.texts)]
    tokens = sum(len(ids) for ids in engine.tokenizer(texts)["input_ids"])

    # instruction=""  : the texts already carry it, as vLLM's do
    alone = best_rate(lambda batch: engine.embed(batch, instruction=""), texts, tokens, args.rounds)

    from vllm import LLM

    dtype = dtype_name(engine.model.dtype)
    peer = LLM(model=str(merged_checkpoint(spec)), runner="pooling", dtype=dtype, max_model_len=512,
               kv_cache_memory_bytes=1 << 30, enable_prefix_caching=False)  # compiled, as vLLM serves
    vllm = best_rate(lambda batch: peer.embed(batch, use_tqdm=False), texts, tokens, args.rounds)
    magnet = max(alone, best_rate(lambda batch: engine.embed(batch, instruction=""), texts, tokens, args.rounds))
    print(f"Magnet before vLLM started {alone:.0f} tok/s, best of both turns {magnet:.0f}")
    print(f"\n{engine.name}, {dtype}, {args.texts} texts, {tokens} tokens (instruction included)\n")
    print("| engine | tok/s |\n| --- | ---: |")
    print(f"| Magnet Engine.embed (bidirectional) | {magnet:.0f} |")
    print(f"| vLLM pooling runner (causal) | {vllm:.0f} |")
    computed = sum(len(ids) for ids in engine.embedding_inputs(texts, instruction=""))
    print(f"\nMagnet / vLLM: {magnet / vllm:.2f}")
    print(f"Magnet's embedding layout adds an anchor and an EOS to each text: it computes {computed} tokens, "
          f"{magnet * computed / tokens:.0f} a second, {magnet * computed / tokens / vllm:.2f}x vLLM's rate")


if __name__ == "__main__":
    main()
