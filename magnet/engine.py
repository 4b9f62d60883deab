"""The in-process engine: one loaded model, an attention mode per call.

    engine = Engine.from_spec(ModelSpec())
    engine.embed(["A man plays a guitar."])             # bidirectional, last-token pooling
    engine.token_states(texts, word_spans)              # bidirectional, token i from output i-1
    engine.infill(["The cat ", " on the mat."], params) # hybrid: prefill context, decode the gap
    engine.generate("Once upon a time", params)         # causal, KV cache

Synchronous and thread-confined: the server calls it from one worker thread.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterator

import torch

from magnet.batch import DecodeBatch, run_to_end
from magnet.decodes import GenerateDecode, InfillDecode
from magnet.decoding import Span, make_generator
from magnet.errors import InvalidInputError
from magnet.forward import encode_last_token, hidden_states, layer_states, logits, pad_batch
from magnet.layout import InfillLayout, anchor_token_id, embedding_ids, infill_layout, split_trailing_spaces
from magnet.limits import cut_to_chars, prompt_token_ids, require_fits, require_fitting_chars, require_max_tokens
from magnet.loading import LoadedModel, ModelSpec, load_model
from magnet.logprobs import sequence_logprobs
from magnet.manifest import DEFAULT_INSTRUCTION
from magnet.kv_cache import GrowingCache
from magnet.masks import AttentionMode, context_mode, gap_predictor_role, positions_from_padding, roles_for_mode
from magnet.lean import install_lean_decoder
from magnet.narrow import Tiers, narrow_linears
from magnet.packed import pack_linears, packs_by_default
from magnet.pooling import WORD_READINGS, word_means, word_membership
from magnet.sampling import (INFILL_DEFAULTS, Completion, InfillCompletion, SamplingParams, StreamChunk,
                             StructuredOutput, completion_of)
from magnet.structured import compile_spec, span_grammar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    max_length: int = 2048  # tokens per input (capped by the model's context size)
    # padded tokens per forward when embedding: 256 texts of ~31 tokens ran 1,761 tok/s at 2048,
    # 1,641 at 1536, 1,647 at 3072 and 1,570 at 4096 (bf16, 2 cores, compiled layers;
    # `python bench/bench_core.py --budgets 2048 4096 3072 1536 --batch 256 --repeat 5`)
    embed_batch_tokens: int = 2048
    gap_positions: int | None = None  # text positions reserved per gap; None: what the adapter was trained on
    end_threshold: float = 0.01  # a fill ends once the text after its gap gets this probability
    min_fill_tokens: int = 1  # a fill is never empty
    # oneDNN-packed weights on CPU (magnet/packed.py); False: plain nn.Linear; None: packed in
    # the dtypes where packing was measured to pay (bf16: magnet.packed.PACKED_BY_DEFAULT)
    pack_linears: bool | None = None
    # packed q/k/v and gate/up as one product each (magnet/packed.py): a decode step gains a few
    # per cent, embedding batches lose ~9% (docs/core.md), so off unless asked
    join_projections: bool = False
    # every forward of Llama-family models in plain torch calls (magnet/lean.py): the same
    # outputs, a decode step 0.79x (infill) to 0.96x (generate) the time (bench/bench_core.py
    # --lean, docs/core.md); False: the Hugging Face forward
    lean_decode: bool = True
    # on CPU, the lean forward's cache-less layers (embedding, word vectors) through
    # torch.compile, compiled while the engine loads (~15-20 s): 1.17x the embedding rate in
    # bf16 (bench/bench_core.py --compiled, docs/core.md); eager where it cannot compile
    compile_encoder: bool = True
    # on CPUs that compute in fp32, the kernels of narrow products (decode steps): bf16 copies of
    # the weights, half the bytes, then oneDNN-packed fp32 (magnet/narrow.py); None: the tiers
    # measured to pay while the engine loads; Tiers(): every product the plain fp32 one
    narrow_tiers: Tiers | None = None


@dataclass(frozen=True)
class WordInput:
    """One text as the word-vector forward reads it (Engine.word_inputs)."""

    ids: list[int]  # [anchor] + the text's tokens
    offsets: list[tuple[int, int]]  # the characters of each text token (not the anchor)


@dataclass
class EmbedResult:
    embeddings: torch.Tensor  # (N, H) float32, CPU, input order
    prompt_tokens: int


def batches_by_tokens(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices sorted by length, grouped so that (rows x longest) stays within budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, current = [], []
    for i in order:
        if current and (len(current) + 1) * lengths[i] > budget:
            groups.append(current)
            current = []
        current.append(i)
    return groups + ([current] if current else [])


class Engine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig = EngineConfig(), narrow: Tiers = Tiers()):
        self.loaded = loaded
        self.narrow = narrow  # the kernels of narrow products (magnet/narrow.py)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = config
        self.name = loaded.name
        context = getattr(self.model.config, "max_position_embeddings", config.max_length)
        self.max_length = min(config.max_length, context)
        self.instruction = loaded.manifest.instruction if loaded.manifest else DEFAULT_INSTRUCTION
        tok = self.tokenizer
        self.anchor_id = anchor_token_id(tok)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.gap_range = trained_gap_range(loaded.manifest)
        self.infill_context = infill_context_mode(loaded.manifest)
        self.n_layers = self.model.config.num_hidden_layers  # word vectors may read any of them (1-based)

    @classmethod
    def from_spec(cls, spec: ModelSpec = ModelSpec(), config: EngineConfig = EngineConfig()) -> "Engine":
        loaded = load_model(spec)
        pack = packs_by_default(loaded.model) if config.pack_linears is None else config.pack_linears
        if pack and spec.merge:  # frozen weights: safe to re-lay out for this CPU
            packed = pack_linears(loaded.model, join_shared_inputs=config.join_projections)
            log.info("%s: %d linear layers packed for oneDNN", loaded.name, packed)
        narrow = narrow_linears(loaded.model, config.narrow_tiers) if spec.merge else Tiers()  # packed ones stay
        if narrow:
            log.info("%s: narrow products by rows: %s (magnet/narrow.py)", loaded.name, narrow.describe())
        compile_encoder = config.compile_encoder and loaded.model.device.type == "cpu"  # measured on CPU only
        if config.lean_decode and install_lean_decoder(loaded.model, compile_encoder):
            log.info("%s: forwards run through magnet.lean", loaded.name)
        return cls(loaded, config, narrow)

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    # ---- tokens -------------------------------------------------------------

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def check_length(self, n_tokens: int, what: str, hint: str = "set truncate=true") -> None:
        require_fits(n_tokens, self.max_length, what, hint)

    # ---- bidirectional: sentence embeddings ---------------------------------

    def embed_ids(self, text: str, instruction: str, truncate: bool) -> list[int]:
        """[anchor] instruction text [EOS]; truncation cuts the text, never the ends."""
        return self.embedding_row(self.tokens(instruction), self.tokens(text), truncate)

    def embedding_row(self, head: list[int], body: list[int], truncate: bool, cut_left: bool = False) -> list[int]:
        if len(head) + len(body) + 2 > self.max_length and not truncate:
            self.check_length(len(head) + len(body) + 2, "an input (with its instruction)")
        return embedding_ids(self.anchor_id, self.tokenizer.eos_token_id, head, body, self.max_length, cut_left)

    def embedding_inputs(self, texts: list[str], instruction: str | None = None,
                         truncate: bool = False, cut_left: bool = False) -> list[list[int]]:
        """Every text's `embed_ids`, checked (a text too long without `truncate`: a 422), with
        one tokenizer call for all of them (an instruction's ids are kept once computed):
        what `embed_token_ids` encodes, and what the server prices. `cut_left`: a truncated
        text keeps its end (TEI's truncation_direction "left")."""
        require_texts(texts)
        instruction = self.instruction if instruction is None else instruction
        head = self.instruction_ids(instruction)
        if truncate:
            texts = [cut_to_chars(self.tokenizer, text, self.max_length, keep_end=cut_left) for text in texts]
        else:
            for text in texts:
                require_fitting_chars(self.tokenizer, text, self.max_length, "an input")
        bodies = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [self.embedding_row(head, body, truncate, cut_left) for body in bodies]

    def instruction_ids(self, instruction: str) -> list[int]:
        known = self.__dict__.setdefault("_instruction_ids", {})  # few distinct instructions in practice
        ids = known.get(instruction)
        if ids is None:
            if len(known) >= 64:
                known.clear()
            ids = known[instruction] = self.tokens(instruction)
        return ids

    def embed(self, texts: list[str], instruction: str | None = None, normalize: bool = True,
              truncate: bool = False, mode: AttentionMode = AttentionMode.BIDIRECTIONAL) -> EmbedResult:
        """Last-token embeddings; mode=CAUSAL reads a base model left to right (its own way)."""
        return self.embed_token_ids(self.embedding_inputs(texts, instruction, truncate), normalize, mode)

    @torch.inference_mode()
    def embed_token_ids(self, seqs: list[list[int]], normalize: bool = True,
                        mode: AttentionMode = AttentionMode.BIDIRECTIONAL) -> EmbedResult:
        """`embed` of inputs already tokenized (`embedding_inputs`'s rows)."""
        out = torch.empty(len(seqs), self.model.config.hidden_size, dtype=torch.float32)
        for group in batches_by_tokens([len(s) for s in seqs], self.config.embed_batch_tokens):
            out[group] = encode_last_token(self.model, [seqs[i] for i in group], self.pad_id, self.device,
                                           mode).float().cpu()
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return EmbedResult(out, sum(len(s) for s in seqs))

    # ---- bidirectional (or causal): word vectors ----------------------------

    def word_inputs(self, texts: list[str], truncate: bool = False,
                    hint: str = "set truncate=true") -> list[WordInput]:
        """Each text tokenized once, as the word-vector forward reads it: [anchor] + its tokens."""
        require_texts(texts)
        inputs = []
        encoded = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
            if len(ids) + 1 > self.max_length:
                if not truncate:
                    self.check_length(len(ids) + 1, "an input", hint)
                ids, offsets = ids[: self.max_length - 1], offsets[: self.max_length - 1]
            inputs.append(WordInput([self.anchor_id] + ids, offsets))
        return inputs

    def token_states(self, texts: list[str], word_spans: list[list[tuple[int, int]]],
                     truncate: bool = False) -> list[torch.Tensor]:
        """Per text (n_words, H): a word is the mean of its tokens' vectors (paper §4.1);
        bidirectional, token i read at output i-1."""
        return self.word_vectors(self.word_inputs(texts, truncate), word_spans, "bidirectional")

    def paired_token_states(self, texts: list[str], word_spans: list[list[tuple[int, int]]],
                            truncate: bool = False) -> list[torch.Tensor]:
        """Per text (n_words, 2H): bidirectional, token i = [output i-1 ; output i]."""
        return self.word_vectors(self.word_inputs(texts, truncate), word_spans, "bidirectional-pair")

    def causal_token_states(self, texts: list[str], word_spans: list[list[tuple[int, int]]],
                            truncate: bool = False) -> list[torch.Tensor]:
        """Causal attention, token i = output i: the base model's own token representations."""
        return self.word_vectors(self.word_inputs(texts, truncate), word_spans, "causal")

    def word_vectors(self, inputs: list[WordInput], word_spans: list[list[tuple[int, int]]],
                     reading: str, layer: int | None = None) -> list[torch.Tensor]:
        """Per input (n_words, D): its words' vectors, read as WORD_READINGS[reading] says, from
        the outputs after `layer` (1-based; None: the last, the model's own output)."""
        return self.word_vectors_at(inputs, word_spans, reading, [layer or self.n_layers])[0]

    @torch.inference_mode()
    def word_vectors_at(self, inputs: list[WordInput], word_spans: list[list[tuple[int, int]]],
                        reading: str, layers: list[int]) -> list[list[torch.Tensor]]:
        """`word_vectors` after each of `layers`, from one forward: [layer][input] (n_words, D)."""
        self.check_layers(layers)
        mode, read_tokens = WORD_READINGS[reading]  # read_tokens: (n + 1, H) outputs -> (n, D)
        result: list[list] = [[None] * len(inputs) for _ in layers]
        for group in batches_by_tokens([len(x.ids) for x in inputs], self.config.embed_batch_tokens):
            ids, padding = pad_batch([inputs[i].ids for i in group], self.pad_id, self.device)
            roles = roles_for_mode(mode, padding)
            states = layer_states(self.model, ids, roles, positions_from_padding(padding), layers)
            memberships = [word_membership(inputs[i].offsets, word_spans[i]) for i in group]
            for per_layer, hidden in zip(result, states):
                hidden = hidden.float().cpu()
                for row, i in enumerate(group):
                    outputs = hidden[row, : len(inputs[i].ids)]  # (n + 1, H): anchor, then the text's tokens
                    # Bidirectional (MNTP-trained): token i is read at i-1 (or with its own output too).
                    # Causal: the output at i is the only one that has seen token i: token i's vector.
                    per_layer[i] = word_means(read_tokens(outputs), memberships[row])
        return result

    def has_layer(self, layer: int) -> bool:
        """Whether word vectors can read the outputs after `layer` (1-based) of this model."""
        return 1 <= layer <= self.n_layers

    def check_layers(self, layers: list[int]) -> None:
        bad = [layer for layer in layers if not self.has_layer(layer)]
        if bad or not layers:
            raise ValueError(f"layers {bad or layers}: this model has layers 1..{self.n_layers}")

    # ---- hybrid: infill -----------------------------------------------------

    def infill(self, segments: list[str], params: SamplingParams = INFILL_DEFAULTS) -> InfillCompletion:
        """Fill each gap between consecutive segments (prefix, suffix = 2 segments)."""
        return self.infill_batch([segments], [params])[0]

    def infill_batch(self, requests: list[list[str]], params: list[SamplingParams]) -> list[InfillCompletion]:
        """Every candidate of every request decoded in one batch, to the end."""
        batch = self.start_infill(requests, params)
        decodes = list(batch.decodes)
        run_to_end(batch)
        return [d.outcome() for d in decodes]

    def start_infill(self, requests: list[list[str]], params: list[SamplingParams]) -> DecodeBatch:
        """Prefill the context of every request's candidates (read as the adapter was trained:
        bidirectional, or left to right — `infill_context_mode`): a batch of
        InfillDecodes, one per request, ready to step or to join a running batch."""
        return self.start_infill_rows(requests, [self.infill_rows(s, p) for s, p in zip(requests, params)])

    def infill_rows(self, segments: list[str], params: SamplingParams) -> list[tuple[SamplingParams, InfillLayout]]:
        """One infill request's decode rows, checked: (candidate params, layout) per candidate gap
        (`candidate_gaps`), the segments tokenized once for all of them."""
        gaps = self.candidate_gaps(params)
        segment_ids, trimmed = self.segment_tokens(segments, params)
        return [(candidate_params(params, k), self.layout_of(segment_ids, trimmed, params, gap))
                for k, gap in enumerate(gaps)]

    @torch.inference_mode()
    def start_infill_rows(self, requests: list[list[str]],
                          rows: list[list[tuple[SamplingParams, InfillLayout]]]) -> DecodeBatch:
        """`start_infill` of requests whose rows are prepared (`infill_rows`)."""
        plans = [(i, p, lay) for i, request_rows in enumerate(rows) for p, lay in request_rows]
        candidates: list[list] = [[] for _ in requests]
        starts = []  # (span, slot whose output predicts its first token)
        for row, (i, p, lay) in enumerate(plans):
            generator = make_generator(p.seed, self.device)
            spans = [Span(row, k + 1, start, lay.end_tokens[k], p, generator, self.config.min_fill_tokens,
                          self.config.end_threshold, lay.ids[1:-1]) for k, start in enumerate(lay.gap_starts)]
            for span, spaces in zip(spans, lay.trimmed_spaces):  # each fill matches the constraint
                span.grammar = self.grammar(p, spaces)
            starts += zip(spans, lay.predictors)
            candidates[i].append((lay, spans))
        decodes = [InfillDecode(segments, rows, self.causal_logprobs) for segments, rows in zip(requests, candidates)]
        return self.prefill([lay.ids for _, _, lay in plans], [lay.positions for _, _, lay in plans],
                            self.infill_context, starts, decodes)

    def prefill(self, rows: list[list[int]], positions: list[list[int]], mode: AttentionMode,
                starts: list[tuple[Span, int]], decodes: list) -> DecodeBatch:
        """Encode each row's context once into a new KV cache (infill: bidirectional context;
        generation: the causal prompt) and give each span the logits of its first token, read
        at its (row, slot). The one prefill of every decoding mode."""
        ids, padding = pad_batch(rows, self.pad_id, self.device)  # (B, Tc)
        position_ids = torch.zeros_like(ids)
        for row, row_positions in enumerate(positions):
            position_ids[row, : len(row_positions)] = torch.tensor(row_positions)
        roles = roles_for_mode(mode, padding)
        gap_role = gap_predictor_role(mode)
        if gap_role is not None:  # causal_gap(_hidden): each fill's first predictor reads all the context
            for span, slot in starts:
                roles[span.row, slot] = gap_role
        cache = self.new_cache()
        hidden = hidden_states(self.model, ids, roles, position_ids, cache)  # (B, Tc, H)
        first = logits(self.model, torch.stack([hidden[span.row, slot] for span, slot in starts]))  # (N, V)
        for (span, _), span_logits in zip(starts, first):
            span.logits = span_logits
        for span, slot in starts:  # echo: a causal prompt's own tokens, read from the same forward
            if span.params.prompt_logprobs is not None:
                span.prompt_logprobs = sequence_logprobs(self.model, hidden[span.row, :slot], rows[span.row][:slot + 1],
                                                         span.params.prompt_logprobs)
        return DecodeBatch(self.model, self.tokenizer, cache, roles, position_ids, decodes)

    @torch.inference_mode()
    def causal_logprobs(self, texts: list[str]) -> list[float]:
        """Summed log-probability of each text read left to right after the anchor."""
        seqs = [[self.anchor_id] + ids for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        ids, padding = pad_batch(seqs, self.pad_id, self.device)
        hidden = hidden_states(self.model, ids, roles_for_mode(AttentionMode.CAUSAL, padding),
                               positions_from_padding(padding))  # (B, T, H)
        scores = []
        for row, seq in enumerate(seqs):
            logprobs = torch.log_softmax(logits(self.model, hidden[row, : len(seq) - 1]), dim=-1)  # (T-1, V)
            scores.append(float(logprobs.gather(1, torch.tensor(seq[1:], device=self.device)[:, None]).sum()))
        return scores

    def candidate_gaps(self, params: SamplingParams) -> list[int]:
        """Gap lengths to try: one for best_of 1, else best_of lengths spread geometrically over
        the trained range (the adapter reads the gap's length as the fill's length)."""
        if params.best_of < 1:
            raise InvalidInputError(f"best_of must be at least 1, got {params.best_of}")
        widest = self.gap_positions(params)
        if params.best_of == 1 or self.config.gap_positions is not None:
            gaps = [widest] * params.best_of
        else:
            low = min(self.gap_range[0], widest)
            ratio = (widest / low) ** (1 / (params.best_of - 1))
            gaps = [round(low * ratio**k) for k in range(params.best_of)]
        return sorted(set(gaps)) if params.temperature <= 0 else gaps  # greedy: one row per length

    def layout(self, segments: list[str], params: SamplingParams, gap: int | None = None):
        return self.layout_of(*self.segment_tokens(segments, params), params, gap)

    def segment_tokens(self, segments: list[str], params: SamplingParams) -> tuple[list[list[int]], list[int]]:
        """(each segment's ids, the trailing spaces cut before each gap), the request checked."""
        if not isinstance(segments, list) or len(segments) < 2:
            raise InvalidInputError("infill needs at least two segments (the text before and after a gap)")
        require_max_tokens(params)
        if params.prompt_logprobs is not None:
            raise InvalidInputError("prompt_logprobs (echo) scores a prompt read left to right: it does not apply to infill")
        if params.structured is not None and (params.structured.json is not None or params.structured.json_object):
            raise InvalidInputError("a JSON constraint (response_format, structured_outputs.json) applies to generation, "
                                    "not to an infill's fill: constrain a fill with a choice list or a regex")
        stripped = [split_trailing_spaces(s) if k < len(segments) - 1 else (s, 0) for k, s in enumerate(segments)]
        segment_ids = self.tokenizer([text for text, _ in stripped], add_special_tokens=False)["input_ids"]
        if not any(segment_ids):
            raise InvalidInputError("every segment is empty: give some text around the gap")
        for k in range(1, len(segments) - 1):  # a gap ends where the text after it starts: it needs some
            if not segment_ids[k]:
                raise InvalidInputError(f"segments[{k}] is empty: the gaps on either side of it touch, and a fill "
                                        "ends where the text after its gap starts; give it some text, or drop it "
                                        "to make the two gaps one")
        return segment_ids, [n for _, n in stripped]

    def layout_of(self, segment_ids: list[list[int]], trimmed: list[int], params: SamplingParams,
                  gap: int | None = None):
        gap = self.gap_positions(params) if gap is None else gap
        lay = infill_layout(self.anchor_id, self.tokenizer.eos_token_id, segment_ids, trimmed, gap)
        self.check_length(len(lay.ids) + params.max_tokens * len(lay.gap_starts),
                          "the context plus max_tokens per gap", "lower max_tokens")
        return lay

    def gap_positions(self, params: SamplingParams) -> int:
        """Positions reserved for a gap: max_tokens, kept within the span-to-suffix distances the
        adapter was trained on (beyond them the model never saw a suffix that far away)."""
        if self.config.gap_positions is not None:
            return self.config.gap_positions
        low, high = self.gap_range
        return max(low, min(params.max_tokens, high))

    # ---- causal: generation ---------------------------------------------------

    def generate(self, prompt: str, params: SamplingParams = SamplingParams()) -> Completion:
        return completion_of(list(self.generate_stream(prompt, params)))

    def generate_stream(self, prompt: str, params: SamplingParams = SamplingParams()) -> Iterator[StreamChunk]:
        """Text pieces as they are decoded; the last chunk has finish_reason and usage."""
        batch = self.start_generate([prompt], [params])
        decode = batch.decodes[0]
        while batch:
            batch.step()
            yield from decode.poll() if not decode.done else ()
        yield decode.outcome()

    def start_generate(self, prompts: list[str], params: list[SamplingParams]) -> DecodeBatch:
        """Prefill every prompt (causal): a batch of GenerateDecodes, one per prompt."""
        return self.start_generate_ids([self.prompt_ids(prompt, p) for prompt, p in zip(prompts, params)], params)

    @torch.inference_mode()
    def start_generate_ids(self, seqs: list[list[int]], params: list[SamplingParams]) -> DecodeBatch:
        """`start_generate` of prompts already tokenized and checked (`prompt_ids`)."""
        spans = [Span(row, 1, len(ids), None, p, make_generator(p.seed, self.device), prompt_ids=ids,
                      grammar=self.grammar(p)) for row, (ids, p) in enumerate(zip(seqs, params))]
        return self.prefill(seqs, [list(range(len(ids))) for ids in seqs], AttentionMode.CAUSAL,
                            [(span, len(ids) - 1) for span, ids in zip(spans, seqs)],
                            [GenerateDecode(span) for span in spans])

    def grammar(self, params: SamplingParams, leading_spaces: int = 0):
        """A new matcher of params.structured for one span (None without a constraint)."""
        return span_grammar(self.tokenizer, self.vocab_size, params.structured, leading_spaces)

    def compile_structured(self, spec: StructuredOutput, leading_spaces: int = 0) -> None:
        """Compile a constraint ahead (off the model thread; `grammar` then finds it compiled): a
        bad one raises here, and the tokenizer's grammar index (~1 s, once) is built before any
        decode waits for it."""
        compile_spec(self.tokenizer, self.vocab_size, spec, leading_spaces)

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().out_features  # the logits' width

    def prompt_ids(self, prompt: str, params: SamplingParams) -> list[int]:
        return prompt_token_ids(self.tokenizer, prompt, params, self.max_length)

    def new_cache(self) -> GrowingCache:
        return GrowingCache()


LEGACY_GAP_RANGE = (1, 32)  # adapters whose manifest predates `gap_distance`, and no adapter


def trained_gap_range(manifest) -> tuple[int, int]:
    distance = manifest.objectives.get("msg", {}).get("gap_distance") if manifest else None
    return tuple(distance) if distance else LEGACY_GAP_RANGE


def infill_context_mode(manifest) -> AttentionMode:
    """How a hybrid fill reads its context: as the adapter's MSG views did (manifest
    `objectives.msg.context`); bidirectional for adapters that predate the setting (the paper)."""
    reading = manifest.objectives.get("msg", {}).get("context", "bidirectional") if manifest else "bidirectional"
    return context_mode(reading)


def require_texts(texts) -> None:
    if not isinstance(texts, list) or not texts:
        raise InvalidInputError("input is empty: give at least one text")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise InvalidInputError(f"input[{i}] is empty: every text needs at least one non-space character")


def candidate_params(params: SamplingParams, k: int) -> SamplingParams:
    """Candidate k of a seeded request draws its own stream (seed + k), reproducibly."""
    return params if params.seed is None or k == 0 else replace(params, seed=(params.seed + k) % 2**63)


__all__ = ["Engine", "EngineConfig", "EmbedResult"]
