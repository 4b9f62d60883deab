"""STS-B: Spearman correlation between embedding cosine and the gold score.

    magnet eval sts --data ../shared/data/stsb/sts-dev.csv [--model ...] [--adapter ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from magnet.datasets import read_stsb
from magnet.masks import AttentionMode


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rho with average ranks for ties (x, y: (N,))."""
    return pearson(average_ranks(x), average_ranks(y))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    values = values.double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(len(values), dtype=torch.double)
    for v in values.unique():  # ties share their mean rank
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()))


def stsb_spearman(engine, rows: list[tuple[str, str, float]], instruction: str | None = None,
                  mode: AttentionMode = AttentionMode.BIDIRECTIONAL) -> float:
    """x100 Spearman of cos(embed(s1), embed(s2)) against the scores; `mode` is the attention
    the embeddings are read with (causal: a base model's own way)."""
    left = engine.embed([a for a, _, _ in rows], instruction=instruction, truncate=True, mode=mode).embeddings
    right = engine.embed([b for _, b, _ in rows], instruction=instruction, truncate=True, mode=mode).embeddings
    cosine = (left * right).sum(dim=-1)  # embeddings are normalized
    return 100 * spearman(cosine, torch.tensor([s for _, _, s in rows]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="STS-B file (sts-dev.csv)")
    parser.add_argument("--limit", type=int, default=0, help="first N pairs only (0 = all)")


def run(args: argparse.Namespace) -> int:
    from magnet.model_options import load_engine

    engine = load_engine(args)
    rows = read_stsb(args.data)[: args.limit or None]
    started = time.perf_counter()
    score = stsb_spearman(engine, rows)
    print(f"{engine.name}\tSTS-B Spearman {score:.2f}\t({len(rows)} pairs, {time.perf_counter() - started:.0f} s)")
    return 0
