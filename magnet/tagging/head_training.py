"""Train one tagging head (dropout + linear) on cached frozen word vectors.

Paper, Appendix A: 4000 steps, batch 8 (sentences), lr 5e-4, dropout 0.1. The
head is scored on the choosing (select) sentences every `eval_every` steps and the
best checkpoint is kept (token accuracy for POS, entity F1 for IOB2 tasks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from magnet.tagging.conll import ENTITY_TASKS
from magnet.tagging.heads import TagHead
from magnet.tagging.metrics import entity_scores, token_accuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadTrainConfig:
    steps: int = 4000
    batch_size: int = 8  # sentences per step
    lr: float = 5e-4
    dropout: float = 0.1
    weight_decay: float = 0.01  # AdamW's default
    eval_every: int = 200
    seed: int = 0


@dataclass
class TrainedHead:
    head: TagHead
    score: float  # select score of the kept checkpoint
    step: int  # the step it was taken at
    metric: str  # "accuracy" or "entity_f1"


def label_ids(tags: list[list[str]], labels: list[str]) -> list[torch.Tensor]:
    index = {label: i for i, label in enumerate(labels)}
    return [torch.tensor([index[t] for t in sentence]) for sentence in tags]


def score(task: str, gold: list[list[str]], pred: list[list[str]]) -> tuple[float, str]:
    if task in ENTITY_TASKS:
        return entity_scores(gold, pred).f1, "entity_f1"
    return token_accuracy(gold, pred), "accuracy"


def sample_batch(features, targets, size: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` random sentences -> (W, H) word vectors and (W,) label ids."""
    picks = torch.randint(len(features), (size,), generator=generator).tolist()
    return torch.cat([features[i] for i in picks]), torch.cat([targets[i] for i in picks])


def evaluate(head: TagHead, task: str, features, gold: list[list[str]]) -> tuple[float, str]:
    head.eval()
    pred = [head.predict(f) for f in features]
    head.train()
    return score(task, gold, pred)


def train_head(task: str, train_x: list[torch.Tensor], train_tags: list[list[str]],
               valid_x: list[torch.Tensor], valid_tags: list[list[str]],
               config: HeadTrainConfig = HeadTrainConfig()) -> TrainedHead:
    """Fit a head on (train_x, train_tags); keep the checkpoint best on the select sentences (valid_x, valid_tags)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    labels = sorted({t for sentence in train_tags for t in sentence})
    targets = label_ids(train_tags, labels)
    head = TagHead(train_x[0].shape[1], labels, config.dropout).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    best = TrainedHead(head, float("-inf"), 0, "")
    best_state = None
    for step in range(1, config.steps + 1):
        x, y = sample_batch(train_x, targets, config.batch_size, generator)  # (W, H), (W,)
        loss = loss_fn(head(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            value, metric = evaluate(head, task, valid_x, valid_tags)
            log.info("%s step %d: loss %.4f, select %s %.4f", task, step, loss.item(), metric, value)
            if value > best.score:
                best = TrainedHead(head, value, step, metric)
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return TrainedHead(head.eval(), best.score, best.step, best.metric)
