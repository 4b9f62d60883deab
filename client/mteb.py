"""The served model as an MTEB encoder: `encode(sentences, **kwargs) -> np.ndarray`.

    import mteb
    from magnet.client import MagnetEncoder
    mteb.MTEB(tasks=mteb.get_tasks(tasks=["STSBenchmark"])).run(MagnetEncoder(), output_folder="results")

MTEB passes keywords of its own (task_name, prompt_type, ...): batch_size and
show_progress_bar are used, the rest ignored (one instruction for every task).
Inputs over the token limit are cut (truncate=True), as sentence-transformers
cuts them, so long retrieval documents do not fail a run.
"""
from __future__ import annotations

from collections.abc import Sequence

from magnet.client.sync import MagnetClient


class MagnetEncoder:
    def __init__(self, client: MagnetClient | None = None, *, instruction: str | None = None,
                 batch_size: int = 32, truncate: bool = True, **client_kwargs):
        """`client`, or a MagnetClient made from client_kwargs (base_url, api_key, ...)."""
        self.client = client if client is not None else MagnetClient(**client_kwargs)
        self.instruction = instruction  # None: the adapter's own
        self.batch_size = batch_size
        self.truncate = truncate

    def encode(self, sentences: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool = False,
               **kwargs):
        """(N, H) float32 numpy array of unit vectors, in input order."""
        return self.client.encode(list(sentences), batch_size=batch_size or self.batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=show_progress_bar, instruction=self.instruction,
                                  truncate=self.truncate)
