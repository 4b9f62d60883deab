"""Narrow products read bf16 weights on CPUs that compute in fp32: decode steps stream half the bytes.

Where the CPU has no native bf16 the engine computes in fp32 (magnet/hardware.py): a bf16
matmul is emulated there, and an embedding batch or a prefill, bound by arithmetic, runs
several times slower in bf16. A decode step is another kind of product: 1-3 rows times every
weight of the model, bound by how fast the weights stream from memory, and bf16 weights are
half the bytes. Measured on 2 AVX2 cores (torch 2.13), one 1536 x 576 weight, microseconds
per call, fp32 / bf16: 1 row 366 / 145, 2 rows 658 / 238, 3 rows 656 / 321, 4 rows 645 / 756,
8 rows 486 / 995; the 49152 x 576 output projection, 1 row: 10,187 / 4,453.

Products of a few to a few dozen rows, also bound by memory, stream fp32 faster in oneDNN's
packed layout than row-major (16 rows: 76.6 against 108.5 ms a pass over the embedded model),
while MKL's row-major product stays the faster one for an embedding batch's thousands of rows.

So each linear keeps its fp32 weight for wide products and gains, by the product's rows
(`Tiers`, `NarrowLinear`): a bf16 copy (x.bf16() @ W_bf16, returned in fp32) up to
`bf16_rows`, the packed fp32 weight up to `packed_rows`, the plain one beyond. The tiers are
timed on the model's own weights when the engine loads (`measured_tiers`), never assumed: the
crossings differ between CPUs, and where bf16 is native the engine serves bf16 anyway.

The price: a step with few rows rounds its weights and inputs to bf16, so a greedy text
decoded alone may part from the same text decoded in a wide batch after some tokens (figures:
tests/test_narrow.py, docs/core.md). `EngineConfig(narrow_tiers=Tiers())` keeps every
product the plain fp32 one.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from magnet.packed import can_pack, faithfully_packed, plain_linears

log = logging.getLogger(__name__)

# Row counts tried when measuring, narrowest first; a decode step has one row per span.
CANDIDATE_ROWS = (1, 2, 3, 4, 6, 8, 16, 32, 64, 128)
# a kernel must beat the plain fp32 product by this factor to be chosen: a near tie is noise
MARGIN = 1.15
# Below this many bytes of fp32 weights a model's products run from the CPU's caches, bound
# by arithmetic, where emulated bf16 only loses: such models are not measured (tests' tiny ones).
MIN_WEIGHT_BYTES = 64 * 2 ** 20
# the rows oneDNN's packed layout is laid out for: decode batches of a few to a few dozen rows
PACKED_FOR_ROWS = 16


@dataclass(frozen=True)
class Tiers:
    """Which kernel a product of n rows runs: n <= bf16_rows: bf16 copies of the weights;
    n <= packed_rows: fp32 in oneDNN's packed layout; wider: the plain fp32 weight."""

    bf16_rows: int = 0
    packed_rows: int = 0

    def __bool__(self) -> bool:
        return self.packed_rows > 0 or self.bf16_rows > 0

    def describe(self) -> str:
        """How logs, metrics and `parse` name the tiers: "bf16<=3,packed<=32", "none"."""
        parts = {"bf16": self.bf16_rows, "packed": self.packed_rows}
        return ",".join(f"{kind}<={rows}" for kind, rows in parts.items() if rows) or "none"

    @classmethod
    def parse(cls, text: str | None) -> "Tiers | None":
        """"bf16<=3,packed<=32", "packed<=16" or "none" -> those tiers; "auto" or None -> None
        (measured at load). Anything else: ValueError naming the form."""
        if text is None or text.strip() == "auto":
            return None
        if text.strip() == "none":
            return cls()
        rows = {}
        for part in text.split(","):
            kind, _, count = part.strip().partition("<=")
            if kind not in ("bf16", "packed") or kind in rows or not count.isdigit():
                raise ValueError(f"narrow products {text!r}: give 'auto', 'none' or tiers such as "
                                 "'bf16<=3,packed<=32' (rows a product may have for each kernel)")
            rows[kind] = int(count)
        return cls(rows.get("bf16", 0), rows.get("packed", 0))


class NarrowLinear(torch.nn.Module):
    """y = x W^T + b; x (..., in) -> (..., out) in x's dtype, by the kernel its row count pays for."""

    def __init__(self, linear: torch.nn.Linear, tiers: Tiers):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters: ties stay tied
        # tier bounds as element counts of x, compared with x.numel() on every call
        self.bf16_below = tiers.bf16_rows * self.in_features
        self.packed_below = max(tiers.packed_rows, tiers.bf16_rows) * self.in_features
        weight = linear.weight.detach()
        self.register_buffer("bf16_weight", weight.to(torch.bfloat16) if tiers.bf16_rows else None,
                             persistent=False)
        bias = None if linear.bias is None or not tiers.bf16_rows else linear.bias.detach().to(torch.bfloat16)
        self.register_buffer("bf16_bias", bias, persistent=False)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_FOR_ROWS) if tiers.packed_rows else None
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # compiled layers (magnet/lean.py) run the wide cache-less forwards: no branch on shape there
        if not torch.compiler.is_compiling():
            n = x.numel()
            if n <= self.bf16_below:
                return F.linear(x.to(torch.bfloat16), self.bf16_weight, self.bf16_bias).to(x.dtype)
            if n <= self.packed_below:
                return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bf16 up to {self.bf16_below // self.in_features} rows, "
                f"packed up to {self.packed_below // self.in_features}")


