"""A cloze check: can the model fill a gap that only the words after it decide?

Each item is a short text with one `___` gap whose answer the text before it leaves open
("Today is ___, so tomorrow will be Saturday.") and a set of accepted answers. Two sets of
46, of the same kinds and no shared text: cloze_items.json scores the *report* split (the
README's figures), cloze_items_select.json the *select* split (choices while training); no
item is in any training set, so `--split train` scores the select items. A fill hits when
its first word, lowercased and stripped of punctuation, is one of them. Three readers of the
same items:

    infill       the model's greedy hybrid fill, seeing both sides of the gap
    left guess   the greedy causal continuation of the text before the gap alone: what a
                 left-to-right model can know (the base model's is the bar to beat)

    magnet eval cloze [--adapter DIR] [--split select]   # the adapted model's infill and left guess, and the base's
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


def cloze_scores(base, adapted, items: list[ClozeItem], max_tokens: int, use_cache: bool = True) -> dict:
    """Hit rates of the four readers, and the greedy infill's 95% interval over the items."""
    greedy = infill_hits(adapted, items, max_tokens, use_cache)
    return {
        "items": len(items),
        "adapted_infill": share(greedy),
        "adapted_infill_interval": list(mean_interval([float(h) for h in greedy])) if items else None,
        "adapted_infill_best_of_4": infill_hit_rate(adapted, items, max_tokens, use_cache, best_of=4),
        "adapted_left_guess": left_guess_hit_rate(adapted, items, max_tokens, use_cache),
        "base_left_guess": left_guess_hit_rate(base, items, max_tokens, use_cache),
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
    return 0
