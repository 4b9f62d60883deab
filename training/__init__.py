"""Training: MAGNET adaptation of a causal LM (LoRA) and tagging heads."""