def computes_fp32_on_cpu(model: torch.nn.Module) -> bool:
    weight = model.get_input_embeddings().weight
    return weight.device.type == "cpu" and weight.dtype == torch.float32


_MEASURED: dict[tuple, Tiers] = {}  # by weight shapes: an adapter variant reads the first


def measured_tiers(weights: list[torch.Tensor], packable: bool) -> Tiers:
    """`tiers_that_pay` for these fp32 weights, timed once per process and set of shapes."""
    key = (tuple(tuple(w.shape) for w in weights), packable)
    if key not in _MEASURED:
        _MEASURED[key] = tiers_that_pay(weights, packable)
    return _MEASURED[key]


def tiers_that_pay(weights: list[torch.Tensor], packable: bool = True, repeats: int = 2) -> Tiers:
    """The tiers timed here on `weights` (fp32, (out, in) each): one pass over all of them per
    kernel and row count, as a decode step streams them. bf16 reaches the widest count up to
    which it beat both fp32 kernels (the plain one by MARGIN) at every count; packed, from
    there, the widest up to which it beat the plain weight by MARGIN (not tried unless
    `packable`). The copies it times are dropped when it returns."""
    widths = [w.shape[1] for w in weights]
    kernels = {"plain": weights, "bf16": [w.to(torch.bfloat16) for w in weights]}
    if packable:
        kernels["packed"] = [torch.ops.mkldnn._reorder_linear_weight(w, PACKED_FOR_ROWS) for w in weights]
    bf16_rows = packed_rows = 0
    for rows in CANDIDATE_ROWS:
        kinds = [kind for kind in kernels if kind != "bf16" or bf16_rows == packed_rows]  # bf16 from 1 row up
        seconds = {kind: min(timed_pass(kind, kernels[kind], widths, rows) for _ in range(repeats)) for kind in kinds}
        seconds.setdefault("packed", float("inf"))
        log.debug("%d rows: %s", rows, ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in seconds.items()))
        if "bf16" in seconds and seconds["bf16"] * MARGIN < seconds["plain"] and seconds["bf16"] < seconds["packed"]:
            bf16_rows = packed_rows = rows  # packed_rows trails: packed starts above it
        elif seconds["packed"] * MARGIN < seconds["plain"]:
            packed_rows = rows
        else:
            break
    return Tiers(bf16_rows, packed_rows if packed_rows > bf16_rows else 0)


def timed_pass(kind: str, weights: list[torch.Tensor], widths: list[int], rows: int) -> float:
    """Seconds for one product of `rows` random rows by each weight (input widths `widths`)
    with `kind`'s kernel."""
    dtype = torch.bfloat16 if kind == "bf16" else torch.float32
    inputs = {width: torch.randn(rows, width, dtype=dtype) for width in set(widths)}
    with torch.inference_mode():
        started = time.perf_counter()
        for w, width in zip(weights, widths):
            if kind == "packed":
                torch.ops.mkldnn._linear_pointwise(inputs[width], w, None, "none", [], "")
            else:
                F.linear(inputs[width], w)
        return time.perf_counter() - started


def narrow_linears(model: torch.nn.Module, tiers: Tiers | None = None) -> Tiers:
    """Give every plain linear of a frozen fp32 CPU model the kernels `tiers` names for narrow
    products (None: those measured to pay here, `measured_tiers`); returns the tiers installed.
    Tiers() (the model untouched) where it is not fp32 on CPU or nothing pays."""
    if tiers is not None and not tiers or not computes_fp32_on_cpu(model):
        return Tiers()
    linears = plain_linears(model)
    if not linears:
        return Tiers()
    weights = list({id(c.weight): c.weight.detach() for _, _, c in linears}.values())  # a tied one once
    if tiers is None and sum(w.numel() * w.element_size() for w in weights) < MIN_WEIGHT_BYTES:
        return Tiers()
    # oneDNN present, taking the layout and computing what F.linear computes (magnet/packed.py)
    packable = can_pack(model) and faithfully_packed(linears[0][2]) is not None
    if tiers is None:
        tiers = measured_tiers(weights, packable)
    if tiers.packed_rows and not packable:
        tiers = Tiers(tiers.bf16_rows, 0)
    if tiers:
        for parent, name, child in linears:
            setattr(parent, name, NarrowLinear(child, tiers))
    return tiers
