"""WikiText-2 valid perplexity, read left to right: does the adapted model still generate?

(The paper reports Magnet raising Llama-2-7B's WikiText-103 test PPL from 6.4 to 7.6.)
The paragraphs (`read_paragraphs`: headings dropped, WikiText's spacing undone) are joined
by newlines, tokenized once and cut into non-overlapping windows of `window` tokens. Each
window is scored on its own after an anchor (BOS) token, so its first token is predicted
from the anchor alone and every later one from the window's earlier tokens (causal mask).
An evenly spread subset of windows is scored; PPL = exp(mean NLL over all scored tokens).

    magnet eval wikitext [--data ../shared/data/wikitext2/wiki.valid.raw] [--windows 48]
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

from magnet.datasets import read_paragraphs
from magnet.evaluation.infill import span_nll
from magnet.evaluation.sizes import FULL, spread


def token_windows(tokenizer, paragraphs: list[str], window: int) -> list[list[int]]:
    """Every full window of `window` tokens of the newline-joined paragraphs (the tail is dropped)."""
    ids = tokenizer("\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    return [ids[start:start + window] for start in range(0, len(ids) - window + 1, window)]


def causal_perplexity(engine, windows: list[list[int]]) -> tuple[float, int]:
    """(exp of the mean token NLL, number of tokens scored): each window after the anchor token.
    A window is infill.span_nll's "missing" span with no context around it: left to right."""
    total, count = 0.0, 0
    for window in windows:
        nll, n = span_nll(engine.model, engine.anchor_id, engine.tokenizer.eos_token_id, [], window, [], hybrid=False)
        total, count = total + nll, count + n
    return math.exp(total / max(count, 1)), count


@dataclass(frozen=True)
class WikitextScore:
    ppl: float
    tokens: int  # scored tokens: windows x window
    windows: int
    window: int  # tokens per window, after fitting the model's context


def wikitext_perplexity(engine, path, n_windows: int, window: int) -> WikitextScore:
    """Perplexity on n_windows spread windows of the file (0 = all)."""
    window = min(window, engine.max_length - 1)  # + the anchor token
    windows = spread(token_windows(engine.tokenizer, read_paragraphs(path), window), n_windows)
    ppl, tokens = causal_perplexity(engine, windows)
    return WikitextScore(ppl, tokens, len(windows), window)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.evaluation.data_files import DATA_FLAGS
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--data", default=DATA_FLAGS["--wikitext"][0], help="WikiText-2 raw file")
    parser.add_argument("--windows", type=int, default=FULL.wikitext_windows, help="windows scored (0 = all)")
    parser.add_argument("--window", type=int, default=FULL.window_tokens, help="tokens per window")


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.data_files import find_data_file
    from magnet.model_options import load_engine

    path = find_data_file(args.data, "--data")
    engine = load_engine(args)
    started = time.perf_counter()
    score = wikitext_perplexity(engine, path, args.windows, args.window)
    print(f"{engine.name}\tWikiText-2 PPL (causal) {score.ppl:.2f}\t({score.tokens} tokens in {score.windows} "
          f"windows of {score.window}, {time.perf_counter() - started:.0f} s)")
    return 0
