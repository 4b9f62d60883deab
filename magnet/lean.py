"""The Llama family's decoder in plain torch calls, for the forwards that fill a KV cache.

A decode step feeds 1-16 tokens through every layer. Its matrix products stream the weights
and take a fixed time; what the Hugging Face module stack adds around them (module calls,
the RMSNorm written as seven ops, keyword plumbing, the mask and cache helpers) is a cost per
op, not per token, and on CPU it is about a seventh of the step. `LeanDecoder` runs the same
computation with the same modules' weights and fewer calls: RMSNorm as one fused op, the
rotary embedding computed once per forward, the cache appended through its own `update`.

    hidden = LeanDecoder(model)(input_ids, mask, positions, cache)   # == decoder(...).last_hidden_state

Only architectures whose layers are exactly Llama's (pre-norm RMSNorm, rotary q/k, SiLU-gated
MLP, optional q/k/v bias: Llama, Mistral, Qwen2, SmolLM) get one; any other model, or any
layer that is not the known class, keeps the Hugging Face forward (`lean_decoder_for`
returns None). The modules are called, not copied, so packed or joined projections
(magnet/packed.py) and LoRA layers work unchanged. tests/test_lean.py holds it to the
Hugging Face forward on random weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# model_type -> the decoder layer class whose forward LeanDecoder reproduces
SUPPORTED_LAYERS = {"llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "qwen2": "Qwen2DecoderLayer"}
LEAN_ATTRIBUTE = "magnet_lean_decoder"  # where Engine.from_spec leaves it on the model (magnet/forward.py reads it)


class LeanDecoder:
    def __init__(self, decoder: torch.nn.Module):
        self.decoder = decoder

    def __call__(self, input_ids: torch.Tensor,  # (B, T)
                 mask: torch.Tensor,  # (B, 1, T, K) additive; K = cached + T columns
                 positions: torch.Tensor,  # (B, T) rotary positions
                 cache) -> torch.Tensor:  # transformers Cache; the T new keys/values are appended
        """(B, T, H) final-layer (normed) outputs."""
        decoder = self.decoder
        x = decoder.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = decoder.rotary_emb(x, positions)  # (B, T, D) each, in x's dtype
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        batch, width = input_ids.shape
        for index, layer in enumerate(decoder.layers):
            attention, mlp = layer.self_attn, layer.mlp
            heads = (batch, width, -1, attention.head_dim)
            normed = rms_norm(x, layer.input_layernorm)
            q = attention.q_proj(normed).view(heads).transpose(1, 2)  # (B, heads, T, D)
            k = attention.k_proj(normed).view(heads).transpose(1, 2)  # (B, kv heads, T, D)
            v = attention.v_proj(normed).view(heads).transpose(1, 2)
            q, k = rotated(q, cos, sin), rotated(k, cos, sin)
            k, v = cache.update(k, v, index)  # (B, kv heads, K, D): the cached columns, then these
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attention.scaling, enable_gqa=True)
            x = x + attention.o_proj(out.transpose(1, 2).reshape(batch, width, -1))
            normed = rms_norm(x, layer.post_attention_layernorm)
            x = x + mlp.down_proj(F.silu(mlp.gate_proj(normed)) * mlp.up_proj(normed))
        return rms_norm(x, decoder.norm)


def rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """Llama's RMSNorm (normalised in float32, scaled in the model's dtype) as one fused op."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon)
    return norm.weight * normed.to(x.dtype)


def rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding with Llama's half-split pairing: x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def lean_decoder_for(model: torch.nn.Module) -> LeanDecoder | None:
    """A LeanDecoder over `model`'s decoder, or None where its layers are not Llama's."""
    config = model.config
    layer_class = SUPPORTED_LAYERS.get(getattr(config, "model_type", None))
    decoder = model.get_decoder()
    if layer_class is None or getattr(config, "hidden_act", None) != "silu":
        return None
    if not all(type(layer).__name__ == layer_class for layer in decoder.layers):
        return None
    if not hasattr(decoder, "rotary_emb"):
        return None
    return LeanDecoder(decoder)


def install_lean_decoder(model: torch.nn.Module) -> bool:
    """Let magnet.forward run `model`'s cache-filling forwards through a LeanDecoder; False
    (and nothing changed) where the architecture is not supported."""
    lean = lean_decoder_for(model)
    if lean is not None:
        object.__setattr__(model, LEAN_ATTRIBUTE, lean)  # a plain attribute, not a submodule
    return lean is not None
