"""A cloze check: can the model fill a gap that only the words after it decide?

Each item is a short text with one `___` gap whose answer the text before it leaves open
("Today is ___, so tomorrow will be Saturday.") and a set of accepted answers. Two sets of
46, of the same kinds and no shared text: cloze_items.json scores the *report* split (the
README's figures), cloze_items_select.json the *select* split (choices while training); no
item is in any training set, so `--split train` scores the select items. A fill hits when
its first word, lowercased and stripped of punctuation, is one of them. The readers of the
same items:

    infill       the model's greedy hybrid fill, seeing both sides of the gap
    left guess   the greedy causal continuation of the text before the gap alone: what a
                 left-to-right model can know (the base model's is the bar to beat)
    known        for the items of a closed kind (CHOICES: a day, a month, a number, a letter),
                 the word of the kind under which the whole text, read left to right, is
                 likeliest: what the model knows with both sides in view and the answer
                 among a few words. A fill writes its word unaided, so this is about the
                 most a fill of the same weights can be expected to get on those items.

    magnet eval cloze [--adapter DIR] [--split select]   # every reader, for the adapted model and the base
"""
from __future__ import annotations

import argparse
import json
import string
from dataclasses import dataclass
from pathlib import Path

from magnet.evaluation.generations import continuations, infills
from magnet.evaluation.intervals import mean_interval
from magnet.evaluation.sizes import FULL
from magnet.splits import REPORT, SELECT

ITEMS_FILES = {REPORT: Path(__file__).with_name("cloze_items.json"),
               SELECT: Path(__file__).with_name("cloze_items_select.json")}


def items_file(split: str) -> Path:
    """The items a split scores: report and select have their own; train (nothing here is
    trained on) scores the select ones."""
    return ITEMS_FILES[REPORT if split == REPORT else SELECT]


GAP = "___"

# The closed kinds: an item of one of these kinds has its answer among these words (the
# `known` reader puts each in the gap). Numbers as words: "A triangle has three sides."
NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
                "eighty ninety hundred").split()
CHOICES = {
    "days": "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "months": "January February March April May June July August September October November December".split(),
    "counts": NUMBER_WORDS,
    "arithmetic": NUMBER_WORDS,
    "alphabet": [chr(c) for c in range(ord("A"), ord("Z") + 1)],
}


@dataclass(frozen=True)
class ClozeItem:
    text: str  # with one GAP
    answers: tuple[str, ...]  # accepted first words, normalized
    kind: str = ""

    @property
    def prefix(self) -> str:
        return self.text.split(GAP)[0]

    @property
    def suffix(self) -> str:
        return self.text.split(GAP)[1]


def load_items(path: Path = ITEMS_FILES[REPORT]) -> list[ClozeItem]:
    items = []
    for raw in json.loads(Path(path).read_text(encoding="utf-8")):
        if raw["text"].count(GAP) != 1 or raw["text"].startswith(GAP):
            raise ValueError(f"{path}: {raw['text']!r} needs one {GAP} gap with text before it")
        items.append(ClozeItem(raw["text"], tuple(first_word(a) for a in raw["answers"]), raw.get("kind", "")))
    return items


def first_word(text: str) -> str:
    """'  Friday, so' -> 'friday'; '"B."' -> 'b'; '' -> ''."""
    words = text.split()
    return words[0].strip(string.punctuation + "“”‘’").lower() if words else ""


def is_hit(fill: str, item: ClozeItem) -> bool:
    return first_word(fill) in item.answers


def hit_rate(fills: list[str], items: list[ClozeItem]) -> float:
    return share(hits(fills, items))


def share(hits: list[bool]) -> float:
    """The share of hits (0 for no items)."""
    return sum(hits) / max(len(hits), 1)


def hits(fills: list[str], items: list[ClozeItem]) -> list[bool]:
    return [is_hit(f, item) for f, item in zip(fills, items)]


def infill_hits(engine, items: list[ClozeItem], max_tokens: int, use_cache: bool = True,
                best_of: int = 1) -> list[bool]:
    gaps = [(i.prefix, i.suffix) for i in items]
    return hits(infills(engine, gaps, max_tokens, use_cache, best_of), items)


