"""Training examples drawn per step from a seeded RNG.

Each step draws its batch from `random.Random(seed, step)`, so a run resumed
at step s sees exactly the batches an uninterrupted run would have seen.

Data parallel: every process draws the step's whole global batch (N x the
per-process batch) from the same RNG and keeps its own contiguous share, so N
processes with batch B see exactly the examples of one process with batch N x B.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from magnet.datasets import evaluation_sentences, normalized, read_pairs, read_paragraphs, read_stsb, sentences_of
from magnet.splits import TRAIN
from magnet.layout import embedding_ids
from magnet.training.augment import get_augmenter
from magnet.training.config import TrainConfig
from magnet.training.views import View, ViewSpec, make_view


def step_rng(seed: int, step: int, stream: int = 0) -> random.Random:
    """The RNG of one (step, stream): the same in every data-parallel process."""
    return random.Random(f"{seed}:{step}:{stream}")


def share(items: list, rank: int, world: int) -> list:
    """Process `rank`'s contiguous share of a global batch (len(items) // world items)."""
    size = len(items) // world
    return items[rank * size : (rank + 1) * size]


@dataclass
class Corpus:
    chunks: list[list[int]]  # token chunks for MNTP/MSG views (<= max_length - 2 tokens)
    sscl_pairs: list[tuple[str, str | None]]  # (x, x+) ; None = make x+ with the augmenter
    graded: list[tuple[str, str, float]]  # (a, b, score) for the graded loss
    spec: ViewSpec
    config: TrainConfig
    instruction_ids: list[int]
    tokenizer: object

    @classmethod
    def build(cls, config: TrainConfig, tokenizer, spec: ViewSpec) -> "Corpus":
        if not config.data:
            raise ValueError("no training text: pass --data FILE (plain text, one paragraph per line)")
        held_out = excluded_sentences(config)
        # only the train split of each file (magnet.splits): select chooses, report reports
        paragraphs = [p for path in config.data for p in read_paragraphs(path, TRAIN)]
        # a paragraph (a story, a wiki paragraph) holding any held-out sentence is dropped whole
        paragraphs = [p for p in paragraphs if not held_out & {normalized(t) for t in [p, *sentences_of(p)]}]
        chunks = chunk_tokens(paragraphs, tokenizer, config.max_length - 2)
        pairs: list[tuple[str, str | None]] = [pair for path in config.pairs for pair in read_pairs(path, TRAIN)
                                               if not held_out & {normalized(pair[0]), normalized(pair[1])}]
        pairs += [(p, None) for p in paragraphs if len(p.split()) > config.min_sscl_words]
        graded = [row for path in config.graded_pairs for row in read_stsb(path, TRAIN)
                  if not held_out & {normalized(row[0]), normalized(row[1])}]
        check_graded(config, graded)
        instruction_ids = tokenizer(config.instruction, add_special_tokens=False)["input_ids"]
        if len(instruction_ids) + 10 > config.sscl_max_length:
            raise ValueError(f"sscl_max_length {config.sscl_max_length} leaves no room for text after the "
                             f"{len(instruction_ids)}-token instruction: raise it")
        return cls(chunks, pairs, graded, spec, config, instruction_ids, tokenizer)

    def views(self, step: int, micro: int, rank: int = 0, world: int = 1) -> list[View]:
        """This process's `batch_size` views of the step's global batch of `world x batch_size`."""
        rng = step_rng(self.config.seed, step, 2 * micro)
        drawn = [make_view(rng.choice(self.chunks), self.spec, rng) for _ in range(self.config.batch_size * world)]
        return share(drawn, rank, world)

    def sscl_batch(self, step: int, micro: int, rank: int = 0,
                   world: int = 1) -> tuple[list[list[int]], list[list[int]]]:
        """Token lists for x and x+ (instruction, text, EOS), distinct texts per global batch;
        this process's share of it (every process gets the same number of pairs)."""
        per_process = min(self.config.sscl_batch, len(self.sscl_pairs) // world)
        if per_process < 1:
            raise ValueError(f"{len(self.sscl_pairs)} SSCL texts cannot be shared by {world} processes: "
                             "give more --data lines or --pairs")
        rng = step_rng(self.config.seed, step, 2 * micro + 1)
        augment = get_augmenter(self.config.augmenter)
        picked = rng.sample(self.sscl_pairs, per_process * world)
        texts = []
        for text, positive in picked:  # every process augments them all: the RNG stays in step
            text = self.cut(text)  # cut first: x+ must be a view of the same window as x
            texts.append((text, self.cut(positive) if positive is not None else augment(text, rng)))
        mine = share(texts, rank, world)
        return [self.embed_ids(x) for x, _ in mine], [self.embed_ids(x_plus) for _, x_plus in mine]

    def graded_batch(self, step: int, micro: int, rank: int = 0,
                     world: int = 1) -> tuple[list[list[int]], list[list[int]], list[float]]:
        """Token lists of both sides of this process's share of the step's graded pairs
        (instruction, text, EOS, as SSCL's views), and their scores."""
        rng = step_rng(self.config.seed, step, -1 - micro)  # a stream of its own: SSCL's draws stay as they were
        picked = share(rng.sample(self.graded, self.config.graded_batch * world), rank, world)
        return ([self.embed_ids(self.cut(a)) for a, _, _ in picked],
                [self.embed_ids(self.cut(b)) for _, b, _ in picked], [score for _, _, score in picked])

    def cut(self, text: str) -> str:
        """The text as far as an SSCL view holds it ([anchor] instruction text [EOS])."""
        room = self.config.sscl_max_length - len(self.instruction_ids) - 2
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= room else self.tokenizer.decode(ids[:room])

    def embed_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return embedding_ids(self.spec.anchor_id, self.spec.eos_id, self.instruction_ids, ids,
                             self.config.sscl_max_length)


def check_graded(config: TrainConfig, rows: list) -> None:
    """The graded loss needs its pairs and a weight, and a batch's worth of pairs."""
    if config.graded_weight > 0 and not config.graded_pairs:
        raise ValueError("graded_weight > 0 needs --graded-pairs FILE (STS-B rows: sts-train.csv)")
    if config.graded_pairs and config.graded_weight <= 0:
        raise ValueError("--graded-pairs is read only with --graded-weight > 0: give the loss a weight")
    if config.graded_pairs and len(rows) < config.graded_batch:
        raise ValueError(f"--graded-pairs: {len(rows)} scored pairs in the train split of "
                         f"{', '.join(config.graded_pairs)}; a batch needs {config.graded_batch} "
                         "(STS-B rows: genre, file, year, id, score, sentence 1, sentence 2)")


def excluded_sentences(config: TrainConfig) -> set[str]:
    """Normalized sentences never trained on, even where another file repeats them: every
    sentence of the `exclude` files, and of the select split the quality check scores."""
    from magnet.splits import SELECT

    sentences = set().union(*(evaluation_sentences(p) for p in config.exclude)) if config.exclude else set()
    return sentences | (evaluation_sentences(config.select_stsb, SELECT) if config.select_stsb else set())


def chunk_tokens(paragraphs: list[str], tokenizer, size: int) -> list[list[int]]:
    """Cut each paragraph's tokens into pieces of at most `size` (short tails dropped)."""
    chunks = []
    for ids in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), size):
            piece = ids[start : start + size]
            if len(piece) >= min(size, 16):
                chunks.append(piece)
    return chunks
