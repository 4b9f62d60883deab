"""Infill perplexity on ROC Stories: the middle (third) sentence removed, and its controls.

The missing sentence is a span: each of its tokens is predicted from what the span may read
and its own earlier tokens. Only the sentence's own tokens are scored, the same token ids in
every reading (paper §4.3, after Donahue et al. 2020); positions are exact (the span length
is known when scoring). The readings of one story, side by side on the same stories:

    causal        sentences 1-2 left to right: a decoder's own way
    no_suffix     sentences 1-2 read as the adapter's fill reads its context
                  (`Engine.infill_context`: bidirectional, or left to right), then the end of
                  the text right after the gap: what /v1/infill does with an empty suffix
    hybrid        sentences 1-2 + the true sentences 4-5 (then EOS): what /v1/infill does
    wrong_suffix  sentences 1-2 + *another* story's sentences 4-5: a suffix that is read
                  must make this worse than `hybrid`

so hybrid vs causal is what the fill gains over reading left to right, no_suffix vs causal
what reading the context the fill's way costs, and hybrid vs no_suffix / wrong_suffix what
the suffix is worth. Stories come from one split of the file (magnet/splits.py; --split,
report by default), spread over it.

A ratio of two readings is a mean over a few hundred stories, and which stories moves it: the
quality check of the run that trained the default adapter read its hybrid / left to right at
0.90 on the first 150 select stories; all 381 select stories read 0.94. So each ratio comes
with a 95% interval over stories (magnet/evaluation/intervals.py: the stories resampled,
both readings of a story kept together).

    magnet eval infill [--data ../shared/data/rocstories/cloze_test_val_spring2016.csv] [--split select]
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from magnet.datasets import read_roc_stories
from magnet.evaluation.intervals import LEVEL, perplexity_ratio_interval
from magnet.evaluation.sizes import FULL, spread
from magnet.forward import hidden_states, logits
from magnet.masks import MODE_ROLES, AttentionMode, gap_predictor_role
from magnet.progress import progress

MISSING = 2  # index of the removed sentence

# reading -> what the span reads (the controls above, in table order)
READINGS = {
    "causal": "sentences 1-2, left to right",
    "no_suffix": "sentences 1-2 read as the fill reads them, the text ending at the gap",
    "hybrid": "sentences 1-2 + the true sentences 4-5 (/v1/infill)",
    "wrong_suffix": "sentences 1-2 + another story's sentences 4-5",
}


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
        gap_role = gap_predictor_role(context)
        if gap_role is not None:  # causal_gap(_hidden): the fill's first predictor reads it all
            roles[start - 1] = gap_role
    device = model.get_input_embeddings().weight.device
    as_row = lambda xs: torch.tensor([xs], device=device)  # noqa: E731
    hidden = hidden_states(model, as_row(ids), as_row(roles), as_row(list(range(len(ids)))))
    predictors = torch.arange(start - 1, start - 1 + len(missing), device=device)
    nll = F.cross_entropy(logits(model, hidden[0, predictors]), as_row(missing)[0], reduction="sum")
    return float(nll), len(missing)


def perplexity(nlls: Sequence[float], tokens: int) -> float:
    """exp of the mean token NLL: summed NLLs (per story, per window) over the tokens they score."""
    return math.exp(sum(nlls) / max(tokens, 1))


def infill_perplexity(model, tokenizer, anchor_id: int, stories: list[list[str]], hybrid: bool,
                      context: AttentionMode = AttentionMode.BIDIRECTIONAL) -> float:
    scored = [span_nll(model, anchor_id, tokenizer.eos_token_id, *story_tokens(tokenizer, story), hybrid=hybrid,
                       context=context) for story in stories]
    return perplexity([nll for nll, _ in scored], sum(n for _, n in scored))


def reading_perplexity(engine, stories: list[list[str]], reading: str, label: str = "") -> float:
    """Middle-sentence PPL of `stories` read as READINGS[reading] says, by `engine`'s model
    (its fill's context reading). wrong_suffix: story i gets story i+1's sentences 4-5."""
    nlls, counts = reading_nlls(engine, stories, reading, label)
    return perplexity(nlls, sum(counts))


def reading_nlls(engine, stories: list[list[str]], reading: str, label: str = "") -> tuple[list[float], list[int]]:
    """Per story: the summed NLL of its middle sentence read as `reading` says, and its token
    count (the same in every reading)."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}: one of {', '.join(READINGS)}")
    if reading == "wrong_suffix" and len(stories) < 2:
        raise ValueError("the wrong-suffix control needs at least two stories")
    tokens = [story_tokens(engine.tokenizer, story) for story in stories]
    nlls, counts = [], []
    for i in progress(range(len(stories)), label or f"ROC {engine.name} {reading}", unit="story"):
        before, missing, after = tokens[i]
        suffix = {"causal": after, "no_suffix": [], "hybrid": after,
                  "wrong_suffix": tokens[(i + 1) % len(tokens)][2]}[reading]
        nll, n = span_nll(engine.model, engine.anchor_id, engine.tokenizer.eos_token_id, before, missing, suffix,
                          hybrid=reading != "causal", context=engine.infill_context)
        nlls.append(nll)
        counts.append(n)
    return nlls, counts


