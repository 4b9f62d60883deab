"""The one loader: local checkpoints, adapters that fit and adapters that do not."""
from __future__ import annotations

import pytest
import torch

from magnet.loading import AdapterMismatchError, ModelSpec, load_model, pick_dtype
from magnet.manifest import AdapterManifest, BaseIdentity


def save_random_lora(loaded, path, seed=0):
    """A peft LoRA adapter with non-zero B (so it changes outputs), plus its manifest."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(path)
    AdapterManifest(base=loaded.base).save(path)
    model.unload()  # leave the shared fixture model as it was
    return path


def test_adapter_is_merged_and_changes_outputs(tiny_model_dir, tmp_path):
    plain = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu"))
    adapter = save_random_lora(load_model(ModelSpec(model=str(tiny_model_dir), adapter=None)), tmp_path / "a")
    adapted = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter), device="cpu"))
    assert not hasattr(adapted.model, "peft_config")  # merged into plain Linear weights
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.inference_mode():
        assert (plain.model(ids).logits - adapted.model(ids).logits).abs().max() > 1e-4
    assert adapted.name.endswith("+a") and adapted.manifest.base == plain.base


def test_an_adapter_for_another_base_fails_naming_both(tiny_model_dir, tmp_path):
    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None))
    adapter = save_random_lora(loaded, tmp_path / "other")
    wrong = BaseIdentity("Llama-2-7b", "llama", 4096, 32, 32000)
    AdapterManifest(base=wrong).save(adapter)
    with pytest.raises(AdapterMismatchError, match=r"Llama-2-7b.*tiny-llama.*hidden_size: 4096 != 32"):
        load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter)))


def test_an_adapter_without_manifest_that_does_not_fit_still_fails_clearly(tiny_model_dir, tmp_path):
    from conftest import build_tiny_llama

    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None))
    adapter = save_random_lora(loaded, tmp_path / "nomanifest")
    (adapter / "magnet.json").unlink()
    bigger = tmp_path / "bigger"
    model = build_tiny_llama(loaded.model.config.vocab_size)
    model.config.hidden_size = 48
    type(model)(model.config).save_pretrained(bigger)
    loaded.tokenizer.save_pretrained(bigger)
    with pytest.raises(AdapterMismatchError, match="does not fit base bigger"):
        load_model(ModelSpec(model=str(bigger), adapter=str(adapter)))


def test_missing_paths_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(ModelSpec(model=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        from magnet.loading import resolve_adapter_path

        resolve_adapter_path(str(tmp_path))


def test_dtype_defaults_to_bf16_only_on_cpus_with_native_bf16_and_refuses_unknown_names(monkeypatch):
    import magnet.hardware

    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: False)
    assert pick_dtype(None, torch.device("cpu")) == torch.float32
    monkeypatch.setattr(magnet.hardware, "cpu_has_native_bf16", lambda: True)
    assert pick_dtype(None, torch.device("cpu")) == torch.bfloat16
    assert pick_dtype("float32", torch.device("cpu")) == torch.float32  # --dtype wins
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        pick_dtype("int3", torch.device("cpu"))


def test_the_adapter_digest_is_taken_when_the_weights_are_loaded(tiny_model_dir, tmp_path):
    """Caches and tagging heads key on what was loaded, even if the file is replaced later."""
    from peft import LoraConfig, get_peft_model

    from magnet.loading import ModelSpec, load_model, weights_sha256
    from magnet.tagging.features import engine_identity

    loaded = load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu"))
    lora = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    lora.save_pretrained(tmp_path / "adapter")
    with_adapter = load_model(ModelSpec(model=str(tiny_model_dir), adapter=str(tmp_path / "adapter"), device="cpu"))
    digest = weights_sha256(tmp_path / "adapter")
    assert with_adapter.adapter_sha256 == digest
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"replaced")

    class Holder:
        loaded = with_adapter

    assert engine_identity(Holder()).adapter.sha256 == digest