def infill_hit_rate(engine, items: list[ClozeItem], max_tokens: int, use_cache: bool = True,
                    best_of: int = 1) -> float:
    return share(infill_hits(engine, items, max_tokens, use_cache, best_of))


def left_guess_hit_rate(engine, items: list[ClozeItem], max_tokens: int, use_cache: bool = True) -> float:
    """The continuation of the prefix (its trailing space dropped: the model writes ' Friday')."""
    return hit_rate(continuations(engine, [i.prefix.rstrip() for i in items], max_tokens, use_cache), items)


def closed_items(items: list[ClozeItem]) -> list[ClozeItem]:
    """The items whose kind has a closed set of answers (CHOICES)."""
    return [item for item in items if item.kind in CHOICES]


def known_word(engine, item: ClozeItem) -> str:
    """The word of the item's kind (CHOICES) under which the whole text, read left to right
    by `engine`'s model, is likeliest."""
    choices = CHOICES[item.kind]
    scores = engine.causal_logprobs([item.text.replace(GAP, word) for word in choices])
    return choices[max(range(len(choices)), key=scores.__getitem__)]


def known_hits(engine, items: list[ClozeItem]) -> list[bool]:
    """Per item of a closed kind: is the model's likeliest word of the kind an answer?"""
    return [is_hit(known_word(engine, item), item) for item in items]


def cloze_scores(base, adapted, items: list[ClozeItem], max_tokens: int, use_cache: bool = True) -> dict:
    """Hit rates of the readers, and the greedy infill's 95% interval over the items; on the
    closed-kind items alone, the greedy infill's hit rate beside what each model knows."""
    greedy = infill_hits(adapted, items, max_tokens, use_cache)
    closed = closed_items(items)
    return {
        "items": len(items),
        "adapted_infill": share(greedy),
        "adapted_infill_interval": list(mean_interval([float(h) for h in greedy])) if items else None,
        "adapted_infill_best_of_4": infill_hit_rate(adapted, items, max_tokens, use_cache, best_of=4),
        "adapted_left_guess": left_guess_hit_rate(adapted, items, max_tokens, use_cache),
        "base_left_guess": left_guess_hit_rate(base, items, max_tokens, use_cache),
        "closed_items": len(closed),
        "adapted_infill_closed": share([hit for hit, item in zip(greedy, items) if item.kind in CHOICES]),
        "adapted_known": share(known_hits(adapted, closed)),
        "base_known": share(known_hits(base, closed)),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from magnet.evaluation.data_files import add_split_argument
    from magnet.model_options import add_model_arguments

    add_model_arguments(parser)
    add_split_argument(parser)
    parser.add_argument("--items", type=Path, default=None,
                        help="cloze items JSON (default: the shipped set of --split)")
    parser.add_argument("--max-tokens", type=int, default=FULL.fill_tokens, help="tokens per fill or guess")
    parser.add_argument("--no-cache", action="store_true", help="regenerate instead of reading cached outputs")


def run(args: argparse.Namespace) -> int:
    from magnet.model_options import load_base_engine, load_engine

    path = args.items or items_file(args.split)
    if not path.is_file():
        raise SystemExit(f"--items {path}: no such file")
    items = load_items(path)
    adapted = load_engine(args)
    base = load_base_engine(args, adapted)
    scores = cloze_scores(base, adapted, items, args.max_tokens, not args.no_cache)
    print(f"cloze hit rate on {len(items)} items ({path.name}): {adapted.name} infill {scores['adapted_infill']:.1%}, "
          f"its left guess {scores['adapted_left_guess']:.1%}; {base.name} left guess {scores['base_left_guess']:.1%}")
    print(f"on the {scores['closed_items']} items of a closed kind ({', '.join(CHOICES)}): {adapted.name} infill "
          f"{scores['adapted_infill_closed']:.1%}; the likeliest word of the kind, whole text read left to right: "
          f"{adapted.name} {scores['adapted_known']:.1%}, {base.name} {scores['base_known']:.1%}")
    return 0
