"""What `encode()` (sentence-transformers' call) needs on both clients: batching, the output
form, the progress bar. No I/O, and numpy/tqdm only imported when asked for.

    vectors = client.encode(["a", "b", ...])   # any number of texts -> (N, H) numpy array
    vector = client.encode("a")                 # one text -> (H,)
"""
from __future__ import annotations

import base64
import sys

from magnet.errors import InvalidInputError
from magnet.protocol import MAX_INPUTS

ASYNC_CONCURRENCY = 4  # batches in flight at once from AsyncMagnetClient.encode


def batches(texts: list[str], batch_size: int) -> list[list[str]]:
    """Consecutive slices of at most batch_size texts (capped at the server's MAX_INPUTS)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = min(batch_size, MAX_INPUTS)
    return [texts[start:start + size] for start in range(0, len(texts), size)]


def as_text_list(sentences: str | list[str]) -> list[str]:
    """The texts, checked before any request: a bad one is named by its place in the whole list."""
    texts = [sentences] if isinstance(sentences, str) else list(sentences)  # any iterable of str
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"sentences[{i}] is {'empty' if isinstance(text, str) else type(text).__name__}: "
                                    "every sentence must be a string with some non-blank content")
    return texts


def require_numpy():
    """numpy, or an ImportError that says what to do (the bare client does not install it)."""
    try:
        import numpy
    except ImportError:
        raise ImportError("encode(convert_to_numpy=True) needs numpy: `pip install numpy`, "
                          "or pass convert_to_numpy=False to get lists of floats") from None
    return numpy


def wire_format(convert_to_numpy: bool) -> str:
    """How encode() asks for vectors: base64 float32 when they end in a numpy array (read with
    frombuffer, no float parsing, ~3x fewer bytes), floats when the caller wants lists."""
    return "base64" if convert_to_numpy else "float"


def shaped(rows: list[list[float]] | list[str], single: bool, convert_to_numpy: bool):
    """(N, H) rows as sentence-transformers returns them: a float32 array (or lists); one row
    for a single str input. Rows may be base64 float32 (wire_format)."""
    if convert_to_numpy:
        numpy = require_numpy()
        if rows and isinstance(rows[0], str):
            array = numpy.stack([numpy.frombuffer(base64.b64decode(row), dtype="<f4") for row in rows])
            array = array.astype(numpy.float32)  # native byte order, writable
        else:
            array = numpy.asarray(rows, dtype=numpy.float32) if rows else numpy.empty((0, 0), numpy.float32)
        return array[0] if single else array
    return rows[0] if single else rows


class Progress:
    """A tqdm bar when tqdm is installed, else a line rewritten on stderr; silent when off."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.bar = total, 0, enabled, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc="encode", unit="text")

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            print(f"\rencode: {self.done}/{self.total} texts", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)
