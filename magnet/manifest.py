"""What an adapter (or a tagging head) says about itself, in `magnet.json`.

Training writes it next to the peft files; the loader reads it to refuse an
adapter that does not fit the base and to learn the mask token, instruction
and pooling the adapter was trained with.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FILE = "magnet.json"
DEFAULT_INSTRUCTION = "Given the sentence, find its representation: "


@dataclass(frozen=True)
class BaseIdentity:
    """Enough of a base model's config to tell whether weights fit it."""

    name: str
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    vocab_size: int

    @classmethod
    def of(cls, config, name: str) -> "BaseIdentity":
        return cls(
            name=name,
            model_type=config.model_type,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            vocab_size=config.vocab_size,
        )

    def mismatch(self, other: "BaseIdentity") -> list[str]:
        """Fields that differ, as 'field: mine != theirs' strings."""
        fields = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
        return [
            f"{f}: {getattr(self, f)} != {getattr(other, f)}"
            for f in fields
            if getattr(self, f) != getattr(other, f)
        ]


@dataclass(frozen=True)
class AdapterManifest:
    base: BaseIdentity
    mask_token: str = "_"
    instruction: str = DEFAULT_INSTRUCTION
    pooling: str = "last_token"
    objectives: dict = field(default_factory=dict)  # name -> loss weights / schedule
    steps: int = 0
    data: list = field(default_factory=list)  # the training text files
    extra: dict = field(default_factory=dict)  # e.g. quality figures

    def save(self, directory: Path) -> None:
        Path(directory, MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "AdapterManifest | None":
        path = Path(directory, MANIFEST_FILE)
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["base"] = BaseIdentity(**raw["base"])
        return cls(**raw)
