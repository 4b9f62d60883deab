"""Linear layers whose weights oneDNN laid out once for this CPU: frozen inference only.

A plain `nn.Linear` on CPU hands oneDNN a row-major weight on every call. A decode step
multiplies 1-16 rows by every weight of the model, so it is bound by how fast the weights
stream from memory, and the row-major layout streams them slowly. oneDNN's own blocked
layout (made once by `mkldnn._reorder_linear_weight`, the pass torch.compile's freezing
applies to CPU linears) streams them faster: one decode stream of the embedded model in bf16
took 0.63-0.80x the plain layers' time per token, with the same greedy text
(`python bench/bench_core.py --packing`, table in docs/core.md). Embedding batches, bound by
the matrix units rather than by memory, gain little (1.01x).

Only an engine built from a spec (frozen, merged weights) is packed: a packed layer drops
its row-major weight, so it cannot train, merge or save. Where oneDNN is missing or refuses
the layout, the layers stay plain (`pack_linears` checks one against `F.linear` first).
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
# a packed layer's output against F.linear on the same input: the same kernel family, so
# only summation order differs
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


class PackedLinear(torch.nn.Module):
    """y = x W^T + b with W in oneDNN's blocked layout; x (..., in_features) -> (..., out_features)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # the hint (expected rows per call) picks the layout: decode steps are 1 row per span
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1),
                             persistent=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def can_pack(model: torch.nn.Module) -> bool:
    """A CPU model in fp32 or bf16, on a torch built with oneDNN."""
    weight = model.get_input_embeddings().weight
    return (weight.device.type == "cpu" and weight.dtype in PACKABLE_DTYPES
            and torch.backends.mkldnn.is_available())


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every nn.Linear of a frozen CPU model by a PackedLinear; returns how many.

    0 (the model untouched) where it cannot pack or the first layer's output disagrees
    with F.linear."""
    if not can_pack(model):
        return 0
    linears = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, torch.nn.Linear)]
    first = faithfully_packed(linears[0][2]) if linears else None
    if first is None:
        return 0
    packed = [first] + [PackedLinear(child) for _, _, child in linears[1:]]
    for (parent, name, _), layer in zip(linears, packed):
        setattr(parent, name, layer)
    return len(linears)


def faithfully_packed(linear: torch.nn.Linear) -> PackedLinear | None:
    """The layer packed, if oneDNN takes its layout and computes what F.linear computes; else None."""
    x = torch.randn(3, linear.in_features, dtype=linear.weight.dtype)
    try:
        packed = PackedLinear(linear)  # outside inference mode, like every other layer: a normal buffer
        with torch.inference_mode():
            got, want = packed(x), F.linear(x, linear.weight, linear.bias)
    except RuntimeError as exc:  # oneDNN without a kernel for this dtype or CPU
        log.warning("linear layers stay unpacked: %s", str(exc).splitlines()[0])
        return None
    scale = want.abs().max().clamp(min=1.0)
    if ((got - want).abs().max() / scale).item() > PARITY_TOLERANCE[linear.weight.dtype]:
        log.warning("linear layers stay unpacked: oneDNN's packed output differs from F.linear")
        return None
    return packed
