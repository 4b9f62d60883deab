"""Core engine speed on the embedded model, measured side by side in one run.

    python bench/bench_core.py [--adapter none] [--batch 16] [--context 256] [--tokens 32] [--rows 16] [--dtype D]
    python bench/bench_core.py --dtypes float32 bfloat16     # each path in each dtype, side by side
    python bench/bench_core.py --packing                     # plain nn.Linear vs oneDNN-packed weights
    python bench/bench_core.py --narrow                      # every product plain fp32 vs magnet/narrow.py tiers
    python bench/bench_core.py --lean                        # Hugging Face forward vs magnet/lean.py
    python bench/bench_core.py --compiled --batch 256        # lean encoder layers eager vs torch.compile
    python bench/bench_core.py --budgets 2048 4096 8192 --batch 256   # embedding batch sizes
    python bench/bench_core.py --attention                   # decode attention: SDPA grouped vs folded

Prints one table:
    embed           tokens/s of Engine.embed vs a plain transformers forward (same model, batch, tokens)
    decode          per-token time of hybrid infill (KV cache) vs causal generation (KV cache)
                    vs a naive infill that re-encodes context + span at every step
    batched         time of one decode step of --rows infills together, over one stream's token;
                    the prefill of --rows infills together, over one infill's
With --dtypes: embed tokens/s and one stream's infill and generate ms/token per dtype (the
engines take turns, --repeat rounds, median), which decides the dtype of each torch path.
With --packing: the same rows for an engine with plain nn.Linear layers, one with
oneDNN-packed weights (magnet/packed.py), and one whose packed q/k/v and gate/up projections
run as one product each, in the machine's dtype or --dtype (none with narrow tiers). With
--narrow: the same rows for an fp32 engine whose products are all plain and one with the
narrow-product tiers measured while it loads (magnet/narrow.py, the default). With --lean: the same rows for
an engine whose cache-filling forwards (prefill, decode steps) run through the Hugging Face
module stack and one that runs them through magnet/lean.py (the default), both with eager
layers. With --compiled: embed tokens/s of the Hugging Face forward, the lean forward's
eager layers and its compiled ones (the default on CPU). With --budgets: embed tokens/s of
engines whose embedding batches hold those many padded tokens.
Ratios are taken within this run, so the machine's speed cancels out.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from magnet.batch import run_to_end
from magnet.engine import Engine, EngineConfig
from magnet.forward import hidden_states, logits
from magnet.hardware import DTYPE_HELP, dtype_name
from magnet.loading import ModelSpec
from magnet.masks import CONTEXT
from magnet.narrow import Tiers
from magnet.sampling import SamplingParams

WORDS = ("the river bank was full of people who came to watch the boats race past the old mill "
         "while children ran along the shore and the sun set slowly over the hills").split()


def text_of(n_words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n_words))


def timed(fn, repeat: int) -> float:
    """Median wall time of `repeat` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_embed(engine: Engine, batch: int, repeat: int, plain_too: bool = True) -> tuple[float, float | None]:
    """(Engine.embed tokens/s, the plain forward's tokens/s or None)."""
    texts = [text_of(24, i) for i in range(batch)]
    seqs = [engine.embed_ids(t, engine.instruction, truncate=False) for t in texts]
    n_tokens = sum(len(s) for s in seqs)
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [engine.pad_id] * (width - len(s)) for s in seqs])
    padding = (torch.arange(width)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()

    def plain():
        with torch.inference_mode():
            engine.model.get_decoder()(input_ids=ids, attention_mask=padding)

    ours = timed(lambda: engine.embed(texts), repeat)
    if not plain_too:
        return n_tokens / ours, None
    theirs = timed(plain, repeat)
    return n_tokens / ours, n_tokens / theirs


def bench_decode(engine: Engine, context: int, tokens: int, repeat: int, naive: bool = True) -> dict[str, float]:
    half = context // 2
    prefix, suffix = text_of(half), text_of(half, offset=7)
    # both decode exactly `tokens` (EOS ignored; fills kept open by bench_config's min_fill_tokens)
    params = SamplingParams(max_tokens=tokens, ignore_eos=True)

    def infill():
        return engine.infill([prefix, suffix], params)

    def generate():
        return engine.generate(prefix + " " + suffix, params)

    def re_encoding():
        lay = engine.layout([prefix, suffix], params)
        span: list[int] = []
        with torch.inference_mode():
            for _ in range(tokens):
                ids = torch.tensor([lay.ids + span])
                roles = torch.tensor([[CONTEXT] * len(lay.ids) + [1] * len(span)])
                start = lay.gap_starts[0]
                positions = torch.tensor([lay.positions + list(range(start, start + len(span)))])
                hidden = hidden_states(engine.model, ids, roles, positions)
                slot = lay.predictors[0] if not span else ids.shape[1] - 1
                span.append(int(logits(engine.model, hidden[0, slot]).argmax()))

    results = {}
    for name, fn in (("infill", infill), ("generate", generate)):
        total = timed(fn, repeat)
        n = fn().completion_tokens
        prefill = timed(lambda: engine.infill([prefix, suffix], SamplingParams(max_tokens=1)), repeat) \
            if name == "infill" else timed(lambda: engine.generate(prefix + " " + suffix, SamplingParams(max_tokens=1)), repeat)
        results[name] = (total - prefill) / max(n - 1, 1)
    if naive:
        results["naive"] = timed(re_encoding, 1) / tokens
    return results


def bench_rows(engine: Engine, context: int, tokens: int, rows: int, repeat: int) -> dict[str, float]:
    """Seconds of the prefill of one infill and of `rows` infills together, and per decode step
    of the `rows` together, one batch (as the server's running batch holds concurrent requests),
    each row over ~`context` tokens."""
    half = context // 2
    requests = [[text_of(half, row), text_of(half, row + 7)] for row in range(rows)]

    def run(n: int, max_tokens: int) -> None:
        run_to_end(engine.start_infill(requests[:n], [SamplingParams(max_tokens=max_tokens, ignore_eos=True)] * n))

    prefill = timed(lambda: run(rows, 1), repeat)
    return {"prefill 1": timed(lambda: run(1, 1), repeat), "prefill": prefill,
            "step": (timed(lambda: run(rows, tokens), repeat) - prefill) / max(tokens - 1, 1)}


def bench_attention(config, dtype: torch.dtype, repeat: int) -> None:
    """One layer's decode attention at the model's head shapes: SDPA's grouped path
    (`enable_gqa`) against magnet/lean.py's folded call, for 1 and 16 rows over a short and a
    long cache; prints microseconds a call (median of `repeat` timings of 200 calls)."""
    import torch.nn.functional as F

    from magnet.lean import folded_attention

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = config.hidden_size // heads
    scale = dim ** -0.5
    print(f"{heads} query heads over {kv_heads} kv heads of {dim}, {dtype}, one query token a row")
    print("| rows | cached columns | grouped SDPA us | folded us | folded / grouped |\n| ---: | ---: | ---: | ---: | ---: |")
    for rows, columns in ((1, 32), (1, 300), (16, 32), (16, 300), (16, 1000)):
        q = torch.randn(rows, heads, 1, dim, dtype=dtype)
        k, v = (torch.randn(rows, kv_heads, columns, dim, dtype=dtype) for _ in range(2))
        mask = torch.zeros(rows, 1, 1, columns, dtype=dtype)
        with torch.inference_mode():
            grouped = timed(lambda: [F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                                                    enable_gqa=True) for _ in range(200)], repeat)
            folded = timed(lambda: [folded_attention(q, k, v, mask, scale) for _ in range(200)], repeat)
        print(f"| {rows} | {columns} | {grouped / 200 * 1e6:.0f} | {folded / 200 * 1e6:.0f} | {folded / grouped:.2f} |")


