"""A model forward with the mask as an argument: the only way we call a model.

Works for any Hugging Face causal LM whose decoder accepts a 4-D additive
attention mask and position ids (Llama, Mistral, Qwen2, SmolLM, ...), plain or
wrapped by peft. We run the decoder (no vocabulary projection) and project
only the positions whose logits are needed: with a 49k-token vocabulary the
full (B, T, V) logits tensor would dominate time and memory.
"""
from __future__ import annotations

import torch

from magnet.lean import LEAN_ATTRIBUTE
from magnet.masks import AttentionMode, attention_mask, positions_from_padding, roles_for_mode
from magnet.pooling import last_token


def hidden_states(
    model,
    input_ids: torch.Tensor,  # (B, T)
    roles: torch.Tensor,  # (B, T)
    positions: torch.Tensor,  # (B, T)
    cache=None,
    cached_roles: torch.Tensor | None = None,  # (B, K) roles already in the cache
    cached_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T, H) final-layer (normed) outputs; appends to `cache` when given."""
    if cached_roles is None:
        key_roles, key_positions = roles, positions
    else:
        key_roles = torch.cat([cached_roles, roles], dim=1)
        key_positions = torch.cat([cached_positions, positions], dim=1)
    mask = attention_mask(roles, positions, key_roles, key_positions, dtype=model_dtype(model))
    lean = getattr(model, LEAN_ATTRIBUTE, None)  # installed by Engine.from_spec (magnet/lean.py)
    if lean is not None:
        return lean(input_ids, mask, positions, cache)
    out = model.get_decoder()(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=cache is not None,
    )
    return out.last_hidden_state


def layer_states(model, input_ids: torch.Tensor, roles: torch.Tensor, positions: torch.Tensor,
                 layers: list[int]) -> list[torch.Tensor]:
    """(B, T, H) outputs after each of `layers` (1-based; len(decoder.layers) is the final one),
    each through the final norm; no cache. The word vectors of a tagger read a middle layer
    (magnet/tagging/layers.py); the layers after the deepest one asked for are not run."""
    mask = attention_mask(roles, positions, roles, positions, dtype=model_dtype(model))
    lean = getattr(model, LEAN_ATTRIBUTE, None)
    if lean is not None:
        return lean.outputs_after(input_ids, mask, positions, layers)
    decoder = model.get_decoder()  # an architecture LeanDecoder does not cover: all layers, every output kept
    out = decoder(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False,
                  output_hidden_states=True)
    last = len(decoder.layers)  # hidden_states[i]: after layer i, unnormed, but the last is normed
    return [out.last_hidden_state if layer == last else decoder.norm(out.hidden_states[layer]) for layer in layers]


def model_dtype(model) -> torch.dtype:
    return model.get_input_embeddings().weight.dtype


def logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """(..., H) -> (..., V) float32 logits of the chosen positions only."""
    return model.get_output_embeddings()(hidden).float()


def pad_batch(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists -> ids (B, T), padding mask (B, T) (1 = real)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def encode_last_token(model, seqs: list[list[int]], pad_id: int, device,
                      mode: AttentionMode = AttentionMode.BIDIRECTIONAL) -> torch.Tensor:
    """(B, H) last-token outputs: the sentence embedding (paper §3.2.2). Bidirectional for an
    adapted model; causal reads a base model the way it was trained (the paper's base row)."""
    ids, padding = pad_batch(seqs, pad_id, device)  # (B, T)
    roles, positions = roles_for_mode(mode, padding), positions_from_padding(padding)
    lean = getattr(model, LEAN_ATTRIBUTE, None)
    if lean is not None:  # the last layer runs for the pooled column only
        mask = attention_mask(roles, positions, roles, positions, dtype=model_dtype(model))
        return lean.outputs_at(ids, mask, positions, padding.sum(dim=1) - 1)  # right-padded rows
    return last_token(hidden_states(model, ids, roles, positions), padding)  # (B, T, H) -> (B, H)