def roc_stories(path, split: str | None, n: int) -> list[list[str]]:
    """n stories spread over the split's stories of the file (all of them when n is 0)."""
    return spread(read_roc_stories(path, split), n)


# (reading over, reading under) -> the key of its interval in infill_controls' result
INTERVALS = {("hybrid", "causal"): "hybrid_causal_interval", ("wrong_suffix", "hybrid"): "wrong_hybrid_interval"}


def infill_controls(adapted, base, stories: list[list[str]]) -> dict:
    """{"stories", "adapted_<reading>" for every reading, "base_causal", and the 95% intervals
    over stories of the ratios INTERVALS names}: one table, same stories. `base` None (or the
    adapted engine itself: no adapter) scores only the adapted readings."""
    result: dict = {"stories": len(stories)}
    nlls = {}
    for reading in READINGS:
        nlls[reading], counts = reading_nlls(adapted, stories, reading, f"ROC adapted {reading}")
        result[f"adapted_{reading}"] = perplexity(nlls[reading], sum(counts))
    for (over, under), key in INTERVALS.items():
        result[key] = list(perplexity_ratio_interval(nlls[over], nlls[under], counts))
    if base is not None and base is not adapted:
        result["base_causal"] = reading_perplexity(base, stories, "causal", "ROC base causal")
    return result


def format_controls(result: dict, adapted_name: str, base_name: str | None) -> list[str]:
    """The readings as lines: reading, what it reads, PPL, x the adapter's own left-to-right."""
    causal = result["adapted_causal"]
    lines = [f"ROC middle-sentence PPL on {result['stories']} stories ({adapted_name}):"]
    for reading, text in READINGS.items():
        ppl = result[f"adapted_{reading}"]
        lines.append(f"  {reading:<13} {ppl:8.2f}  x{ppl / causal:.2f} of its left to right   {text}")
    if "base_causal" in result:
        lines.append(f"  {'base causal':<13} {result['base_causal']:8.2f}  ({base_name}, sentences 1-2 left to right)")
    for (over, under), key in INTERVALS.items():
        if key in result:
            low, high = result[key]
            ratio = result[f"adapted_{over}"] / result[f"adapted_{under}"]
            lines.append(f"  {over} / {under}: x{ratio:.3f}, {LEVEL:.0%} interval over stories "
                         f"x{low:.3f} - x{high:.3f}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.evaluation.data_files import add_data_arguments, add_split_argument
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    add_data_arguments(parser, "--roc", dest={"--roc": "--data"})
    add_split_argument(parser)
    parser.add_argument("--stories", type=int, default=FULL.roc_stories,
                        help="stories spread over the split (0 = all of them)")
    parser.add_argument("--causal", action="store_true", help="only the left-to-right reading (a base model's way)")


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.data_files import file_split, find_data_file, flag_value, split_note
    from magnet.evaluation.overlap import seen_note
    from magnet.model_options import load_base_engine, load_engine

    path = find_data_file(flag_value(args, "--roc"), "--data")
    split = file_split(path, args.split, "--roc", "--data")
    stories = roc_stories(path, split, args.stories)
    if len(stories) < (1 if args.causal else 2):
        raise SystemExit(f"--data {path}: {len(stories)} stories ({split_note(path, split)}); "
                         "the controls need at least 2 (another story's ending is one)")
    engine = load_engine(args)
    started = time.perf_counter()
    where = f"{len(stories)} stories of {split_note(path, split)}"
    if args.causal:
        ppl = reading_perplexity(engine, stories, "causal")
        print(f"{engine.name}\tROC infill PPL (causal) {ppl:.2f}\t({where}, {time.perf_counter() - started:.0f} s)")
    else:
        base = load_base_engine(args, engine)
        result = infill_controls(engine, base, stories)
        print("\n".join(format_controls(result, engine.name, base.name)))
        print(f"({where}, {time.perf_counter() - started:.0f} s)")
    note = seen_note(engine, [(path, split)])
    if note:
        print(note)
    return 0