def compare(engines: dict[str, Engine], args) -> None:
    """Each torch path on each engine, the engines taking turns so drifting load hits them alike."""
    labels = list(engines)
    names = ("embed tokens/s (batch %d)" % args.batch, "infill ms/token, 1 stream", "generate ms/token, 1 stream")
    if args.budgets or args.compiled:  # only the embedding batches differ
        names = names[:1]
    values = {label: {name: [] for name in names} for label in labels}
    for _ in range(args.repeat):
        for label, engine in engines.items():
            measured = [bench_embed(engine, args.batch, 1, plain_too=False)[0]]
            if len(names) > 1:
                decode = bench_decode(engine, args.context, args.tokens, 1, naive=False)
                measured += [1e3 * decode["infill"], 1e3 * decode["generate"]]
            for name, value in zip(names, measured):
                values[label][name].append(value)
    first = engines[labels[0]]
    print(f"model {first.name}, {torch.get_num_threads()} threads, context ~{args.context} "
          f"tokens, {args.tokens} decoded; median of {args.repeat} alternating rounds")
    # one ratio column per engine after the first, each over the one before it
    print("| measure | " + " | ".join(labels) + "".join(f" | {b} / {a}" for a, b in zip(labels, labels[1:])) + " |")
    print("| --- |" + " ---: |" * (2 * len(labels) - 1))
    for name in names:
        medians = [statistics.median(values[label][name]) for label in labels]
        print(f"| {name} | " + " | ".join(f"{m:,.1f}" for m in medians)
              + "".join(f" | {b / a:.2f}" for a, b in zip(medians, medians[1:])) + " |")


