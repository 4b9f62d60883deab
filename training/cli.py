"""`magnet train`: flags override a JSON config file, which overrides the defaults.

    magnet train --data wiki.valid.raw --output runs/magnet --max-steps 300 \
                 --max-length 64 --batch-size 16 [--config cfg.json] [--resume]

Data parallel: the same command under `accelerate launch` or `torchrun` (see docs/training.md).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from magnet.cli import add_flag_table, given_flags
from magnet.training.config import TrainConfig

FLAGS = {  # flag -> (config field, type, help)
    "--output": ("output", str, "output directory (adapter/, checkpoints/, log.jsonl, losses.png)"),
    "--model": ("model", str, "base checkpoint dir (default: the embedded SmolLM2-135M)"),
    "--init-adapter": ("init_adapter", str, "start from this adapter dir (a second training phase)"),
    "--max-steps": ("max_steps", int, "optimizer steps (paper 4200)"),
    "--max-length": ("max_length", int, "tokens per MNTP/MSG example (paper 512)"),
    "--batch-size": ("batch_size", int, "examples per micro-batch (paper 32)"),
    "--sscl-batch-size": ("sscl_batch_size", int, "SSCL pairs per micro-batch (default: --batch-size)"),
    "--sscl-max-length": ("sscl_max_length", int, "tokens per SSCL view (paper 128)"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, "learning rate (paper 3e-5)"),
    "--warmup-steps": ("warmup_steps", int, "linear warm-up steps"),
    "--lr-decay": ("lr_decay", str, "after warm-up: constant | cosine (to 10%% of --lr)"),
    "--switch-at": ("switch_at", float, "fraction of steps before the SSCL weight switches on (paper 0.81)"),
    "--mask-token": ("mask_token", str, "MNTP mask token when the tokenizer has none (paper '_')"),
    "--augmenter": ("augmenter", str, "SSCL positives for unpaired lines: word_dropout | dropout"),
    "--min-sscl-words": ("min_sscl_words", int, "paragraphs of more words than this are SSCL texts too, "
                         "with augmented positives (paper 20; 1000000: --pairs only)"),
    "--graded-weight": ("graded_weight", float, "weight of the graded-pair loss (CoSENT on --graded-pairs' "
                        "scores; 0: off)"),
    "--graded-batch-size": ("graded_batch_size", int, "graded pairs per micro-batch (default: the SSCL batch)"),
    "--graded-scale": ("graded_scale", float, "CoSENT's scale, 1 / temperature (20)"),
    "--kl-weight": ("kl_weight", float, "weight of KL(base || adapted) on the causal views' next tokens, the "
                    "base read with the adapter off (0: off)"),
    "--gap-jitter": ("gap_jitter", float, "stretch span-to-suffix distances to m*U(1, 1+j) (0: exact)"),
    "--trailing-rate": ("trailing_rate", float, "share of examples whose last span ends the text"),
    "--sentence-rate": ("sentence_rate", float, "share of examples whose first span is one whole sentence"),
    "--causal-rate": ("causal_rate", float, "share of examples that are plain next-token prediction"),
    "--context": ("context", str, "how MSG views read their context: bidirectional (paper) | causal (only spans "
                  "read the text after them) | causal_gap (causal, and the token before each span reads all the "
                  "context, so a fill's first token sees the text after it) | causal_gap_hidden (the same, but the context "
                  "does not read that token, so it keeps every next-token label); serving follows the manifest"),
    "--mntp-view-rate": ("mntp_view_rate", float, "with a causal --context: share of MNTP-only "
                         "bidirectional views"),
    "--mask-rate": ("mask_rate", float, "share of context tokens MNTP labels (paper 0.2)"),
    "--lora-r": ("lora_r", int, "LoRA rank (16)"),
    "--lora-alpha": ("lora_alpha", int, "LoRA alpha (32)"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between checkpoints"),
    "--dist-timeout-s": ("dist_timeout_s", float, "data parallel: seconds a collective may wait (1800)"),
    "--main-wait-s": ("main_wait_s", float, "data parallel: seconds the other processes wait for the main "
                      "one's checkpoint and quality check (7200)"),
    "--eval-every": ("eval_every", int, "steps between quality checks (0: only at the end)"),
    "--eval-pairs": ("eval_pairs", int, "STS-B select pairs in the quality check (0: all)"),
    "--eval-stories": ("eval_stories", int, "ROC select stories in the quality check"),
    "--select-stsb": ("select_stsb", str, "STS-B file whose select split the quality check scores "
                      "(sts-train.csv; its sentences are never trained on)"),
    "--seed": ("seed", int, "random seed"),
    "--device": ("device", str, "cpu, cuda, ... (default: cuda if available)"),
    "--dtype": ("dtype", str, "float32 | bfloat16 (default: bf16 autocast where the hardware has native bf16 — "
                "CUDA, CPUs with AMX/AVX512-BF16 — else float32)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON file with TrainConfig fields")
    parser.add_argument("--data", nargs="+", help="training text files (one paragraph per line; ROC CSV, MRPC)")
    parser.add_argument("--pairs", nargs="+", help="SSCL positive pairs (MRPC file or a<TAB>b lines)")
    parser.add_argument("--graded-pairs", nargs="+", help="scored pairs for the graded loss (STS-B rows, "
                        "e.g. sts-train.csv: its train split; needs --graded-weight)")
    parser.add_argument("--exclude", nargs="+", help="evaluation files (STS-B, ROC, CoNLL) whose sentences "
                        "are dropped from the training text and pairs (the select split of --select-stsb is always excluded)")
    add_flag_table(parser, FLAGS)
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None)
    parser.add_argument("--compile-layers", action="store_true", default=None,
                        help="run each decoder layer through torch.compile (about 1.2x a bf16 step on CPU, after "
                             "~35 s of compiling; docs/training.md)")
    parser.add_argument("--no-quality-check", dest="quality_check", action="store_false", default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    parser.add_argument("--stop-after", type=int, help="end after N steps of this run with a checkpoint "
                        "(resume it later with --resume)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.jsonl)")


def flag_settings(args: argparse.Namespace) -> dict:
    """{setting: value} of the flags given on the command line."""
    overrides = given_flags(args, FLAGS)
    overrides.update(data=args.data and tuple(args.data), pairs=args.pairs and tuple(args.pairs),
                     graded_pairs=args.graded_pairs and tuple(args.graded_pairs),
                     exclude=args.exclude and tuple(args.exclude),
                     gradient_checkpointing=args.gradient_checkpointing, compile_layers=args.compile_layers,
                     quality_check=args.quality_check)
    return {k: v for k, v in overrides.items() if v is not None}


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, list | None]:
    """The run's settings (defaults < --config file < flags), and the file's `phases` list when
    it is a recipe of several phases (training/phases.py)."""
    overrides = flag_settings(args)
    raw = read_config_file(args.config) if args.config else {}
    phases = raw.pop("phases", None)
    try:
        return TrainConfig.from_dict({**raw, **overrides}), phases
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"magnet train{f' --config {args.config}' if args.config else ''}: {exc}") from None


def read_config_file(path: str) -> dict:
    if not Path(path).is_file():
        raise SystemExit(f"magnet train --config {path}: no such file")
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"magnet train --config {path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"magnet train --config {path}: must be a JSON object of training settings")
    return raw


def check_input_files(config: TrainConfig, init_adapter: bool = True) -> None:
    """Every file and folder the run reads, checked before the model loads: a missing one
    ends the command with one line naming its flag (not a traceback after the load).
    `init_adapter` False: a recipe's later phase, whose start the phase before writes."""
    if not config.data:
        raise SystemExit("magnet train: no training text: pass --data FILE... (e.g. "
                         "../shared/data/wikitext2/wiki.valid.raw), or a --config file that names it")
    files = [*(("--data", p) for p in config.data), *(("--pairs", p) for p in config.pairs),
             *(("--graded-pairs", p) for p in config.graded_pairs),
             *(("--exclude", p) for p in config.exclude), ("--select-stsb", config.select_stsb)]
    for flag, path in files:
        if path and not Path(path).is_file():
            raise SystemExit(f"magnet train {flag} {path}: no such file (the data sits in ../shared/data, "
                             "e.g. ../shared/data/wikitext2/wiki.valid.raw)")
    folders = [("--model", config.model)] + [("--init-adapter", config.init_adapter)] * init_adapter
    for flag, path in folders:
        if path and not Path(path).is_dir():
            raise SystemExit(f"magnet train {flag} {path}: no such folder")


def run(args: argparse.Namespace) -> int:
    config, raw_phases = config_from_args(args)
    if raw_phases is not None:
        return run_recipe(args, config, raw_phases)
    check_input_files(config)
    from magnet.training.loop import train

    adapter = train(config, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after)
    if adapter is not None:  # None: stopped early, or not the main process of a data-parallel run
        print(f"adapter written to {adapter}")
    return 0


def run_recipe(args: argparse.Namespace, config: TrainConfig, raw_phases) -> int:
    """A --config file with `phases`: each phase in OUTPUT/NAME, from the one before; run it
    again to go on (finished phases are skipped, a stopped one resumes: --resume is implied)."""
    from magnet.training.phases import phase_list, run_phases

    try:
        phases = phase_list(config, raw_phases, flag_settings(args))
    except ValueError as exc:
        raise SystemExit(f"magnet train --config {args.config}: {exc}") from None
    for i, phase in enumerate(phases):
        check_input_files(phase.config, init_adapter=i == 0)
    adapter = run_phases(phases, progress=not args.no_progress, stop_after=args.stop_after)
    if adapter is not None:
        print(f"adapter written to {adapter} (the last of {len(phases)} phases)")
    return 0
