"""One loader for serving, training and evaluation: base model + optional adapter.

    spec = ModelSpec()                      # embedded SmolLM2 + the shipped adapter
    spec = ModelSpec(model="/ckpt/llama-2-7b", adapter="/runs/magnet-7b")
    loaded = load_model(spec)               # -> LoadedModel(model, tokenizer, ...)

A LoRA adapter is merged into the base weights for inference speed (merge=False
keeps the peft wrapper, which training uses to resume).
"""
from __future__ import annotations

import hashlib

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from magnet.adapter_checks import check_adapter_files, check_test_forward
from magnet.embedded import EMBEDDED_NAME, embedded_checkpoint
from magnet.hardware import default_dtype, parse_dtype
from magnet.manifest import AdapterManifest, BaseIdentity

log = logging.getLogger(__name__)

DEFAULT_ADAPTER_DIR = Path(__file__).parent / "defaults" / "adapter"


class AdapterMismatchError(ValueError):
    """The adapter was trained for a different base model."""


@dataclass(frozen=True)
class ModelSpec:
    model: str | None = None  # local HF checkpoint dir; None = the embedded default
    adapter: str | None = "default"  # dir; "default" = shipped adapter; None = base only
    device: str | None = None  # None = cuda if available, else cpu
    dtype: str | None = None  # None = the device's fast dtype (magnet.hardware.default_dtype)
    merge: bool = True


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    base_path: Path
    base: BaseIdentity
    adapter_path: Path | None
    manifest: AdapterManifest | None
    adapter_sha256: str | None = None  # of the weights as loaded (the file may change later)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        """Public model id: base name, plus the adapter's folder name."""
        if self.adapter_path is None:
            return self.base.name
        return f"{self.base.name}+{self.adapter_path.name}"


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """`dtype` by name, or the device's fast one (magnet/hardware.py: bf16 on CUDA and on CPUs
    with native bf16, fp32 on other CPUs)."""
    return parse_dtype(dtype) if dtype else default_dtype(device)


def resolve_base_path(model: str | None) -> Path:
    if model is None or model in ("default", EMBEDDED_NAME):
        return embedded_checkpoint()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {model}: expected a local Hugging Face checkpoint directory with "
            "config.json (weights are never downloaded at run time)"
        )
    return path


def resolve_adapter_path(adapter: str | None) -> Path | None:
    if adapter in (None, "", "none"):
        return None
    if adapter == "default":
        if (DEFAULT_ADAPTER_DIR / "adapter_config.json").is_file():
            return DEFAULT_ADAPTER_DIR
        log.warning("no default adapter is shipped in %s: serving the base model", DEFAULT_ADAPTER_DIR)
        return None
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--adapter {adapter}: no adapter_config.json in that directory")
    return path


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(path: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()


def check_adapter_fits(base: BaseIdentity, manifest: AdapterManifest | None, adapter_path: Path) -> None:
    if manifest is None:
        return
    problems = manifest.base.mismatch(base)
    if problems:
        raise AdapterMismatchError(
            f"adapter {adapter_path} was trained for {manifest.base.name}, "
            f"not for {base.name} ({'; '.join(problems)})"
        )


def attach_adapter(model, adapter_path: Path, base: BaseIdentity, merge: bool):
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(model, adapter_path, is_trainable=not merge)
    except (RuntimeError, ValueError, KeyError) as exc:  # shape or module-name mismatch
        raise AdapterMismatchError(
            f"adapter {adapter_path} does not fit base {base.name}: {str(exc).splitlines()[0]}"
        ) from exc
    return model.merge_and_unload() if merge else model


def load_model(spec: ModelSpec = ModelSpec()) -> LoadedModel:
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    base_path = resolve_base_path(spec.model)
    adapter_path = resolve_adapter_path(spec.adapter)
    model = load_base(base_path, device, dtype)
    base = BaseIdentity.of(model.config, base_name(base_path, model.config))
    if adapter_path is not None:
        check_adapter_files(adapter_path)  # readable, finite: before anything reads it
    manifest = AdapterManifest.load(adapter_path) if adapter_path else None
    sha256 = None
    tokenizer = load_tokenizer(base_path)
    if adapter_path is not None:
        check_adapter_fits(base, manifest, adapter_path)
        sha256 = weights_sha256(adapter_path)
        model = attach_adapter(model, adapter_path, base, spec.merge)
        model.eval()
        check_test_forward(model, tokenizer, adapter_path)  # finite outputs, or it is not served
    return LoadedModel(model, tokenizer, base_path, base, adapter_path, manifest, sha256)


def weights_sha256(adapter_path: Path) -> str:
    """sha256 of an adapter's weights file: what caches and tagging heads are keyed on."""
    weights = sorted(Path(adapter_path).glob("adapter_model.*"))
    if not weights:
        raise FileNotFoundError(f"no adapter_model.* weights in {adapter_path}")
    return hashlib.sha256(weights[0].read_bytes()).hexdigest()


def base_name(path: Path, config) -> str:
    name = getattr(config, "name_or_path", "") or ""
    return Path(name).name if name and not Path(name).is_absolute() else path.name