def bench_config(args, **changes) -> EngineConfig:
    """The engine's defaults, except that a fill never ends before --tokens tokens: a fill
    that found its suffix after one token would time a prefill, not decoding."""
    return EngineConfig(min_fill_tokens=args.tokens, **changes)


def dtype_engines(args) -> dict[str, Engine]:
    return {dtype: Engine.from_spec(ModelSpec(adapter=args.adapter, dtype=dtype), bench_config(args))
            for dtype in args.dtypes}


def packing_engines(args) -> dict[str, Engine]:
    spec = ModelSpec(adapter=args.adapter, dtype=args.dtype)
    plain = Engine.from_spec(spec, bench_config(args, pack_linears=False, narrow_tiers=Tiers()))
    separate = Engine.from_spec(spec, bench_config(args, pack_linears=True))
    packed = Engine.from_spec(spec, bench_config(args, pack_linears=True, join_projections=True))
    dtype = dtype_name(packed.loaded.dtype)
    return {f"plain nn.Linear ({dtype})": plain, f"packed ({dtype})": separate,
            f"packed, q/k/v and gate/up joined ({dtype})": packed}


def narrow_engines(args) -> dict[str, Engine]:
    spec = ModelSpec(adapter=args.adapter, dtype="float32")  # tiers exist only where products run fp32
    plain = Engine.from_spec(spec, bench_config(args, narrow_tiers=Tiers()))
    narrow = Engine.from_spec(spec, bench_config(args))
    return {"every product plain (float32)": plain, f"narrow {narrow.narrow.describe()} (float32)": narrow}


def lean_engines(args) -> dict[str, Engine]:
    spec = ModelSpec(adapter=args.adapter, dtype=args.dtype)
    hugging_face = Engine.from_spec(spec, bench_config(args, lean_decode=False))
    lean = Engine.from_spec(spec, bench_config(args, compile_encoder=False))
    dtype = dtype_name(lean.loaded.dtype)
    return {f"Hugging Face forward ({dtype})": hugging_face, f"magnet.lean ({dtype})": lean}


def compiled_engines(args) -> dict[str, Engine]:
    spec = ModelSpec(adapter=args.adapter, dtype=args.dtype)
    engines = lean_engines(args)
    compiled = Engine.from_spec(spec, bench_config(args))
    engines[f"magnet.lean, compiled ({dtype_name(compiled.loaded.dtype)})"] = compiled
    return engines


