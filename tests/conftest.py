"""Shared fixtures: a tiny random-weight Llama with a tiny byte-level BPE tokenizer.

Built in the test process (no download); saved to a temp dir so tests go
through the same loader as real deployments.
"""
from __future__ import annotations

import pytest

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the stage.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "She walked to the store, bought some milk, and came back home.",
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn lives in Brussels and works for the European Commission .",
]


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "_"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TINY_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def build_tiny_llama(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(autouse=True)
def seeded_global_generators():
    """Every test starts from the same state of Python's, numpy's and torch's global random
    generators, whatever ran before it: a test that draws from them gets the same draws alone
    or in any order of the suite (an assertion that holds for some draws only then fails every
    run, not one test order in many)."""
    import random

    import numpy
    import torch

    random.seed(0)
    numpy.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama checkpoint directory (config, safetensors, tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_llama(len(tokenizer))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    from magnet.loading import ModelSpec, load_model

    # float32 pinned: the default (bf16 on CPUs with native bf16) would make exact comparisons machine-dependent
    return load_model(ModelSpec(model=str(tiny_model_dir), adapter=None, device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_loaded):
    from magnet.engine import Engine

    return Engine(tiny_loaded)


# ChatML, the format of SmolLM2-Instruct's own template (without its default system turn).
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_chat_engine(tiny_engine):
    """tiny_engine whose tokenizer has a chat template, for the tests of one module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_engine.tokenizer, "chat_template", TINY_CHAT_TEMPLATE)
        yield tiny_engine


@pytest.fixture(scope="module")
def hub_client_may_reach_loopback():
    """The test run sets HF_HUB_OFFLINE=1 (no hub downloads), and huggingface_hub then refuses
    every request, even to a local server: its clients may reach the loopback server again."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        yield
