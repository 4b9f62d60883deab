"""Magnet: one decoder-only LLM as encoder, tagger, infiller and generator.

Importing `magnet` (and `magnet.client`, `magnet.protocol`) needs no torch; the
model stack lives in submodules imported on demand.
"""
__version__ = "0.1.0"