def budget_engines(args) -> dict[str, Engine]:
    spec = ModelSpec(adapter=args.adapter, dtype=args.dtype)
    return {f"{budget} tokens per batch": Engine.from_spec(spec, bench_config(args, embed_batch_tokens=budget))
            for budget in args.budgets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="default")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=256, help="context tokens for the decode rows")
    parser.add_argument("--tokens", type=int, default=32, help="tokens decoded per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=16, help="infill rows decoded together for the batched row")
    parser.add_argument("--dtype", default=None, help=DTYPE_HELP)
    parser.add_argument("--dtypes", nargs="+", default=None, help="compare these dtypes path by path instead")
    parser.add_argument("--packing", action="store_true", help="compare plain and oneDNN-packed linears instead")
    parser.add_argument("--narrow", action="store_true", help="compare plain fp32 products and narrow tiers instead")
    parser.add_argument("--lean", action="store_true", help="compare the Hugging Face and the lean forward instead")
    parser.add_argument("--compiled", action="store_true",
                        help="compare embedding with eager and compiled lean layers instead (use a large --batch)")
    parser.add_argument("--attention", action="store_true",
                        help="time one layer's decode attention: SDPA's grouped path vs the folded call")
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help="compare embedding batches of these padded-token budgets instead (use a large --batch)")
    args = parser.parse_args()
    if args.attention:
        engine = Engine.from_spec(ModelSpec(adapter="none", dtype=args.dtype), bench_config(args))
        return bench_attention(engine.model.config, engine.model.dtype, args.repeat)
    if args.budgets:
        return compare(budget_engines(args), args)
    if args.compiled:
        return compare(compiled_engines(args), args)
    if args.lean:
        return compare(lean_engines(args), args)
    if args.dtypes:
        return compare(dtype_engines(args), args)
    if args.packing:
        return compare(packing_engines(args), args)
    if args.narrow:
        return compare(narrow_engines(args), args)
    engine = Engine.from_spec(ModelSpec(adapter=args.adapter, dtype=args.dtype), bench_config(args))
    print(f"model {engine.name}, {torch.get_num_threads()} threads, {engine.device}, {engine.loaded.dtype}")

    ours, plain = bench_embed(engine, args.batch, args.repeat)
    decode = bench_decode(engine, args.context, args.tokens, args.repeat)
    together = bench_rows(engine, args.context, args.tokens, args.rows, args.repeat)
    rows = [
        ("embed tokens/s (batch %d)" % args.batch, f"{ours:,.0f}", f"plain forward {plain:,.0f}", f"{ours / plain:.2f}x"),
        ("infill ms/token (KV cache)", f"{decode['infill'] * 1e3:.1f}", "", "1.00x"),
        ("generate ms/token (KV cache)", f"{decode['generate'] * 1e3:.1f}", "", f"{decode['generate'] / decode['infill']:.2f}x"),
        ("naive infill ms/token (re-encode)", f"{decode['naive'] * 1e3:.1f}", "", f"{decode['naive'] / decode['infill']:.2f}x"),
        (f"infill ms/step, {args.rows} rows together", f"{together['step'] * 1e3:.1f}", "",
         f"{together['step'] / decode['infill']:.2f}x"),
        ("infill prefill ms, 1 row", f"{together['prefill 1'] * 1e3:.1f}", "", "1.00x"),
        (f"infill prefill ms, {args.rows} rows together", f"{together['prefill'] * 1e3:.1f}", "",
         f"{together['prefill'] / together['prefill 1']:.2f}x"),
    ]
    print(f"context ~{args.context} tokens, {args.tokens} decoded tokens per run")
    print(f"{'measure':36} {'value':>10}   {'reference':22} {'ratio':>7}")
    for name, value, reference, ratio in rows:
        print(f"{name:36} {value:>10}   {reference:22} {ratio:>7}")


if __name__ == "__main__":
    main()
