"""Which grammar library constrains the torch path: xgrammar vs llguidance (outlines-core: see
docs/generation.md), on the served tokenizer (SmolLM2's 49,152 tokens).

For each: the one-off vocabulary index, then per constraint (a choice list, a regex, a JSON
schema) the compile time and the mean time to compute one step's token mask while walking a
valid output token by token (what every decode step pays, per constrained span).

    python bench/bench_grammar.py            # prints a table; median of --rounds runs
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}
CASES = {  # name: (kind, spec, a text that matches it)
    "choice": ("choice", [" Paris", " London", " Berlin", " a city by the sea"], " a city by the sea"),
    "regex": ("regex", r" \d{3}-\d{4} \((home|work)\)", " 555-1234 (work)"),
    "json schema": ("json", SCHEMA, '{"name": "Ada Lovelace", "age": 36, "tags": ["maths", "engines"]}'),
}


def xgrammar_runner(tokenizer, vocab):
    import torch
    import xgrammar as xgr

    started = time.perf_counter()
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab,
                                                                      stop_token_ids=[tokenizer.eos_token_id]),
                                   cache_enabled=False)
    index_s = time.perf_counter() - started

    def compile_(kind, spec):
        if kind == "choice":
            return compiler.compile_grammar("root ::= " + " | ".join(json.dumps(c) for c in spec))
        if kind == "regex":
            return compiler.compile_regex(spec)
        return compiler.compile_json_schema(json.dumps(spec), any_whitespace=False)

    def walk(compiled, ids):
        matcher, mask = xgr.GrammarMatcher(compiled), xgr.allocate_token_bitmask(1, vocab)
        logits, times = torch.zeros(1, vocab), []
        for token in ids:
            t = time.perf_counter()
            matcher.fill_next_token_bitmask(mask)
            xgr.apply_token_bitmask_inplace(logits, mask)
            times.append(time.perf_counter() - t)
            assert matcher.accept_token(token)
        return statistics.mean(times)

    return index_s, compile_, walk


def llguidance_runner(tokenizer, vocab):
    import llguidance
    import llguidance.hf
    import llguidance.torch as llt
    import torch

    started = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)
    index_s = time.perf_counter() - started

    def compile_(kind, spec):
        if kind == "choice":
            grammar = llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec))
        elif kind == "regex":
            grammar = llguidance.LLMatcher.grammar_from_regex(spec)
        else:
            compact = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # as xgrammar's
            grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(spec), defaults=compact)
        matcher = llguidance.LLMatcher(lltok, grammar)  # llguidance compiles lazily, in the matcher
        assert not matcher.is_error(), matcher.get_error()
        return grammar

    def walk(grammar, ids):
        matcher, mask = llguidance.LLMatcher(lltok, grammar), llt.allocate_token_bitmask(1, vocab)
        logits, times = torch.zeros(1, vocab), []
        for token in ids:
            t = time.perf_counter()
            llt.fill_next_token_bitmask(matcher, mask, 0)
            llt.apply_token_bitmask_inplace(logits, mask)
            times.append(time.perf_counter() - t)
            assert matcher.consume_token(token), matcher.get_error()
        return statistics.mean(times)

    return index_s, compile_, walk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from magnet.loading import load_tokenizer, resolve_base_path

    tokenizer = load_tokenizer(resolve_base_path(None))
    vocab = len(tokenizer)
    rows = []
    for name, make in (("xgrammar", xgrammar_runner), ("llguidance", llguidance_runner)):
        index_s, compile_, walk = make(tokenizer, vocab)
        row = [name, f"{index_s * 1e3:.0f}"]
        for kind, spec, text in CASES.values():
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            compiles, steps = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                compiled = compile_(kind, spec)
                compiles.append(time.perf_counter() - t)
                steps.append(walk(compiled, ids))
            row += [f"{statistics.median(compiles) * 1e3:.2f}", f"{statistics.median(steps) * 1e6:.0f}"]
        rows.append(row)
    header = ["library", "vocab index ms"] + [f"{c} {w}" for c in CASES for w in ("compile ms", "mask us/step")]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
