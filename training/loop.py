"""The MAGNET training loop: L = λ1·MNTP + λ2·SSCL + λ3·MSG on a LoRA adapter.

Per optimizer step (and per micro-batch of gradient accumulation):
    x^m  (B, T)  one hybrid-mask forward   -> MNTP + MSG
    x, x+ (B, T') two bidirectional forwards -> SSCL (skipped while λ2 = 0)
Batches, dropout and random tokens are seeded by (seed, step), so a resumed run
repeats an uninterrupted one exactly; checkpoints hold the adapter and the
optimizer state.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from magnet.loading import ModelSpec, attach_adapter, load_model
from magnet.training.checkpoints import latest_checkpoint, save_checkpoint, write_adapter
from magnet.training.config import TrainConfig
from magnet.training.corpus import Corpus
from magnet.training.objectives import collate_views, info_nce, mntp_msg_losses
from magnet.forward import encode_last_token
from magnet.training.views import ViewSpec

log = logging.getLogger(__name__)


def view_spec(config: TrainConfig, tokenizer, vocab_size: int) -> ViewSpec:
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        ids = tokenizer(config.mask_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"mask token {config.mask_token!r} is {len(ids)} tokens: choose a single-token one")
        mask_id = ids[0]
    anchor = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ViewSpec(
        anchor_id=anchor, eos_id=tokenizer.eos_token_id, mask_id=mask_id, vocab_size=vocab_size,
        mask_rate=config.mask_rate, max_spans=config.max_spans, span_range=config.span_range(),
        causal_rate=config.causal_rate, gap_jitter=config.gap_jitter, trailing_rate=config.trailing_rate,
        special_ids=frozenset(tokenizer.all_special_ids),
    )


def add_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def prepare_model(config: TrainConfig, resume_from: Path | None):
    loaded = load_model(ModelSpec(model=config.model, adapter=None, device=config.device, dtype=config.dtype))
    if resume_from is not None or config.init_adapter:
        start = resume_from / "adapter" if resume_from is not None else Path(config.init_adapter)
        model = attach_adapter(loaded.model, start, loaded.base, merge=False)
    else:
        torch.manual_seed(config.seed)  # LoRA's A matrices are drawn at random
        model = add_lora(loaded.model, config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.train()
    return loaded, model


LR_DECAYS = ("constant", "cosine")
FINAL_LR_RATIO = 0.1  # cosine decay ends at this fraction of lr


def learning_rate(config: TrainConfig, step: int) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "constant":
        return config.lr
    if config.lr_decay != "cosine":
        raise ValueError(f"unknown lr_decay {config.lr_decay!r}: choose one of {', '.join(LR_DECAYS)}")
    done = (step - config.warmup_steps) / max(config.max_steps - config.warmup_steps, 1)
    return config.lr * (FINAL_LR_RATIO + (1 - FINAL_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * done)))


def train_step(model, corpus: Corpus, config: TrainConfig, step: int, pad_id: int, device, rank: int = 0) -> dict:
    w_mntp, w_sscl, w_msg = config.weights_at(step)
    totals = {"mntp": 0.0, "sscl": 0.0, "msg": 0.0, "loss": 0.0}
    for micro in range(config.grad_accum):
        torch.manual_seed(hash((config.seed, step, micro, rank)) % 2**31)  # dropout, reproducible on resume
        batch = collate_views(corpus.views(step, micro, rank), pad_id, device)
        mntp, msg = mntp_msg_losses(model, batch)
        loss = w_mntp * mntp + w_msg * msg
        sscl = torch.zeros(())
        if w_sscl > 0:
            xs, positives = corpus.sscl_batch(step, micro, rank)
            sscl = info_nce(encode_last_token(model, xs, pad_id, device),
                            encode_last_token(model, positives, pad_id, device), config.temperature)
            loss = loss + w_sscl * sscl
        (loss / config.grad_accum).backward()
        for name, value in (("mntp", mntp), ("sscl", sscl), ("msg", msg), ("loss", loss)):
            totals[name] += float(value.detach()) / config.grad_accum
    return totals


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path | None:
    """Run (or resume) training; returns the adapter dir, or None when `stop_after`
    steps of this run ended it early with a checkpoint (resume it later)."""
    output = Path(config.output)
    checkpoint = latest_checkpoint(output) if resume else None
    if resume and checkpoint is None:
        log.warning("--resume: no checkpoint in %s, starting from step 0", output)
    accelerator = make_accelerator(config)
    main = accelerator.is_main_process
    if config.device is None:
        config = config.with_(device=str(accelerator.device))
    loaded, model = prepare_model(config, checkpoint)
    tokenizer, device = loaded.tokenizer, loaded.device
    corpus = Corpus.build(config, tokenizer, view_spec(config, tokenizer, model.config.vocab_size))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    start = 0
    if checkpoint is not None:
        state = torch.load(checkpoint / "optimizer.pt", map_location=device)
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        log.info("resuming from %s at step %d", checkpoint, start)
    output.mkdir(parents=True, exist_ok=True)
    (output / "config.json").write_text(config.to_json())
    log_path = output / "log.jsonl"
    truncate_log(log_path, start)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = progress_bar(start, config.max_steps, progress and main)
    for step in range(start, config.max_steps):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        losses = train_step(model, corpus, config, step, pad_id, device, accelerator.process_index)
        average_gradients(params, accelerator)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, **{k: round(v, 5) for k, v in losses.items()},
                  "lr": learning_rate(config, step), "seconds": round(time.perf_counter() - started, 3)}
        if main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{losses[k]:.3f}" for k in ("mntp", "sscl", "msg")})
        bar.update(1)
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {losses}")
        if main and (step + 1) % config.checkpoint_every == 0 and step + 1 < config.max_steps:
            save_checkpoint(output, step + 1, model, optimizer)
        if main and config.eval_every and (step + 1) % config.eval_every == 0:
            run_quality_check(config, loaded, model, step + 1)
        if stop_after is not None and step + 1 - start >= stop_after and step + 1 < config.max_steps:
            if main:
                save_checkpoint(output, step + 1, model, optimizer)
            bar.close()
            return None
    bar.close()
    if not main:
        return None
    adapter = write_adapter(output, model, loaded, config, steps=config.max_steps)
    if config.quality_check:
        run_quality_check(config, loaded, model, config.max_steps, adapter)
    draw_losses(log_path, output / "losses.png")
    return adapter


def run_quality_check(config: TrainConfig, loaded, model, step: int, adapter: Path | None = None) -> None:
    from magnet.training.quality import quality_report

    report = quality_report(config, loaded, model)
    log.info("quality at step %d: %s", step, report)
    with open(Path(config.output) / "quality.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **report}) + "\n")
    if adapter is not None:
        from magnet.manifest import AdapterManifest

        manifest = AdapterManifest.load(adapter)
        extra = {**manifest.extra, "quality": report}
        type(manifest)(**{**manifest.__dict__, "extra": extra}).save(adapter)


def make_accelerator(config: TrainConfig):
    """One process here; N under `accelerate launch` (data parallel, see average_gradients)."""
    from accelerate import Accelerator

    return Accelerator(cpu=config.device == "cpu")


def average_gradients(params, accelerator) -> None:
    """Data parallel without a DDP wrapper (our forward goes through the decoder, not
    model.forward): each process trains on its own batches, then LoRA gradients are averaged."""
    if accelerator.num_processes == 1:
        return
    for p in params:
        if p.grad is not None:
            p.grad = accelerator.reduce(p.grad, reduction="mean")


def truncate_log(path: Path, step: int) -> None:
    """Keep only the records of steps before `step` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def progress_bar(start: int, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="magnet train", unit="step")


def draw_losses(log_path: Path, png: Path) -> None:
    from magnet.training.plot import plot_losses

    plot_losses(log_path, png)

