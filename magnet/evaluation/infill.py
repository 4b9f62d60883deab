"""Infill perplexity on ROC Stories: the middle (third) sentence removed.

Hybrid mode (the adapted model): context = sentences 1, 2, 4, 5 seen in both
directions; the missing sentence is a span, each token predicted from the
context and its earlier tokens. Causal mode (the base model's own way): the
same tokens predicted left to right from sentences 1-2 only. Only the
sentence's own tokens are scored, the same token ids in both modes
(paper §4.3, after Donahue et al. 2020). Positions are exact here: the span
length is known when scoring.

    magnet eval infill --data ../shared/data/rocstories/cloze_test_val_spring2016.csv
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from magnet.datasets import read_roc_stories
from magnet.forward import hidden_states, logits
from magnet.masks import MODE_ROLES, AttentionMode

MISSING = 2  # index of the removed sentence


def story_tokens(tokenizer, story: list[str]) -> tuple[list[int], list[int], list[int]]:
    """(before, missing, after) token ids; words keep their leading space."""
    tok = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    before = tok(" ".join(story[:MISSING]))
    missing = tok(" " + story[MISSING])
    after = tok(" " + " ".join(story[MISSING + 1 :]))
    return before, missing, after


@torch.inference_mode()
def span_nll(model, anchor_id: int, eos_id: int, before, missing, after, hybrid: bool,
             context: AttentionMode = AttentionMode.BIDIRECTIONAL) -> tuple[float, int]:
    """Summed NLL of the missing tokens and their count, for one story. In hybrid mode the
    story ends with EOS, as training examples and the service's infill layout do, and the
    context is read as `context` says (the adapter's `Engine.infill_context`)."""
    ids = [anchor_id] + before + missing + (after + [eos_id] if hybrid else [])
    start = 1 + len(before)
    roles = [MODE_ROLES[context]] * len(ids) if hybrid else [1] * len(ids)
    if hybrid:
        roles[start : start + len(missing)] = [1] * len(missing)
    device = model.get_input_embeddings().weight.device
    as_row = lambda xs: torch.tensor([xs], device=device)  # noqa: E731
    hidden = hidden_states(model, as_row(ids), as_row(roles), as_row(list(range(len(ids)))))
    predictors = torch.arange(start - 1, start - 1 + len(missing), device=device)
    nll = F.cross_entropy(logits(model, hidden[0, predictors]), as_row(missing)[0], reduction="sum")
    return float(nll), len(missing)


def infill_perplexity(model, tokenizer, anchor_id: int, stories: list[list[str]], hybrid: bool,
                      context: AttentionMode = AttentionMode.BIDIRECTIONAL) -> float:
    total, count = 0.0, 0
    for story in stories:
        nll, n = span_nll(model, anchor_id, tokenizer.eos_token_id, *story_tokens(tokenizer, story), hybrid=hybrid,
                          context=context)
        total, count = total + nll, count + n
    return math.exp(total / max(count, 1))


def heldout_stories(path: str, n: int) -> list[list[str]]:
    """The last n stories: the ones training leaves out (TrainConfig.holdout_stories)."""
    return read_roc_stories(path)[-n:]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="ROC Stories cloze CSV")
    parser.add_argument("--stories", type=int, default=200, help="the last N stories (held out from training)")
    parser.add_argument("--causal", action="store_true", help="left-to-right perplexity (the base model's way)")


def run(args: argparse.Namespace) -> int:
    from magnet.model_options import load_engine

    engine = load_engine(args)
    started = time.perf_counter()
    ppl = infill_perplexity(engine.model, engine.tokenizer, engine.anchor_id,
                            heldout_stories(args.data, args.stories), hybrid=not args.causal)
    mode = "causal" if args.causal else "hybrid"
    print(f"{engine.name}\tROC infill PPL ({mode}) {ppl:.2f}\t({args.stories} stories, "
          f"{time.perf_counter() - started:.0f} s)")
    return 0
