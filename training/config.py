"""Training configuration: one frozen dataclass, paper defaults (Appendix A).

Loaded from a JSON file (`--config`) and overridden by CLI flags.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from magnet.manifest import DEFAULT_INSTRUCTION


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: tuple[str, ...] = ()  # plain text, one paragraph per line (ROC / MRPC files are read too)
    pairs: tuple[str, ...] = ()  # SSCL positive pairs (MRPC file or "a<TAB>b" lines)
    output: str = "runs/magnet"
    model: str | None = None  # None = the embedded default
    init_adapter: str | None = None  # start from this adapter (a second phase) instead of a fresh LoRA
    exclude: tuple[str, ...] = ()  # files whose sentences must never be trained on (+ select_stsb)

    # sequence views
    max_length: int = 512  # tokens per MNTP/MSG example (paper 512)
    mask_token: str = "_"  # used when the tokenizer has no mask token
    mask_rate: float = 0.20  # of context tokens; then 80% mask / 10% random / 10% kept
    context: str = "bidirectional"  # how MSG views read their context: magnet.masks.READING_MODES
    mntp_view_rate: float = 0.0  # with causal context: share of examples that are MNTP-only bidirectional views
    max_spans: int = 2
    span_min: int = 4  # paper: 4..128 at length 512; scaled by max_length / 512
    span_max: int = 128
    causal_rate: float = 0.1  # examples that are one span end to end (plain next-token prediction)
    gap_jitter: float = 0.0  # suffix distance drawn from m * U(1, 1 + j) for a span of m tokens
    trailing_rate: float = 0.1  # examples whose last span ends the text (EOS after it)
    sentence_rate: float = 0.0  # examples whose first span is one whole sentence

    # SSCL
    instruction: str = DEFAULT_INSTRUCTION
    temperature: float = 0.1
    sscl_max_length: int = 128
    sscl_batch_size: int = 0  # 0 = same as batch_size
    augmenter: str = "word_dropout"  # positives for lines without a pair: word_dropout | dropout
    min_sscl_words: int = 20  # paper: lines longer than 20 words

    # graded pairs (not in the paper): STS-B-style scored pairs, CoSENT on their cosines
    graded_pairs: tuple[str, ...] = ()  # files of scored pairs (STS-B rows; their train split)
    graded_weight: float = 0.0  # weight of the graded loss at every step (0: off, no forwards)
    graded_batch_size: int = 0  # pairs per micro-batch (0 = the SSCL batch)
    graded_scale: float = 20.0  # CoSENT's scale (1 / temperature)

    # KL to the base (not in the paper): the base model's next-token predictions on causal views
    kl_weight: float = 0.0  # weight of KL(base || adapted) at causal views' labels (0: off, no base forwards)

    # loss weights (MNTP, SSCL, MSG) before and after the switch point (paper: 81%)
    weights_before: tuple[float, float, float] = (1.0, 0.0, 1.0)
    weights_after: tuple[float, float, float] = (1.0, 9.0, 1.0)
    switch_at: float = 0.81

    # optimisation
    max_steps: int = 4200
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 3e-5
    warmup_steps: int = 0
    lr_decay: str = "constant"  # after warm-up: constant | cosine (to 10% of lr at max_steps)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    gradient_checkpointing: bool = False
    compile_layers: bool = False  # each decoder layer's forward through torch.compile (loop.compile_layers)
    seed: int = 0
    device: str | None = None
    dtype: str | None = None  # None: bf16 autocast where the hardware has native bf16 (magnet.hardware), else fp32

    # bookkeeping
    checkpoint_every: int = 50
    dist_timeout_s: float = 1800.0  # data parallel: a collective (all-reduce) waiting longer fails the run
    main_wait_s: float = 7200.0  # data parallel: how long the others wait for a checkpoint + quality check
    eval_every: int = 0  # 0 = only at the end
    eval_pairs: int = 0  # STS-B select pairs for the quality check (0 = all)
    eval_stories: int = 200  # ROC select stories for the quality check
    select_stsb: str = ""  # STS-B file whose *select* split the quality check scores (sts-train.csv)
    quality_check: bool = True
    extra: dict = field(default_factory=dict)

    def weights_at(self, step: int) -> tuple[float, float, float]:
        return self.weights_before if step < self.switch_at * self.max_steps else self.weights_after

    def span_range(self) -> tuple[int, int]:
        """Span lengths scaled to the sequence length (paper: 4..128 at 512)."""
        scale = self.max_length / 512
        low = max(1, round(self.span_min * scale))
        return low, max(low, round(self.span_max * scale))

    def gap_distance(self) -> tuple[int, int]:
        from magnet.training.views import gap_distance_range

        return gap_distance_range(self.span_range(), self.gap_jitter)

    @property
    def sscl_batch(self) -> int:
        return self.sscl_batch_size or self.batch_size

    @property
    def graded_batch(self) -> int:
        return self.graded_batch_size or self.sscl_batch

    def __post_init__(self):
        """The settings with a fixed set of values, checked as the config is made (from flags, a
        file or a recipe's phase): a wrong one stops the run before any model loads."""
        for name, allowed in setting_choices().items():
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        return cls.from_dict({**json.loads(Path(path).read_text()), **overrides})

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        tuples = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in raw.items()})

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


LR_DECAYS = ("constant", "cosine")


def setting_choices() -> dict[str, tuple[str, ...]]:
    """{setting: the values it takes} for the settings with a fixed set (imported here, where
    each set is defined: the readings by magnet/masks.py, the augmenters by augment.py)."""
    from magnet.hardware import DTYPES
    from magnet.masks import READING_MODES
    from magnet.training.augment import AUGMENTERS

    return {"context": tuple(READING_MODES), "lr_decay": LR_DECAYS, "augmenter": tuple(AUGMENTERS),
            "dtype": tuple(DTYPES)}
