"""The Llama family's decoder in plain torch calls: every forward of a served model.

A decode step feeds 1-16 tokens through every layer. Its matrix products stream the weights
and take a fixed time; what the Hugging Face module stack adds around them (module calls,
the RMSNorm written as seven ops, keyword plumbing, the mask and cache helpers) is a cost per
op, not per token, and on CPU it is about a seventh of the step. `LeanDecoder` runs the same
computation with the same modules' weights and fewer calls: RMSNorm as one fused op, the
rotary embedding computed once per forward, the cache appended through its own `update`.

A forward without a cache (an embedding or word-vector batch: many short rows) is bound by
the matrix products instead, and then by the elementwise ops between them. Once
`compile_encoder` succeeds, its layers (`encoder_layer`: attention by two batched products
over the grouped heads) run through torch.compile, which fuses the elementwise ops; eager,
they are the decoder's layers without a cache. A prefill reads no cached columns either, so
it runs the same compiled layers and keeps the keys and values they return; decode steps,
which read the cache, stay eager.

    hidden = LeanDecoder(model)(input_ids, mask, positions, cache)   # == decoder(...).last_hidden_state

Only architectures whose layers are exactly Llama's (pre-norm RMSNorm, rotary q/k, SiLU-gated
MLP, optional q/k/v bias: Llama, Mistral, Qwen2, SmolLM) get one; any other model, or any
layer that is not the known class, keeps the Hugging Face forward (`lean_decoder_for`
returns None). The modules are called, not copied, so packed or joined projections
(magnet/packed.py) and LoRA layers work unchanged. tests/test_lean.py holds it to the
Hugging Face forward on random weights.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from magnet.packed import SharedInputMember

log = logging.getLogger(__name__)

# model_type -> the decoder layer class whose forward LeanDecoder reproduces
SUPPORTED_LAYERS = {"llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "qwen2": "Qwen2DecoderLayer"}
LEAN_ATTRIBUTE = "magnet_lean_decoder"  # where Engine.from_spec leaves it on the model (magnet/forward.py reads it)


# Compiled cache-less forwards (embedding, word vectors) of inputs up to this many tokens attend
# by two batched matrix products over the grouped heads (`grouped_attention`); wider inputs take
# the eager layers and SDPA's flash kernel, which never holds the (T, T) scores (at 512:
# B x 9 x 512 x 512 fp32 per layer).
FOLDED_ATTENTION_MAX_WIDTH = 512
# The eager layers fold the query heads of a kv head into its rows (`folded_attention`) for
# inputs up to this many query tokens: decode steps (1 token a span) and narrow prefills.
FOLDED_QUERY_MAX_WIDTH = 64


class LeanDecoder:
    def __init__(self, decoder: torch.nn.Module):
        self.decoder = decoder
        self.compiled_layer = None  # torch.compile's `encoder_layer`, once `compile_encoder` succeeds

    def __call__(self, input_ids: torch.Tensor,  # (B, T)
                 mask: torch.Tensor,  # (B, 1, T, K) additive; K = cached + T columns
                 positions: torch.Tensor,  # (B, T) rotary positions
                 cache=None) -> torch.Tensor:  # transformers Cache; the T new keys/values are appended
        """(B, T, H) final-layer (normed) outputs."""
        return self.outputs_after(input_ids, mask, positions, [len(self.decoder.layers)], cache)[0]

    def outputs_after(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                      layers: list[int], cache=None) -> list[torch.Tensor]:
        """(B, T, H) outputs after each of `layers` (1-based; the last layer's is the model's
        output), each through the final norm, as a probe of a middle layer reads it. The layers
        after the deepest one asked for are not run (so a cache, if given, gets only theirs)."""
        _, _, _, outputs = self.run_layers(input_ids, mask, positions, max(layers), cache, keep=layers)
        return [outputs[layer] for layer in layers]

    def outputs_at(self, input_ids: torch.Tensor,  # (B, T)
                   mask: torch.Tensor,  # (B, 1, T, T) additive
                   positions: torch.Tensor,  # (B, T)
                   at: torch.Tensor) -> torch.Tensor:  # (B,) one column per row
        """(B, H) final (normed) outputs at column `at[b]` of each row, no cache: what a pooled
        embedding reads. The layers before the last run whole; the last needs every column's
        keys and values but the query, attention, output projection and MLP of one column a
        row (`last_layer_at`), which saves ~90% of that layer's products."""
        last = len(self.decoder.layers)
        x, cos, sin, _ = self.run_layers(input_ids, mask, positions, last - 1)
        return rms_norm(last_layer_at(self.decoder.layers[-1], x, cos, sin, mask, at), self.decoder.norm)

    def run_layers(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, count: int,
                   cache=None, keep: list[int] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """The first `count` layers: (B, T, H) their output, the rotary cos and sin (B, 1, T, D)
        every layer reads (the 1 broadcasts over heads), and {layer: its output through the final
        norm} for each layer (1-based) in `keep`. A cache, if given, gets these layers' keys and values."""
        decoder = self.decoder
        x = decoder.embed_tokens(input_ids)  # (B, T, H)
        cos, sin = decoder.rotary_emb(x, positions)  # (B, T, D) each, in x's dtype
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        # the compiled layers take every forward that reads no cached columns: one without a
        # cache, and the prefill that fills an empty one (it keeps the keys and values they return)
        compiled = (self.compiled_layer is not None and input_ids.shape[1] <= FOLDED_ATTENTION_MAX_WIDTH
                    and (cache is None or cache.get_seq_length() == 0))
        outputs = {}
        for index, layer in enumerate(decoder.layers[:count]):
            if compiled:
                x, k, v = self.compiled_layer(layer, x, cos, sin, mask)
                if cache is not None:
                    cache.update(k, v, index)
            else:
                x = decoder_layer(layer, x, cos, sin, mask, cache, index)
            if index + 1 in keep:
                outputs[index + 1] = rms_norm(x, decoder.norm)
        return x, cos, sin, outputs

    @torch.inference_mode()
    def compile_encoder(self) -> bool:
        """Run the cache-less layers (`encoder_layer`) through torch.compile: inductor fuses the
        norms, the rotary embedding, the softmax and the SiLU gate around the matrix products
        (1.17x the embedding rate of the eager layers in bf16: `python bench/bench_core.py
        --compiled`, docs/core.md). Compiled here, for many-row and one-row batches of any
        width (the only shapes it specialises), so that no request waits for it. False, and
        the eager layers kept, where compiling fails (no C++ compiler, an unsupported op) or
        joined projections (magnet/packed.py) keep state between calls."""
        if any(isinstance(module, SharedInputMember) for module in self.decoder.modules()):
            log.info("joined projections: the encoder layers stay eager")
            return False
        compiled = torch.compile(encoder_layer, dynamic=True)
        dtype = self.decoder.embed_tokens.weight.dtype
        try:
            for rows in (2, 1):  # many-row first: its graph has a symbolic row count
                x = torch.zeros(rows, 3, self.decoder.config.hidden_size, dtype=dtype)
                cos, sin = self.decoder.rotary_emb(x, torch.arange(3).repeat(rows, 1))
                compiled(self.decoder.layers[0], x, cos.unsqueeze(1), sin.unsqueeze(1),
                         torch.zeros(rows, 1, 3, 3, dtype=dtype))
        except Exception as exc:  # noqa: BLE001 - any failure to compile leaves the eager layers
            log.warning("torch.compile failed, the encoder layers stay eager: %s",
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            return False
        self.compiled_layer = compiled
        return True


def attention_inputs(attention: torch.nn.Module, normed: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (B, heads, T, D) and k, v (B, kv heads, T, D) of (B, T, H) normed inputs, q and k rotated."""
    batch, width = normed.shape[:2]
    heads = (batch, width, -1, attention.head_dim)
    q = attention.q_proj(normed).view(heads).transpose(1, 2)
    k = attention.k_proj(normed).view(heads).transpose(1, 2)
    v = attention.v_proj(normed).view(heads).transpose(1, 2)
    return rotated(q, cos, sin), rotated(k, cos, sin), v


def attention_output(attention: torch.nn.Module, out: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, D) attended values -> (B, T, H) through the output projection."""
    batch, _, width, _ = out.shape
    return attention.o_proj(out.transpose(1, 2).reshape(batch, width, -1))


def gated_mlp(mlp: torch.nn.Module, normed: torch.Tensor) -> torch.Tensor:
    return mlp.down_proj(F.silu(mlp.gate_proj(normed)) * mlp.up_proj(normed))


def decoder_layer(layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  mask: torch.Tensor, cache, index: int) -> torch.Tensor:
    """One layer, (B, T, H) -> (B, T, H), its keys and values appended to `cache` (when given)."""
    attention = layer.self_attn
    q, k, v = attention_inputs(attention, rms_norm(x, layer.input_layernorm), cos, sin)
    if cache is not None:
        k, v = cache.update(k, v, index)  # (B, kv heads, K, D): the cached columns, then these
    x = x + attention_output(attention, folded_attention(q, k, v, mask, attention.scaling))
    return x + gated_mlp(layer.mlp, rms_norm(x, layer.post_attention_layernorm))


def last_layer_at(layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  mask: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """One layer's output at one column a row, (B, T, H) -> (B, H): keys and values of every
    column (B, kv heads, T, D), the query and everything after attention of column `at` only."""
    attention = layer.self_attn
    rows = torch.arange(x.shape[0], device=x.device)
    normed = rms_norm(x, layer.input_layernorm)  # (B, T, H)
    heads = (x.shape[0], -1, 1, attention.head_dim)  # (B, heads, 1, D)
    q = attention.q_proj(normed[rows, at]).view(heads)
    k = attention.k_proj(normed).view(x.shape[0], x.shape[1], -1, attention.head_dim).transpose(1, 2)
    v = attention.v_proj(normed).view(x.shape[0], x.shape[1], -1, attention.head_dim).transpose(1, 2)
    cos_at, sin_at = cos[rows, :, at].unsqueeze(2), sin[rows, :, at].unsqueeze(2)  # (B, 1, 1, D)
    q, k = rotated(q, cos_at, sin_at), rotated(k, cos, sin)
    out = folded_attention(q, k, v, mask[rows, :, at].unsqueeze(2), attention.scaling)  # mask (B, 1, 1, T)
    h = x[rows, at] + attention.o_proj(out.reshape(x.shape[0], -1))  # (B, H)
    return h + gated_mlp(layer.mlp, rms_norm(h, layer.post_attention_layernorm))


def encoder_layer(layer: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer that reads no cached columns, (B, T, H) -> (B, T, H), and its rotated keys and
    values (B, kv heads, T, D) for a prefill's cache to keep: the function torch.compile fuses."""
    attention = layer.self_attn
    q, k, v = attention_inputs(attention, rms_norm(x, layer.input_layernorm), cos, sin)
    x = x + attention_output(attention, grouped_attention(q, k, v, mask, attention.scaling))
    return x + gated_mlp(layer.mlp, rms_norm(x, layer.post_attention_layernorm)), k, v


def folded_attention(q: torch.Tensor,  # (B, heads, T, D)
                     k: torch.Tensor,  # (B, kv heads, K, D)
                     v: torch.Tensor,  # (B, kv heads, K, D)
                     mask: torch.Tensor,  # (B, 1, T, K) additive
                     scale: float) -> torch.Tensor:  # -> (B, heads, T, D)
    """SDPA with the G query heads of each kv head folded into its rows, (B, kv heads, G*T, D):
    the eager layers' attention (decode steps, prefills wider than the compiled layers take).
    SDPA's own grouped path (`enable_gqa`) on CPU is slow for few query rows: a decode step of
    16 rows over 300 cached columns took 2.45 ms a layer against 0.40 folded, one row 0.18
    against 0.05 (bf16, 2 cores; `python bench/bench_core.py --attention`); from 16 query rows
    up the two are even. The mask is repeated per folded head only when T > 1."""
    batch, heads, width, dim = q.shape
    group = heads // k.shape[1]  # query head h reads kv head h // group, as repeat_kv pairs them
    if width > FOLDED_QUERY_MAX_WIDTH:  # many query rows: SDPA's grouped path is as fast, without a
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,  # G-fold mask copy
                                              enable_gqa=group > 1)
    folded = q.reshape(batch, k.shape[1], group * width, dim)  # row g * T + t: head g of the group, query t
    if width > 1:
        mask = mask.repeat(1, 1, group, 1)  # (B, 1, G*T, K), the same rows for every folded head
    out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask, scale=scale)
    return out.reshape(batch, heads, width, dim)


def grouped_attention(q: torch.Tensor,  # (B, heads, T, D)
                      k: torch.Tensor,  # (B, kv heads, K, D)
                      v: torch.Tensor,  # (B, kv heads, K, D)
                      mask: torch.Tensor,  # (B, 1, T, K) additive
                      scale: float) -> torch.Tensor:  # -> (B, heads, T, D)
    """softmax(q k^T scale + mask) v with the G query heads of each kv head folded into its
    rows: two batched products, k and v never repeated. Compiled, the scaling, the mask and the
    softmax fuse around the two products, where SDPA stays one opaque kernel (tuned for long
    rows, not an embedding batch's many rows of ~30 tokens). The scores are fp32: bf16 keeps
    only 2-3 significant digits of them."""
    batch, heads, width, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads  # query head h reads kv head h // group, as repeat_kv pairs them
    scores = torch.matmul(q.reshape(batch, kv_heads, group * width, dim).float(), k.transpose(-1, -2).float())
    scores = scores.view(batch, kv_heads, group, width, -1) * scale + mask.unsqueeze(1)
    probs = scores.softmax(-1).to(v.dtype).view(batch, kv_heads, group * width, -1)
    return torch.matmul(probs, v).view(batch, heads, width, dim)


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


def install_lean_decoder(model: torch.nn.Module, compile_encoder: bool = False) -> bool:
    """Let magnet.forward run `model`'s forwards through a LeanDecoder (its encoder layers
    compiled, if asked and possible); False (and nothing changed) where the architecture is
    not supported."""
    lean = lean_decoder_for(model)
    if lean is not None:
        if compile_encoder:
            lean.compile_encoder()
        object.__setattr__(model, LEAN_ATTRIBUTE, lean)  # a plain attribute, not a submodule
    return lean is not None
