"""Evaluations of the loaded model: `magnet eval <benchmark>` (see cli.py)."""
