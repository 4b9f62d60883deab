"""The typed work items a request becomes: built once, off the event loop's hot path, with
everything admission, the queue, the scheduler and the engine read.

    EmbedWork     token ids per input (as the model reads them), normalize      one-shot, sliced
    TagWork       per input its words and token ids (TagItem), the task        one-shot, sliced
    InfillWork    the segments and their decode rows (candidate params, layout)  decode
    GenerateWork  the prompt's token ids and its params                          decode
    CallWork      the server's own call (loading, warm-up)                       one-shot, alone

Each has `kind`, `key` (equal keys run as one engine call), `payload` (what that call gets,
per item; sliceable for one-shot items), `tokens` / `sizes` (input tokens: the price and the
budget), and for decodes `rows` and `new_tokens` (with `tokens`, their share of the running
batch's KV cache: the queue's `Job.kv_tokens`). `run(payloads)` is the engine call of a group
of equal keys, on the model thread: one-shot items return one result list per payload,
decodes a DecodeBatch with one decode per payload (server/worker.py submits them:
`ModelWorker.submit_work`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from magnet.errors import BackendError
from magnet.sampling import SamplingParams


class Work(Protocol):
    """What the queue reads of a work item (server/worker.py's Job): every item has these;
    decodes (`decode` True) have `model`, `rows` and `new_tokens` too, one-shot items `sizes`
    (None: one payload, never sliced)."""

    kind: str
    decode: bool

    @property
    def key(self) -> tuple | None: ...

    @property
    def payload(self) -> Any: ...

    @property
    def tokens(self) -> int: ...

    def run(self, payloads: list) -> Any: ...


@dataclass(eq=False)
class CallWork:
    """The server's own call on the model thread (loading a model, the warm-up): runs alone."""

    kind: str
    fn: Callable[..., Any]
    args: tuple
    tokens: int = 0

    key: ClassVar[None] = None
    payload: ClassVar[None] = None
    sizes: ClassVar[None] = None
    decode: ClassVar[bool] = False

    def run(self, _payloads: list) -> list:
        return [self.fn(*self.args)]


@dataclass(eq=False)
class EmbedWork:
    engine: Any  # magnet.engine.Engine
    model: str  # the served id
    ids: list[list[int]]  # per input: [anchor] instruction text [EOS], as the model reads it
    instruction: str
    normalize: bool
    truncate: bool

    kind: ClassVar[str] = "embed"
    decode: ClassVar[bool] = False

    @property
    def key(self) -> tuple:
        return ("embed", self.model, self.instruction, self.normalize, self.truncate)

    @property
    def payload(self) -> list[list[int]]:
        return self.ids

    @property
    def sizes(self) -> list[int]:
        return [len(seq) for seq in self.ids]

    @property
    def tokens(self) -> int:
        return sum(self.sizes)

    def run(self, payloads: list[list[list[int]]]) -> list[list]:
        """Per payload (a slice of some item's ids), its (H,) float32 rows."""
        flat = [seq for seqs in payloads for seq in seqs]
        embeddings = self.engine.embed_token_ids(flat, self.normalize).embeddings  # (N, H)
        require_finite(embeddings, self.model)
        return split_back(list(embeddings.numpy()), [len(p) for p in payloads])


@dataclass(eq=False)
class TagWork:
    tagger: Any  # magnet.tagging.Tagger (the default model's heads)
    model: str
    task: str
    items: list  # magnet.tagging.tagger.TagItem: words and token ids, prepared once

    kind: ClassVar[str] = "tag"
    decode: ClassVar[bool] = False

    @property
    def key(self) -> tuple:
        return ("tag", self.model, self.task)

    @property
    def payload(self) -> list:
        return self.items

    @property
    def sizes(self) -> list[int]:
        return [item.n_tokens for item in self.items]

    @property
    def tokens(self) -> int:
        return sum(self.sizes)

    def run(self, payloads: list[list]) -> list[list[dict]]:
        flat = [item for items in payloads for item in items]
        return split_back(self.tagger.tag_items(flat, self.task), [len(p) for p in payloads])


@dataclass(eq=False)
class InfillWork:
    engine: Any
    model: str
    segments: list[str]
    rows_plan: list[tuple[SamplingParams, Any]]  # per decode row: (candidate params, InfillLayout)
    max_tokens: int  # per fill

    kind: ClassVar[str] = "infill"
    decode: ClassVar[bool] = True
    sizes: ClassVar[None] = None

    @property
    def key(self) -> tuple:
        return ("infill", self.model)

    @property
    def payload(self) -> tuple:
        return self.segments, self.rows_plan

    @property
    def rows(self) -> int:
        return len(self.rows_plan)

    @property
    def tokens(self) -> int:
        """Every row's prefill: its context, an anchor and an EOS."""
        return sum(len(layout.ids) for _, layout in self.rows_plan)

    @property
    def new_tokens(self) -> int:
        """What the fills of every row may add."""
        return self.rows * (len(self.segments) - 1) * self.max_tokens

    @property
    def after_tokens(self) -> int:
        """The work once the fills are made: with several candidates (best_of), each whole text
        is read once more, left to right, to keep the likeliest (magnet/decodes.py)."""
        return self.tokens + self.new_tokens if self.rows > 1 else 0

    def run(self, payloads: list[tuple]):
        # Requests that meet in the queue are prefilled together, then join the running batch.
        return self.engine.start_infill_rows([p[0] for p in payloads], [p[1] for p in payloads])


@dataclass(eq=False)
class GenerateWork:
    engine: Any
    model: str
    ids: list[int]  # the prompt's, special tokens included, checked to fit with max_tokens
    params: SamplingParams

    kind: ClassVar[str] = "generate"
    decode: ClassVar[bool] = True
    sizes: ClassVar[None] = None
    rows: ClassVar[int] = 1

    @property
    def key(self) -> tuple:
        return ("generate", self.model)  # one prefill call, one engine

    @property
    def payload(self) -> tuple:
        return self.ids, self.params

    @property
    def tokens(self) -> int:
        return len(self.ids)

    @property
    def new_tokens(self) -> int:
        return self.params.max_tokens

    def run(self, payloads: list[tuple]):
        return self.engine.start_generate_ids([p[0] for p in payloads], [p[1] for p in payloads])


def require_finite(values, model_id: str) -> None:
    """A model that outputs NaN or inf fails the request (no `null` where floats are promised)."""
    import torch

    if not bool(torch.isfinite(values).all()):
        raise BackendError(f"model {model_id!r} produced non-finite values (NaN or inf): its weights or "
                           "adapter are broken; see the server log")


def split_back(flat: list, sizes: list[int]) -> list[list]:
    """Undo the concatenation of several requests' items: one list per request."""
    out, start = [], 0
    for size in sizes:
        out.append(flat[start:start + size])
        start += size
    return out
