"""The fixed train / select / report splits of every data file the project reads.

    train   the only text training reads (MNTP/MSG text, SSCL pairs, probe fits)
    select  the only data any choice reads: checkpoint, mix weight, learning rate, recipe,
            probe layer; the training loop's quality check runs on it
    report  the only data the README and `magnet eval paper` print as results

A file is split by *document* (a WikiText article, a ROC story, an STS-B pair, a CoNLL
document), never by line, so no article or story is half in training and half in the table.
A document's split is a hash of the file's rule name and the document's key, so it does not
depend on file order, on which other documents are read, or on the machine.

Files are known by name (the rule table below). A file with no rule is the user's own text:
all of it is `train`, and nothing reports on it. The split of every training file, with a
hash of its content, is written into the adapter's manifest (`data_record`), so an evaluation
can tell whether its rows were seen in training.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

TRAIN, SELECT, REPORT = "train", "select", "report"
SPLITS = (TRAIN, SELECT, REPORT)


@dataclass(frozen=True)
class SplitRule:
    unit: str  # what one document is (for the docs and the manifest)
    shares: tuple[tuple[str, float], ...]  # (split, share of documents), shares summing to 1

    def split_of(self, name: str, key: str) -> str:
        """The split of document `key` of the file whose rule is `name`."""
        digest = hashlib.sha256(f"{name}/{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        edge = 0.0
        for split, share in self.shares:
            edge += share
            if point < edge:
                return split
        return self.shares[-1][0]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.shares)


# file (parent folder / name) -> how its documents are split
RULES: dict[str, SplitRule] = {
    # 60 articles: ~42 to train on, ~9 to choose with, ~9 to report
    "wikitext2/wiki.valid.raw": SplitRule("article", ((TRAIN, 0.70), (SELECT, 0.15), (REPORT, 0.15))),
    # 1,871 stories: ~1,120 / ~375 / ~375
    "rocstories/cloze_test_val_spring2016.csv": SplitRule("story", ((TRAIN, 0.60), (SELECT, 0.20), (REPORT, 0.20))),
    # STS-B train: positives to train on, a slice to choose with; dev reports (and nothing else)
    "stsb/sts-train.csv": SplitRule("pair", ((TRAIN, 0.85), (SELECT, 0.15))),
    "stsb/sts-dev.csv": SplitRule("pair", ((REPORT, 1.0),)),
    # CoNLL-2003: probes fit on train documents, their layer chosen on a slice, valid reports
    "conll2003/train.txt": SplitRule("document", ((TRAIN, 0.85), (SELECT, 0.15))),
    "conll2003/valid.txt": SplitRule("document", ((REPORT, 1.0),)),
    # MRPC: paraphrase pairs for SSCL only; nothing is reported on it
    "mrpc/msr_paraphrase_train.txt": SplitRule("pair", ((TRAIN, 1.0),)),
    "mrpc/msr_paraphrase_test.txt": SplitRule("pair", ((TRAIN, 1.0),)),
}
USER_TEXT = SplitRule("file", ((TRAIN, 1.0),))  # a file with no rule: the user's own training text


def rule_name(path: str | Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def rule_for(path: str | Path) -> SplitRule:
    return RULES.get(rule_name(path), USER_TEXT)


def keep(path: str | Path, key: str, split: str | None) -> bool:
    """Does document `key` of `path` belong to `split` (None: the whole file)?"""
    if split is None:
        return True
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return rule_for(path).split_of(rule_name(path), key) == split


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_record(path: str | Path, split: str | None) -> dict:
    """What the manifest keeps of one training file: enough to recognise it later by content."""
    rule = rule_for(path)
    return {"file": Path(path).name, "rule": rule_name(path) if rule is not USER_TEXT else None,
            "sha256": file_sha256(path), "split": split, "unit": rule.unit}


def seen_in_training(records: list[dict], path: str | Path, split: str | None) -> bool:
    """Did training read any document of `path`'s `split` (None: the whole file)?

    Files are matched by content hash, whatever their name. A training record with split None,
    or of a file with no rule (`rule` None: a copy of a data file under another name or folder is
    the user's own text, read whole), read the whole file; otherwise the splits must differ."""
    digest = file_sha256(path)
    for record in records:
        if record.get("sha256") != digest:
            continue
        trained = record.get("split")
        if record.get("rule") is None or trained is None or split is None or trained == split:
            return True
    return False
