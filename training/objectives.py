"""The losses. Each takes the model and a collated batch; the mask comes from the
roles through the same `hidden_states` call the server uses."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from magnet.forward import hidden_states, logits
from magnet.masks import PAD
from magnet.training.views import View


@dataclass
class ViewBatch:
    input_ids: torch.Tensor  # (B, T)
    roles: torch.Tensor  # (B, T), PAD on padding
    positions: torch.Tensor  # (B, T)
    rows: torch.Tensor  # (N,) row of each labelled predictor
    cols: torch.Tensor  # (N,) slot of each labelled predictor
    labels: torch.Tensor  # (N,)
    objectives: torch.Tensor  # (N,) MNTP or MSG
    causal: torch.Tensor  # (N,) bool: the label's view is causal (base_kl's labels)


def collate_views(views: list[View], pad_id: int, device) -> ViewBatch:
    width = max(len(v.input_ids) for v in views)
    ids = torch.full((len(views), width), pad_id, dtype=torch.long)
    roles = torch.full((len(views), width), PAD, dtype=torch.long)
    positions = torch.zeros((len(views), width), dtype=torch.long)
    rows, cols, labels, objectives, causal = [], [], [], [], []
    for b, v in enumerate(views):
        n = len(v.input_ids)
        ids[b, :n] = torch.tensor(v.input_ids)
        roles[b, :n] = torch.tensor(v.roles)
        positions[b, :n] = torch.tensor(v.positions)
        rows += [b] * len(v.labels)
        cols += v.predictors
        labels += v.labels
        objectives += v.objectives
        causal += [v.causal] * len(v.labels)
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return ViewBatch(ids.to(device), roles.to(device), positions.to(device),
                     as_long(rows), as_long(cols), as_long(labels), as_long(objectives),
                     torch.tensor(causal, dtype=torch.bool, device=device))


def label_logits(model, batch: ViewBatch) -> torch.Tensor:
    """(N, V) logits of each label's predictor (only labelled slots are projected)."""
    hidden = hidden_states(model, batch.input_ids, batch.roles, batch.positions)  # (B, T, H)
    return logits(model, hidden[batch.rows, batch.cols])


def label_nll(picked: torch.Tensor, batch: ViewBatch) -> torch.Tensor:
    """(N,) cross-entropy of each label from its (N, V) logits."""
    return F.cross_entropy(picked, batch.labels, reduction="none")


def base_kl(model, batch: ViewBatch, picked: torch.Tensor) -> torch.Tensor:
    """(C,) KL(base || adapted) of the next-token distributions at the C labels of causal
    views: the same text read left to right by the same weights without the adapter (peft's
    `disable_adapter`, no gradient). It pulls the generator toward the base's own predictions
    on the training text instead of toward memorising it (not in the paper)."""
    chosen = batch.causal  # (N,)
    if not chosen.any():
        return picked.new_zeros(0)
    rows, cols = batch.rows[chosen], batch.cols[chosen]
    kept = torch.unique(rows)  # (R,) sorted rows that hold causal labels
    with torch.no_grad(), model.disable_adapter():
        hidden = hidden_states(model, batch.input_ids[kept], batch.roles[kept], batch.positions[kept])
        base = torch.log_softmax(logits(model, hidden[torch.searchsorted(kept, rows), cols]), dim=-1)  # (C, V)
    adapted = torch.log_softmax(picked[chosen].float(), dim=-1)
    return (base.exp() * (base - adapted)).sum(dim=-1)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i's positive is column i (the diagonal)."""
    sim = F.normalize(anchors.float(), dim=-1) @ F.normalize(positives.float(), dim=-1).T  # (B, B)
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(sim / temperature, target)


def cosent(anchors: torch.Tensor, others: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT (Su 2022) on graded pairs: every pair (i, j) of the batch with scores[i] >
    scores[j] should have cos_i > cos_j; the loss is log(1 + sum over such (i, j) of
    exp(scale * (cos_j - cos_i))). It learns the gold ranking of similarities, which is what
    Spearman scores, without asking any cosine to equal a score. anchors, others: (B, H)."""
    cos = F.cosine_similarity(anchors.float(), others.float(), dim=-1)  # (B,)
    gaps = scale * (cos[None, :] - cos[:, None])  # (B, B): [i, j] = scale * (cos_j - cos_i)
    ordered = scores[:, None] > scores[None, :]  # (B, B): pair i is more similar than pair j
    zero = torch.zeros(1, device=cos.device, dtype=cos.dtype)  # the 1 in log(1 + ...)
    return torch.logsumexp(torch.cat([zero, gaps[ordered]]), dim=0)
