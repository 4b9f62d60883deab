"""LoRA dropout whose masks come from 16 random bits per element.

peft drops each LoRA layer's input with `nn.Dropout`, whose CPU mask draws one random number
per element (`bernoulli_`): a bf16 step with LoRA r 64 on all seven projections makes 210
such masks, and torch.profiler put `bernoulli_` among the largest costs of the step after the
matrix products. `BitsDropout` draws 32 random bits per two elements and keeps an element
when its 16 bits clear a threshold: Bernoulli(1 - p) masks with p rounded to a multiple of
1/65536, kept elements scaled by 1 / (1 - p) as nn.Dropout's, with half the draws. A whole
step gains a few per cent (`python bench/bench_train.py`, docs/training.md). The bits come
from torch's global generator, so a run seeded per step (training/loop.py) draws the same
masks again when resumed.
"""
from __future__ import annotations

import torch

LEVELS = 1 << 16  # the values 16 random bits take


class BitsDropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability {p} must be in [0, 1)")
        self.dropped = round(p * LEVELS)  # of LEVELS equally likely values, how many drop
        self.scale = LEVELS / (LEVELS - self.dropped)

    @property
    def p(self) -> float:
        return self.dropped / LEVELS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropped == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_(-2 ** 31, 2 ** 31)
        bits = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
        return x * (bits >= self.dropped - LEVELS // 2) * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p:.6g}"


def use_bits_dropout(model: torch.nn.Module) -> int:
    """Replace every LoRA layer's nn.Dropout (peft's `lora_dropout`) by a BitsDropout of the
    same p; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = BitsDropout(dropout.p)
                replaced += 1
    return replaced
