"""Structured output on the torch path: a span (a generation, or an infill's fill) constrained
to one of a list of choices, a regex, a JSON schema or any JSON object, with xgrammar (what
vLLM uses by default; bench/bench_grammar.py measures it against llguidance).

    grammar = span_grammar(tokenizer, StructuredOutput(choice=("yes", "no")), leading_spaces=0)
    logits, must_end = grammar.mask(logits, ends)   # (V,): tokens that cannot continue -> -inf
    grammar.accept(token)

The end tokens (EOS; an infill's end token, the text after its gap) end a span only once the
match is complete (before, the grammar decides whether one may be written as text), and a span
ends by itself when nothing but an end may follow. An infill
moves the spaces before its gap into the fill (magnet/layout.py), so its grammar matches
those spaces first (`leading_spaces`); the fill returned has them cut again.
"""
from __future__ import annotations

import json
import re
import threading
import weakref

import torch

from magnet.errors import InvalidInputError
from magnet.sampling import StructuredOutput

ANY_OBJECT = '{"type": "object"}'  # json_object: any JSON object
# Compiled grammars a compiler keeps (xgrammar's default keeps every one: requests choose the
# grammars, so memory would grow with every new regex or schema; a 600-character regex is ~3 MiB)
GRAMMAR_CACHE_BYTES = 256 * 2**20
# tokenizer -> (vocab size, GrammarCompiler); weak: a model unloaded (an adapter, a LoRA) lets go of its compiler
_compilers: "weakref.WeakKeyDictionary[object, tuple[int, object]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def compiler_for(tokenizer, vocab_size: int):
    """One xgrammar compiler per tokenizer (building its vocabulary index takes ~1 s; compiled
    grammars are cached inside it, up to GRAMMAR_CACHE_BYTES)."""
    import xgrammar as xgr

    with _lock:
        held = _compilers.get(tokenizer)
        if held is None or held[0] != vocab_size:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                      stop_token_ids=[tokenizer.eos_token_id])
            held = (vocab_size, xgr.GrammarCompiler(info, cache_limit_bytes=GRAMMAR_CACHE_BYTES))
            _compilers[tokenizer] = held
        return held[1]


def compile_spec(tokenizer, vocab_size: int, spec: StructuredOutput, leading_spaces: int = 0):
    """The spec as an xgrammar CompiledGrammar; a spec that does not compile is the caller's (422)."""
    compiler = compiler_for(tokenizer, vocab_size)
    lead = " " * leading_spaces
    try:
        if spec.choice is not None:
            return compiler.compile_grammar("root ::= " + " | ".join(json.dumps(lead + c) for c in spec.choice))
        if spec.regex is not None:
            return compiler.compile_regex(f"{lead}({spec.regex})" if lead else spec.regex)
        # Compact JSON (no free whitespace): a small model left free to add spaces and newlines
        # may spend its whole budget on them.
        return compiler.compile_json_schema(spec.json if spec.json is not None else ANY_OBJECT, any_whitespace=False)
    except InvalidInputError:
        raise
    except Exception as exc:  # xgrammar's parse errors: RuntimeError, ValueError, its own classes
        what = "regex" if spec.regex is not None else "JSON schema" if spec.json is not None else "choice list"
        raise InvalidInputError(f"the {what} does not compile: {library_message(exc)}") from None


def library_message(exc: Exception) -> str:
    """xgrammar's message without its log prefix ("[time] /path/file.cc:83: ")."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\] \S+:\d+: ", "", line)[:300]


class SpanGrammar:
    """One span's matcher: where in the grammar its tokens so far have led."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    @property
    def complete(self) -> bool:
        """The tokens so far are a whole match: an end token may close the span here."""
        return self.matcher.is_completed()

    def mask(self, logits: torch.Tensor, ends: list[int]) -> tuple[torch.Tensor, bool]:
        """(V,) logits with every token the grammar refuses at -inf (a new tensor); and whether
        the span must end here. Once the match is complete the end tokens are allowed, as ends.
        Before, an end token is text like any other, kept where the grammar allows it: a fill
        whose answer starts as the text after its gap does ("," before ", he said.") must be
        able to write it (magnet/decoding.py `accept` keeps it as text). The span must end
        where only an end may follow, or where nothing may (a dead end, which a grammar that
        compiled for this vocabulary does not reach)."""
        import xgrammar as xgr

        self.matcher.fill_next_token_bitmask(self.bitmask)
        masked = logits.float().clone()[None]  # (1, V): xgrammar's kernel edits in place
        xgr.apply_token_bitmask_inplace(masked, self.bitmask)
        masked = masked[0]
        text = torch.isfinite(masked)
        if self.complete:
            masked[ends] = logits[ends].float()
            text[ends] = False
        return masked, not bool(text.any())

    def accept(self, token: int) -> None:
        if not self.matcher.accept_token(token):  # the mask allowed it, so this is a bug
            raise RuntimeError(f"token {token} broke the grammar it was sampled under")


def span_grammar(tokenizer, vocab_size: int, spec: StructuredOutput | None,
                 leading_spaces: int = 0) -> SpanGrammar | None:
    if spec is None:
        return None
    return SpanGrammar(compile_spec(tokenizer, vocab_size, spec, leading_spaces), vocab_size)
