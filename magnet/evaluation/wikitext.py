"""WikiText-2 perplexity, read left to right: does the adapted model still generate?

(The paper reports Magnet raising Llama-2-7B's WikiText-103 test PPL from 6.4 to 7.6.)
The paragraphs (`read_paragraphs`: headings dropped, WikiText's spacing undone) are joined
by newlines, tokenized once and cut into non-overlapping windows of `window` tokens. Each
window is scored on its own after an anchor (BOS) token, so its first token is predicted
from the anchor alone and every later one from the window's earlier tokens (causal mask).
An evenly spread subset of windows is scored; PPL = exp(mean NLL over all scored tokens).
Only the articles of one split are read (--split, report by default; magnet/splits.py splits
wiki.valid.raw by article), so an adapter trained on its train articles is scored on others.

    magnet eval wikitext [--data ../shared/data/wikitext2/wiki.valid.raw] [--split select] [--windows 48]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from magnet.datasets import read_paragraphs
from magnet.evaluation.infill import perplexity, span_nll
from magnet.evaluation.sizes import FULL, spread
from magnet.progress import progress


def token_windows(tokenizer, paragraphs: list[str], window: int) -> list[list[int]]:
    """Every full window of `window` tokens of the newline-joined paragraphs (the tail is dropped)."""
    ids = tokenizer("\n".join(paragraphs), add_special_tokens=False)["input_ids"]
    return [ids[start:start + window] for start in range(0, len(ids) - window + 1, window)]


def causal_perplexity(engine, windows: list[list[int]], label: str = "") -> tuple[float, int, list[float]]:
    """(exp of the mean token NLL, number of tokens scored, each window's summed NLL): each
    window read after the anchor token, as infill.span_nll's "missing" span with no context
    around it, left to right."""
    nlls = [span_nll(engine.model, engine.anchor_id, engine.tokenizer.eos_token_id, [], window, [], hybrid=False)[0]
            for window in progress(windows, label or f"WikiText {engine.name}", unit="window")]
    count = sum(map(len, windows))
    return perplexity(nlls, count), count, nlls


@dataclass(frozen=True)
class WikitextScore:
    ppl: float
    tokens: int  # scored tokens: windows x window
    windows: int
    window: int  # tokens per window, after fitting the model's context
    nlls: tuple[float, ...] = ()  # each window's summed NLL (for an interval over windows)


def wikitext_perplexity(engine, path, split: str | None, n_windows: int, window: int,
                        label: str = "") -> WikitextScore:
    """Perplexity on n_windows spread windows of the split's articles (None: the whole file;
    n_windows 0: every window)."""
    window = min(window, engine.max_length - 1)  # + the anchor token
    windows = spread(token_windows(engine.tokenizer, read_paragraphs(path, split), window), n_windows)
    if not windows:
        raise SystemExit(f"{path}: no {split or ''} text to score (fewer than {window} tokens)")
    ppl, tokens, nlls = causal_perplexity(engine, windows, label)
    return WikitextScore(ppl, tokens, len(windows), window, tuple(nlls))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.evaluation.data_files import add_data_arguments, add_split_argument
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    add_data_arguments(parser, "--wikitext", dest={"--wikitext": "--data"})
    add_split_argument(parser)
    parser.add_argument("--windows", type=int, default=FULL.wikitext_windows, help="windows scored (0 = all)")
    parser.add_argument("--window", type=int, default=FULL.window_tokens, help="tokens per window")


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.data_files import file_split, find_data_file, flag_value, split_note
    from magnet.evaluation.overlap import seen_note
    from magnet.model_options import load_engine

    path = find_data_file(flag_value(args, "--wikitext"), "--data")
    split = file_split(path, args.split, "--wikitext", "--data")
    engine = load_engine(args)
    started = time.perf_counter()
    score = wikitext_perplexity(engine, path, split, args.windows, args.window)
    print(f"{engine.name}\tWikiText-2 PPL (causal) {score.ppl:.2f}\t({score.tokens} tokens in {score.windows} "
          f"windows of {score.window} from {split_note(path, split)}, {time.perf_counter() - started:.0f} s)")
    note = seen_note(engine, [(path, split)])
    if note:
        print(note)
    return 0
