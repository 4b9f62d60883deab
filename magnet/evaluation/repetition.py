"""Repetition in open-ended greedy generation (paper §4.4, Eq. 6).

    Rep-Sen = 1 - |unique sentences| / |sentences|
    Rep-4   = 1 - |unique 4-grams| / |4-grams|      (4-grams of whitespace-split words)

Each is computed per generation (the continuation only, not its prefix) and averaged over
the generations; a generation with no 4-gram (or no sentence) counts as 0, nothing repeated.
Sentences are split after . ! or ? followed by whitespace. Prefixes, as in the paper: the
first 5 words of WikiText paragraphs and the first sentence of ROC stories, both of one split
of their files (--split, report by default; magnet/splits.py).

    magnet eval repetition [--wikitext FILE] [--roc FILE] [--split select] [--prefixes 32] [--max-tokens 80]

With an adapter, the base is scored on the same prefixes too, and Rep-4 adapted / base is
printed with its 95% interval over the prefixes (magnet/evaluation/intervals.py).
"""
from __future__ import annotations

import argparse
import re
import time

from magnet.datasets import read_paragraphs
from magnet.evaluation.generations import continuations
from magnet.evaluation.infill import roc_stories
from magnet.evaluation.intervals import LEVEL, ratio_of_means_interval
from magnet.evaluation.sizes import FULL, spread

PREFIX_WORDS = 5  # WikiText prefixes (paper)
NGRAM = 4
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    return [s for s in (part.strip() for part in SENTENCE_BREAK.split(text.strip())) if s]


def rep_sen(text: str) -> float:
    sentences = split_sentences(text)
    return 1.0 - len(set(sentences)) / len(sentences) if sentences else 0.0


def rep_n(text: str, n: int = NGRAM) -> float:
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


PUNCTUATION = re.compile(r"(\s?)[.,;:!?](?=\s|$)")  # a mark that ends a word, with the space before it


def spaced_punctuation(text: str) -> float:
    """Share of punctuation marks written after a space (" ." as WikiText's tokenization has it)."""
    marks = PUNCTUATION.findall(text)
    return sum(1 for space in marks if space) / len(marks) if marks else 0.0


def repetition_scores(texts: list[str]) -> dict:
    """Mean per-generation Rep-Sen and Rep-4, each generation's Rep-4 (for an interval over
    prefixes: magnet/evaluation/intervals.py), and the share of spaced punctuation over all texts."""
    n = max(len(texts), 1)
    rep_4 = [rep_n(t) for t in texts]
    return {"rep_sen": sum(map(rep_sen, texts)) / n, "rep_4": sum(rep_4) / n, "rep_4_each": rep_4,
            "spaced_punctuation": spaced_punctuation(" ".join(texts))}


def wikitext_prefixes(path, split: str | None, n: int) -> list[str]:
    """The first PREFIX_WORDS words of n spread paragraphs (of the split's articles) of more than
    twice that many words (so the paragraph goes on after the prefix: no captions or lists)."""
    paragraphs = [p.split() for p in read_paragraphs(path, split)]
    return [" ".join(words[:PREFIX_WORDS]) for words in spread([w for w in paragraphs if len(w) > 2 * PREFIX_WORDS], n)]


def roc_prefixes(path, split: str | None, n: int) -> list[str]:
    """The first sentence of n stories spread over the split's stories."""
    return [story[0] for story in roc_stories(path, split, n)]


def generation_repetition(engine, prefixes: list[str], max_tokens: int, use_cache: bool = True) -> dict[str, float]:
    return repetition_scores(continuations(engine, prefixes, max_tokens, use_cache))


def compared_repetition(base, adapted, prefixes: list[str], max_tokens: int, use_cache: bool = True) -> dict:
    """{"base", "adapted": their scores, "rep_4_ratio_interval": the 95% interval of Rep-4
    adapted / base over the prefixes (both texts of a prefix drawn together)}."""
    scores = {who: generation_repetition(engine, prefixes, max_tokens, use_cache)
              for who, engine in (("base", base), ("adapted", adapted))}
    scores["rep_4_ratio_interval"] = list(ratio_of_means_interval(scores["adapted"]["rep_4_each"],
                                                                  scores["base"]["rep_4_each"]))
    return scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.evaluation.data_files import add_data_arguments, add_split_argument
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    add_data_arguments(parser, "--wikitext", "--roc")
    add_split_argument(parser)
    parser.add_argument("--prefixes", type=int, default=FULL.wikitext_prefixes, help="prefixes per data set")
    parser.add_argument("--max-tokens", type=int, default=FULL.continuation_tokens, help="tokens per generation")
    parser.add_argument("--no-cache", action="store_true", help="regenerate instead of reading cached generations")


def run(args: argparse.Namespace) -> int:
    from magnet.evaluation.data_files import data_files, file_split, split_note
    from magnet.evaluation.overlap import seen_note
    from magnet.model_options import load_base_engine, load_engine

    paths = data_files(args, "--wikitext", "--roc")
    splits = {flag: file_split(path, args.split, flag) for flag, path in paths.items()}
    prefix_sets = (("WikiText", "--wikitext", wikitext_prefixes(paths["--wikitext"], splits["--wikitext"], args.prefixes)),
                   ("ROC", "--roc", roc_prefixes(paths["--roc"], splits["--roc"], args.prefixes)))
    engine = load_engine(args)
    base = load_base_engine(args, engine)  # the engine itself when it has no adapter
    for name, flag, prefixes in prefix_sets:
        started = time.perf_counter()
        if base is engine:
            scores = {"adapted": generation_repetition(engine, prefixes, args.max_tokens, not args.no_cache)}
        else:
            scores = compared_repetition(base, engine, prefixes, args.max_tokens, not args.no_cache)
        where = (f"{len(prefixes)} generations of <= {args.max_tokens} tokens from "
                 f"{split_note(paths[flag], splits[flag])}")
        for who, model in (("base", base), ("adapted", engine)):
            if who in scores:
                print(f"{model.name}\t{name} prefixes: Rep-Sen {scores[who]['rep_sen']:.4f} "
                      f"Rep-4 {scores[who]['rep_4']:.4f}\t({where})")
        if "rep_4_ratio_interval" in scores:
            low, high = scores["rep_4_ratio_interval"]
            ratio = scores["adapted"]["rep_4"] / scores["base"]["rep_4"] if scores["base"]["rep_4"] else float("nan")
            print(f"  Rep-4 adapted / base x{ratio:.3f}, {LEVEL:.0%} interval over prefixes x{low:.3f} - x{high:.3f} "
                  f"({time.perf_counter() - started:.0f} s)")
        note = seen_note(engine, [(paths[flag], splits[flag])])
        if note:
            print(note)
    return 0
