"""Linear layers whose weights oneDNN laid out once for this CPU: frozen inference only.

A plain `nn.Linear` on CPU hands oneDNN a row-major weight on every call. A decode step
multiplies 1-16 rows by every weight of the model, so it is bound by how fast the weights
stream from memory, and the row-major layout streams them slowly. oneDNN's own blocked
layout (made once by `mkldnn._reorder_linear_weight`, the pass torch.compile's freezing
applies to CPU linears) streams them faster: one decode stream of the embedded model in bf16
took 0.63-0.80x the plain layers' time per token, with the same greedy text
(`python bench/bench_core.py --packing`, table in docs/core.md). Embedding batches, bound by
the matrix units rather than by memory, gain little (1.01x).

Asked to (`join_shared_inputs`; the engine's `join_projections`, off by default), the
projections a module multiplies by the same input (attention's q, k, v; the MLP's gate and
up) are packed side by side and run as one product (`SharedInputLinears`): a decode step makes
4 weight calls per layer instead of 7 and gains a few per cent, but an embedding batch loses
about 9% (its outputs are strided column blocks the next ops read slower).

Only an engine built from a spec (frozen, merged weights) is packed: a packed layer drops
its row-major weight, so it cannot train, merge or save. Where oneDNN is missing or refuses
the layout, the layers stay plain (`pack_linears` checks one against `F.linear` first).
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PACKABLE_DTYPES = (torch.float32, torch.bfloat16)
# The dtypes an engine packs unless told (EngineConfig.pack_linears): where the packed layout
# paid on every path (`python bench/bench_core.py --packing`, docs/core.md). bf16 (2 cores with
# avx512_bf16): embedding 1.16x the plain layers' rate, a decode token 0.76-0.83x the time.
# fp32 (2 cores, AVX2 only): embedding 0.82x the rate (MKL's row-major product is faster on an
# embedding batch's thousands of rows), a decode token 0.89-0.98x the time; embedding is the
# busier path, so fp32 stays plain.
PACKED_BY_DEFAULT = (torch.bfloat16,)
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
        if torch.compiler.is_compiling():  # inside a compiled layer (magnet/lean.py): an opaque call
            return packed_product(x, self.packed, self.bias, self.out_features)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


# Inductor rewrites mkldnn._linear_pointwise for weights it packed itself (freezing) and
# fails on ours; as a custom op the product stays one call it schedules around. Eager calls
# go straight to oneDNN, without the custom op's Python dispatch.
@torch.library.custom_op("magnet::packed_product", mutates_args=())
def packed_product(x: torch.Tensor, packed: torch.Tensor, bias: Optional[torch.Tensor],
                   out_features: int) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@packed_product.register_fake
def _packed_product_shape(x, packed, bias, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


def packs_by_default(model: torch.nn.Module) -> bool:
    """Whether an engine packs this model's linears unless told otherwise (PACKED_BY_DEFAULT)."""
    return model.get_input_embeddings().weight.dtype in PACKED_BY_DEFAULT


def can_pack(model: torch.nn.Module) -> bool:
    """A CPU model in fp32 or bf16, on a torch built with oneDNN."""
    weight = model.get_input_embeddings().weight
    return (weight.device.type == "cpu" and weight.dtype in PACKABLE_DTYPES
            and torch.backends.mkldnn.is_available())


# linears a module multiplies by the same input tensor, one right after the other (the
# Llama family's attention and MLP): side by side in one packed matrix they are one product,
# one pass over x and one oneDNN call instead of three or two
SHARED_INPUT_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class SharedInputLinears(torch.nn.Module):
    """Several linears of one input as one packed product; each member reads its own columns.

    The first member called with a tensor computes every member's output; the others, called
    with the same tensor object, take theirs from it (views of the joined output). Called with
    another tensor, a member computes again, so a caller that feeds members different inputs
    still gets right outputs, only without the saving."""

    def __init__(self, linears: list[torch.nn.Linear]):
        super().__init__()
        self.sizes = [linear.out_features for linear in linears]
        joined = torch.nn.Linear(linears[0].in_features, sum(self.sizes), bias=linears[0].bias is not None,
                                 device="meta")
        joined.weight = torch.nn.Parameter(torch.cat([l.weight.detach() for l in linears]), requires_grad=False)
        if joined.bias is not None:
            joined.bias = torch.nn.Parameter(torch.cat([l.bias.detach() for l in linears]), requires_grad=False)
        self.joined = PackedLinear(joined)
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._unread = 0

    def output(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self._input is not x:
            self._input, self._outputs = x, self.joined(x).split(self.sizes, dim=-1)
            self._unread = len(self.sizes)
        out = self._outputs[index]
        self._unread -= 1
        if self._unread == 0:  # every member has its output: hold nothing between forwards
            self._input, self._outputs = None, ()
        return out


class SharedInputMember(torch.nn.Module):
    """Stands where one linear of a SharedInputLinears group stood: x -> its columns."""

    def __init__(self, group: SharedInputLinears, index: int):
        super().__init__()
        self.__dict__["group"] = group  # owned by the parent module, not registered twice
        self.index = index
        self.in_features, self.out_features = group.joined.in_features, group.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.group.output(x, self.index)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, column block {self.index}"


def pack_linears(model: torch.nn.Module, join_shared_inputs: bool = False) -> int:
    """Replace every nn.Linear of a frozen CPU model by a packed one; returns how many. With
    `join_shared_inputs`, each group of SHARED_INPUT_GROUPS a module has (all of its names,
    biases alike) becomes one packed product (SharedInputLinears).

    0 (the model untouched) where it cannot pack or a packed layer's output disagrees with
    F.linear."""
    if not can_pack(model):
        return 0
    linears = plain_linears(model)
    first = faithfully_packed(linears[0][2]) if linears else None
    if first is None:
        return 0
    replaced = join_groups(model) if join_shared_inputs else 0
    for parent, name, child in plain_linears(model):  # the checked layer is kept, not packed again
        setattr(parent, name, first if child is linears[0][2] else PackedLinear(child))
        replaced += 1
    return replaced


def plain_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    return [(parent, name, child) for parent in model.modules()
            for name, child in parent.named_children() if isinstance(child, torch.nn.Linear)]


def join_groups(model: torch.nn.Module) -> int:
    """Every module's shared-input groups joined; returns how many linears they replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for names in SHARED_INPUT_GROUPS:
            members = [getattr(parent, name, None) for name in names]
            if not all(isinstance(m, torch.nn.Linear) for m in members):
                continue
            if len({m.in_features for m in members}) > 1 or len({m.bias is None for m in members}) > 1:
                continue
            group = SharedInputLinears(members)
            parent.add_module("joined_" + "_".join(n.removesuffix("_proj") for n in names), group)
            for index, name in enumerate(names):
                setattr(parent, name, SharedInputMember(group, index))
            replaced += len(names)
    return replaced


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
