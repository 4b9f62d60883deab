"""The difference LoRA: the merged default plus it is exactly another adapter's model (or the base),
so one vLLM engine serves every adapter per request."""
from __future__ import annotations

import json

import pytest
import torch
from test_vllm_merged import make_random_lora, tiny_spec

from magnet.loading import load_model
from magnet.lora_delta import adapter_rank, delta_adapter
from magnet.merged import merged_checkpoint

IDS = torch.tensor([[3, 4, 5, 6, 7, 8]])


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("delta-adapters")
    return [make_random_lora(tiny_model_dir, root / f"lora{seed}", seed) for seed in (11, 12)]


def logits(model) -> torch.Tensor:
    with torch.inference_mode():
        return model(IDS).logits


def merged_plus(merged_dir, delta_dir):
    """The merged checkpoint with the delta applied by peft: what vLLM computes per request."""
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model(tiny_spec(merged_dir, None)).model, str(delta_dir))


@pytest.mark.parametrize("target", [1, None], ids=["another-adapter", "the-base"])
def test_merged_default_plus_the_delta_is_the_target_model(tiny_model_dir, adapters, target, tmp_path):
    default = adapters[0]
    wanted = adapters[target] if target is not None else None
    merged_dir = merged_checkpoint(tiny_spec(tiny_model_dir, default), root=tmp_path)
    delta_dir = delta_adapter(default, wanted, root=tmp_path)
    expected = logits(load_model(tiny_spec(tiny_model_dir, wanted)).model)
    got = logits(merged_plus(merged_dir, delta_dir))
    assert (got - expected).abs().max() < 1e-4
    default_logits = logits(load_model(tiny_spec(tiny_model_dir, default)).model)
    assert (default_logits - expected).abs().max() > 1e-2  # the delta really moves the model
    assert adapter_rank(delta_dir) == 4 + (4 if wanted else 0)  # ranks add up


def test_the_delta_is_written_once_and_keyed_by_both_adapters(adapters, tmp_path):
    first = delta_adapter(adapters[0], adapters[1], root=tmp_path)
    mtime = (first / "adapter_model.safetensors").stat().st_mtime_ns
    assert delta_adapter(adapters[0], adapters[1], root=tmp_path) == first
    assert (first / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert delta_adapter(adapters[1], adapters[0], root=tmp_path) != first
    assert delta_adapter(adapters[0], None, root=tmp_path) != first


def test_an_adapter_that_is_not_plain_lora_is_refused_by_name(adapters, tmp_path):
    import shutil

    dora = shutil.copytree(adapters[1], tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora"):
        delta_adapter(adapters[0], dora, root=tmp_path)
