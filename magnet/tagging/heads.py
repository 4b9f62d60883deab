"""Tagging heads: one linear layer per task on frozen word vectors, saved with
their label lists and a manifest naming the model they were trained on.

    heads_dir/
        heads.safetensors   {task}.weight (L, H), {task}.bias (L,)
        labels.json         {task: [label, ...]}  (row order of the weights)
        magnet.json         HeadsManifest: base identity, adapter, feature mode and layer
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from magnet.manifest import MANIFEST_FILE, BaseIdentity
from magnet.permissions import make_readable
from magnet.pooling import WORD_READINGS

HEADS_FILE = "heads.safetensors"
LABELS_FILE = "labels.json"
# which engine states a head reads (magnet.pooling.WORD_READINGS, Engine.word_vectors):
#   bidirectional-pair  bidirectional attention, a token = [output before it ; its own] (2H)
#   bidirectional       bidirectional attention, a token = the output before it (H; MNTP's reading)
#   causal              the model read left to right, a token = its own output (H; the base's row)
FEATURE_MODES = tuple(WORD_READINGS)
DEFAULT_FEATURE_MODE = "bidirectional-pair"
DEFAULT_HEADS_DIR = Path(__file__).resolve().parent.parent / "defaults" / "heads"


class HeadsMismatchError(ValueError):
    """The heads were trained on another base model, adapter or feature mode."""


@dataclass(frozen=True)
class AdapterIdentity:
    name: str  # the adapter folder's name
    sha256: str  # of its weights file: the same name can hold other weights


def adapter_identity(adapter_path: Path | None, sha256: str | None = None) -> AdapterIdentity | None:
    """The adapter's name and weights digest (`sha256` when the loader already took it)."""
    if adapter_path is None:
        return None
    from magnet.loading import weights_sha256

    return AdapterIdentity(Path(adapter_path).name, sha256 or weights_sha256(adapter_path))


def describe(base: BaseIdentity, adapter: AdapterIdentity | None) -> str:
    if adapter is None:
        return f"{base.name} (no adapter)"
    return f"{base.name} + adapter {adapter.name} (sha256 {adapter.sha256[:12]})"


@dataclass(frozen=True)
class HeadsManifest:
    base: BaseIdentity
    adapter: AdapterIdentity | None
    feature_mode: str = "bidirectional"  # which engine states the heads read (absent in manifests before the pair)
    tasks: list = field(default_factory=list)
    training: dict = field(default_factory=dict)  # steps, lr, data, ...
    metrics: dict = field(default_factory=dict)  # task -> select score of the kept checkpoint
    feature_layer: int | None = None  # the layer whose outputs they read (1-based; None: the last, as before the sweep)

    def mismatch(self, base: BaseIdentity, adapter: AdapterIdentity | None) -> list[str]:
        """Why these heads do not fit that model (empty if they fit)."""
        problems = self.base.mismatch(base)
        if (self.adapter and self.adapter.sha256) != (adapter and adapter.sha256):
            problems.append("adapter differs")
        return problems

    def save(self, directory: Path) -> None:
        Path(directory, MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "HeadsManifest":
        path = Path(directory, MANIFEST_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no tagging heads in {directory}: {MANIFEST_FILE} is missing")
        raw = json.loads(path.read_text())
        raw["base"] = BaseIdentity(**raw["base"])
        raw["adapter"] = AdapterIdentity(**raw["adapter"]) if raw.get("adapter") else None
        return cls(**raw)


class TagHead(nn.Module):
    """Dropout then one linear layer: (W, H) word vectors -> (W, L) label logits."""

    def __init__(self, hidden_size: int, labels: list[str], dropout: float = 0.1):
        super().__init__()
        self.labels = list(labels)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden_size, len(labels))

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(words))

    @torch.no_grad()
    def predict(self, words: torch.Tensor) -> list[str]:
        """(W, H) -> W label strings (eval mode: no dropout)."""
        logits = self.linear(words.to(self.linear.weight.dtype))
        return [self.labels[i] for i in logits.argmax(-1).tolist()]


def save_heads(directory: Path, heads: dict[str, TagHead], manifest: HeadsManifest) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for task, head in heads.items():
        tensors[f"{task}.weight"] = head.linear.weight.detach().float().contiguous()
        tensors[f"{task}.bias"] = head.linear.bias.detach().float().contiguous()
    save_file(tensors, directory / HEADS_FILE)
    labels = {task: head.labels for task, head in heads.items()}
    (directory / LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n")
    manifest.save(directory)
    make_readable([directory, *(directory / name for name in (HEADS_FILE, LABELS_FILE, MANIFEST_FILE))])


def load_heads(directory: Path) -> tuple[dict[str, TagHead], HeadsManifest]:
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = HeadsManifest.load(directory)
    tensors = load_file(directory / HEADS_FILE)
    labels = json.loads((directory / LABELS_FILE).read_text())
    heads = {}
    for task in manifest.tasks:
        weight = tensors[f"{task}.weight"]  # (L, H)
        head = TagHead(weight.shape[1], labels[task])
        head.linear.load_state_dict({"weight": weight, "bias": tensors[f"{task}.bias"]})
        heads[task] = head.eval()
    return heads, manifest
