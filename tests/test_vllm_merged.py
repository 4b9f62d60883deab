"""The merged base+adapter checkpoint that vLLM serves: built once, keyed by content."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from magnet.loading import ModelSpec, load_model
from magnet.merged import MERGE_INFO_FILE, merged_checkpoint


def make_random_lora(base_dir: Path, out_dir: Path, seed: int, scale: float = 0.5) -> Path:
    """Save a peft LoRA on every attention/MLP projection with non-zero random B.

    peft initialises B to zero (a no-op adapter); random B makes the merge visible.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                           "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return [make_random_lora(tiny_model_dir, root / f"lora{seed}", seed) for seed in (1, 2)]


def tiny_spec(model_dir: Path, adapter: Path | None) -> ModelSpec:
    return ModelSpec(model=str(model_dir), adapter=str(adapter) if adapter else None, device="cpu",
                     dtype="float32")  # exact comparisons: not the machine's default dtype


def test_merged_weights_equal_peft_merge(tiny_model_dir, adapters, tmp_path):
    merged_dir = merged_checkpoint(tiny_spec(tiny_model_dir, adapters[0]), root=tmp_path)
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "tokenizer.json").is_file()
    from_cache = load_model(tiny_spec(merged_dir, None)).model
    from_peft = load_model(tiny_spec(tiny_model_dir, adapters[0])).model
    base = load_model(tiny_spec(tiny_model_dir, None)).model
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        cached, merged, plain = (m(ids).logits for m in (from_cache, from_peft, base))
    torch.testing.assert_close(cached, merged)
    assert not torch.allclose(cached, plain, atol=1e-3)  # the adapter changed the model


def test_second_call_reuses_the_cache(tiny_model_dir, adapters, tmp_path, monkeypatch):
    spec = tiny_spec(tiny_model_dir, adapters[0])
    first = merged_checkpoint(spec, root=tmp_path)
    stamp = (first / MERGE_INFO_FILE).stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the merge ran again")

    monkeypatch.setattr("magnet.merged.load_model", fail)
    second = merged_checkpoint(spec, root=tmp_path)
    assert second == first
    assert (second / MERGE_INFO_FILE).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dir left behind


def test_other_adapter_gets_other_dir(tiny_model_dir, adapters, tmp_path):
    one = merged_checkpoint(tiny_spec(tiny_model_dir, adapters[0]), root=tmp_path)
    two = merged_checkpoint(tiny_spec(tiny_model_dir, adapters[1]), root=tmp_path)
    assert one != two
    assert one.parent == two.parent == tmp_path


def test_changed_adapter_content_gets_new_dir(tiny_model_dir, tmp_path):
    adapter = make_random_lora(tiny_model_dir, tmp_path / "adapters" / "lora", seed=3)
    before = merged_checkpoint(tiny_spec(tiny_model_dir, adapter), root=tmp_path / "cache")
    make_random_lora(tiny_model_dir, adapter, seed=4)  # retrained in place: same path
    after = merged_checkpoint(tiny_spec(tiny_model_dir, adapter), root=tmp_path / "cache")
    assert after != before


def test_no_adapter_serves_the_base_itself(tiny_model_dir, tmp_path):
    assert merged_checkpoint(tiny_spec(tiny_model_dir, None), root=tmp_path) == tiny_model_dir
    assert list(tmp_path.iterdir()) == []
