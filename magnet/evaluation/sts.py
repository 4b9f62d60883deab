"""STS-B: Spearman correlation between embedding cosine and the gold score.

Scored on one split (--split; magnet/splits.py): report = dev (sts-dev.csv, used for nothing
else), select = a slice of sts-train.csv that training never reads (for choices made while
training), train = the rest of sts-train.csv.

    magnet eval sts [--data ../shared/data/stsb/sts-dev.csv] [--split select] [--model ...] [--adapter ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from magnet.datasets import read_stsb
from magnet.evaluation.intervals import statistic_interval
from magnet.evaluation.sizes import spread
from magnet.masks import AttentionMode
from magnet.progress import progress

EMBED_BATCH = 32  # sentences per embed call (one progress step)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rho with average ranks for ties (x, y: (N,))."""
    return pearson(average_ranks(x), average_ranks(y))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """0-based ranks, ties sharing their mean rank."""
    ordered, order = values.double().sort()
    _, group, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # one past each tied group's last rank
    ranks = torch.empty(len(values), dtype=torch.double)
    ranks[order] = ((ends - counts + ends - 1) / 2)[group]
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()))


def stsb_spearman(engine, rows: list[tuple[str, str, float]], instruction: str | None = None,
                  mode: AttentionMode = AttentionMode.BIDIRECTIONAL, label: str = "") -> float:
    """x100 Spearman of cos(embed(s1), embed(s2)) against the scores; `mode` is the attention
    the embeddings are read with (causal: a base model's own way)."""
    return 100 * spearman(stsb_cosines(engine, rows, instruction, mode, label), gold_scores(rows))


def gold_scores(rows: list[tuple[str, str, float]]) -> torch.Tensor:
    return torch.tensor([s for _, _, s in rows])


def stsb_spearman_interval(engine, rows: list[tuple[str, str, float]], instruction: str | None = None,
                           label: str = "") -> tuple[float, tuple[float, float]]:
    """`stsb_spearman` (bidirectional) and its 95% interval over the pairs, from one set of embeddings."""
    cosines = stsb_cosines(engine, rows, instruction, label=label)
    return 100 * spearman(cosines, gold_scores(rows)), stsb_interval(cosines, rows)


def stsb_interval(cosines: torch.Tensor, rows: list[tuple[str, str, float]]) -> tuple[float, float]:
    """The 95% interval of the x100 Spearman over the pairs (magnet/evaluation/intervals.py)."""
    gold = gold_scores(rows)
    return statistic_interval(lambda draw: 100 * spearman(cosines[draw], gold[draw]), len(rows))


def stsb_cosines(engine, rows: list[tuple[str, str, float]], instruction: str | None = None,
                 mode: AttentionMode = AttentionMode.BIDIRECTIONAL, label: str = "") -> torch.Tensor:
    """(pairs,) cos(embed(s1), embed(s2)), read with `mode`."""
    texts = [a for a, _, _ in rows] + [b for _, b, _ in rows]
    chunks = []
    for first in progress(range(0, len(texts), EMBED_BATCH), label or f"STS-B {engine.name} ({mode.value})",
                          unit="batch"):
        chunks.append(engine.embed(texts[first:first + EMBED_BATCH], instruction=instruction, truncate=True,
                                   mode=mode).embeddings)
    embeddings = torch.cat(chunks)
    left, right = embeddings[: len(rows)], embeddings[len(rows):]
    return (left * right).sum(dim=-1)  # embeddings are normalized


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.model_options import add_model_arguments

    from magnet.evaluation.data_files import add_data_arguments, add_split_argument

    add_model_arguments(parser)
    add_data_arguments(parser, "--stsb", dest={"--stsb": "--data"})
    add_split_argument(parser)
    parser.add_argument("--limit", type=int, default=0, help="N pairs spread over the split (0 = all)")


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.data_files import file_split, find_data_file, flag_value, split_note
    from magnet.evaluation.overlap import seen_note
    from magnet.model_options import load_engine

    path = find_data_file(flag_value(args, "--stsb"), "--data")
    split = file_split(path, args.split, "--stsb", "--data")
    rows = spread(read_stsb(path, split), args.limit)
    if len(rows) < 2:
        raise SystemExit(f"--data {path}: {len(rows)} {args.split} pairs; Spearman needs at least 2")
    engine = load_engine(args)
    started = time.perf_counter()
    score, (low, high) = stsb_spearman_interval(engine, rows, engine.instruction)
    print(f"{engine.name}\tSTS-B Spearman {score:.2f} (95% interval over pairs {low:.2f}-{high:.2f})\t"
          f"({len(rows)} pairs of {split_note(path, split)}, {time.perf_counter() - started:.0f} s)")
    note = seen_note(engine, [(path, split)])
    if note:
        print(note)
    return 0
