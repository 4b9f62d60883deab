"""The MAGNET training loop: L = λ1·MNTP + λ2·SSCL + λ3·MSG on a LoRA adapter.

Per optimizer step (and per micro-batch of gradient accumulation):
    x^m  (B, T)  one hybrid-mask forward   -> MNTP + MSG
    x, x+ (B, T') two bidirectional forwards -> SSCL (skipped while λ2 = 0)
    a, b (G, T')  two bidirectional forwards -> graded pairs, CoSENT (only with graded_weight)
    x^m's causal rows, adapter off, no gradient -> KL(base || adapted) (only with kl_weight)
Batches, dropout and random tokens are seeded by (seed, step), so a resumed run
repeats an uninterrupted one exactly; checkpoints hold the adapter and the
optimizer state.

Data parallel (`accelerate launch` or `torchrun`): the micro-batch's forwards run
inside one module (`MagnetObjective`) that `accelerator.prepare` wraps in DDP, so
DDP all-reduces the LoRA gradients during backward. Each process takes its share
of the step's global batch (corpus.py); the MNTP/MSG token means are taken over
the global batch (token counts all-reduced) and SSCL's in-batch negatives are
the global batch's (embeddings all-gathered), so N processes with batch B train
exactly like one process with batch N x B (tested, up to float rounding and
LoRA dropout masks). Only the main process logs, checkpoints and runs quality
checks; the others wait for it on a barrier with its own long timeout.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from datetime import timedelta
from pathlib import Path

import torch

from magnet.loading import ModelSpec, attach_adapter, load_model
from magnet.layout import anchor_token_id
from magnet.masks import MODE_ROLES, context_mode, gap_predictor_role
from magnet.training.checkpoints import latest_checkpoint, manifest_for, save_checkpoint, write_adapter
from magnet.training.config import LR_DECAYS, TrainConfig
from magnet.training.dropout import use_bits_dropout
from magnet.training.corpus import Corpus
from magnet.training.objectives import ViewBatch, base_kl, collate_views, cosent, info_nce, label_logits, label_nll
from magnet.forward import encode_last_token
from magnet.progress import progress as progress_bar
from magnet.training.views import MNTP, MSG, ViewSpec

log = logging.getLogger(__name__)


def view_spec(config: TrainConfig, tokenizer, vocab_size: int) -> ViewSpec:
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        ids = tokenizer(config.mask_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"mask token {config.mask_token!r} is {len(ids)} tokens: choose a single-token one")
        mask_id = ids[0]
    if config.kl_weight < 0 or (config.kl_weight > 0 and config.causal_rate <= 0):
        raise ValueError(f"kl_weight {config.kl_weight} is read at causal views' labels: give a weight >= 0, "
                         "and with a weight > 0 a --causal-rate > 0")
    anchor = anchor_token_id(tokenizer)
    mode = context_mode(config.context)  # refuses an unknown reading by name
    return ViewSpec(
        anchor_id=anchor, eos_id=tokenizer.eos_token_id, mask_id=mask_id, vocab_size=vocab_size,
        mask_rate=config.mask_rate, max_spans=config.max_spans, span_range=config.span_range(),
        causal_rate=config.causal_rate, gap_jitter=config.gap_jitter, trailing_rate=config.trailing_rate,
        special_ids=frozenset(tokenizer.all_special_ids),
        sentence_rate=config.sentence_rate, sentence_end_ids=sentence_end_ids(tokenizer),
        context_role=MODE_ROLES[mode], gap_role=gap_predictor_role(mode), mntp_view_rate=config.mntp_view_rate,
    )


def sentence_end_ids(tokenizer) -> frozenset:
    """Every token whose text ends a sentence: '.', '!', '?', optionally closed by a quote."""
    ends = (".", "!", "?", '."', '!"', '?"', ".'", "!'", "?'")
    return frozenset(i for i, text in enumerate(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
                     if text.rstrip().endswith(ends) and i not in tokenizer.all_special_ids)


def add_lora(model, config: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def with_trained_lora_shape(config: TrainConfig, model) -> TrainConfig:
    """`config` with the LoRA shape `model` trains. An adapter the run starts from (--init-adapter,
    a checkpoint) keeps its own rank, alpha, dropout and targets whatever the settings say, so
    the run's config.json and manifest record those (a setting that did not apply is logged)."""
    lora = model.peft_config["default"]
    trained = {"lora_r": lora.r, "lora_alpha": lora.lora_alpha, "lora_dropout": lora.lora_dropout,
               "lora_targets": tuple(sorted(lora.target_modules))}
    changes = {}
    for name, value in trained.items():
        setting = getattr(config, name)
        if (set(setting) != set(value)) if name == "lora_targets" else setting != value:
            log.info("%s %s does not apply: the adapter this run starts from has %s", name, setting, value)
            changes[name] = value
    return config.with_(**changes)


def compute_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """What the forwards compute in: `--dtype`, else bf16 where the hardware multiplies it
    natively (magnet.hardware), else fp32."""
    from magnet.hardware import default_dtype, parse_dtype

    return parse_dtype(config.dtype) if config.dtype else default_dtype(device)


def autocast(dtype: torch.dtype, device: torch.device):
    """bf16/fp16 autocast around a forward and its loss; nothing for fp32. The frozen base
    weights are stored in that dtype (no re-cast per forward); peft keeps the LoRA factors,
    their gradients and the optimizer state in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def prepare_model(config: TrainConfig, resume_from: Path | None):
    from magnet.loading import pick_device

    dtype = compute_dtype(config, pick_device(config.device))
    loaded = load_model(ModelSpec(model=config.model, adapter=None, device=config.device,
                                  dtype=str(dtype).removeprefix("torch.")))
    if resume_from is not None or config.init_adapter:
        start = resume_from / "adapter" if resume_from is not None else Path(config.init_adapter)
        model = attach_adapter(loaded.model, start, loaded.base, merge=False)
    else:
        torch.manual_seed(config.seed)  # LoRA's A matrices are drawn at random
        model = add_lora(loaded.model, config)
    use_bits_dropout(model)  # half the random draws of peft's nn.Dropout masks (training/dropout.py)
    if config.gradient_checkpointing:
        # non-reentrant: DDP's gradient hooks fire once per parameter even though one step
        # runs the decoder up to three times (x^m, x, x+)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if config.compile_layers:
        compile_layers(model)
    model.train()
    return loaded, model


def compile_layers(model) -> None:
    """Each decoder layer's forward (its LoRA-wrapped projections, dropout and norms included)
    through torch.compile: inductor fuses the elementwise work around the products, forward and
    backward. The layers run the same code, so they share the compiled graphs (dynamic shapes:
    every view length too), and the first step pays the compiling once. The graphs break where
    dynamo cannot trace (BitsDropout's bit draws, the attention's dispatch), which bounds the
    gain (`python bench/bench_train.py --compile-layers`, docs/training.md). The module tree,
    and so the adapter's weights and checkpoints, stay as they are."""
    for layer in model.get_decoder().layers:
        layer.forward = torch.compile(layer.forward, dynamic=True)


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


class MagnetObjective(torch.nn.Module):
    """The forwards of one micro-batch as one module call, so that DDP (which
    `accelerator.prepare` wraps around it) sees them: per-label NLL of the hybrid
    view x^m and, when SSCL is on, the last-token embeddings of x and x+. Our
    forward runs the decoder with a 4-D mask (magnet.forward), not model.forward,
    so wrapping the peft model itself would bypass DDP's forward and its hooks."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch: ViewBatch, sscl: tuple | None, graded: tuple | None, pad_id: int, kl: bool = False):
        """(N,) label NLL; (C,) KL to the base at the causal labels or None; (B, H) x and x+
        embeddings or None; (G, H) both sides of the graded pairs or None."""
        picked = label_logits(self.model, batch)
        nll = label_nll(picked, batch)
        encode = lambda ids: encode_last_token(self.model, ids, pad_id, nll.device)  # noqa: E731
        pairs = lambda views: None if views is None else (encode(views[0]), encode(views[1]))  # noqa: E731
        return nll, base_kl(self.model, batch, picked) if kl else None, pairs(sscl), pairs(graded)


def train_step(objective, corpus: Corpus, config: TrainConfig, step: int, pad_id: int, device,
               accelerator=None) -> dict:
    """Forward and backward of one optimizer step (all micro-batches); returns the
    losses of the global batch (the same in every process)."""
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    w_mntp, w_sscl, w_msg = config.weights_at(step)
    dtype = next(p.dtype for p in objective.parameters() if not p.requires_grad)  # the frozen base's
    w_graded, w_kl = config.graded_weight, config.kl_weight
    totals = {"mntp": 0.0, "sscl": 0.0, "msg": 0.0, "graded": 0.0, "kl": 0.0, "loss": 0.0}
    for micro in range(config.grad_accum):
        torch.manual_seed(hash((config.seed, step, micro, rank)) % 2**31)  # dropout, reproducible on resume
        batch = collate_views(corpus.views(step, micro, rank, world), pad_id, device)
        kinds = torch.stack([batch.objectives == MNTP, batch.objectives == MSG])  # (2, N)
        counts = all_sum(kinds.sum(dim=1).float(), accelerator).clamp(min=1)  # labels in the global batch
        kl_count = all_sum(batch.causal.sum().float(), accelerator).clamp(min=1) if w_kl > 0 else None
        sscl_views = corpus.sscl_batch(step, micro, rank, world) if w_sscl > 0 else None
        graded_views = corpus.graded_batch(step, micro, rank, world) if w_graded > 0 else None
        last = micro == config.grad_accum - 1
        with no_sync(objective, accelerator, last), autocast(dtype, device):
            nll, kl_values, sscl_pair, graded_pair = objective(batch, sscl_views, graded_views and graded_views[:2],
                                                               pad_id, w_kl > 0)
            sums = (kinds * nll.float()).sum(dim=1)  # this process's MNTP and MSG label NLL
            # world x (local sum / global count): DDP's gradient mean makes it the global mean's gradient
            mntp, msg = world * sums / counts
            loss = w_mntp * mntp + w_msg * msg
            sscl = graded = kl_sum = torch.zeros((), device=nll.device)
            if kl_values is not None:  # a mean over the global batch's causal labels, as the token means
                kl_sum = kl_values.sum()
                loss = loss + w_kl * world * kl_sum / kl_count
            if sscl_pair is not None:
                # global in-batch negatives; the gradient flows through this process's rows only,
                # hence x world, like the token means
                anchors, positives = (gather_rows(rows, accelerator) for rows in sscl_pair)
                sscl = info_nce(anchors, positives, config.temperature)
                loss = loss + world * w_sscl * sscl
            if graded_pair is not None:  # ranked over the global batch's pairs, as SSCL's negatives
                a, b = (gather_rows(rows, accelerator) for rows in graded_pair)
                scores = gather_rows(torch.tensor(graded_views[2], device=nll.device)[:, None], accelerator)
                graded = cosent(a, b, scores[:, 0], config.graded_scale)
                loss = loss + world * w_graded * graded
            if accelerator is None:
                (loss / config.grad_accum).backward()
            else:
                accelerator.backward(loss / config.grad_accum)
        mntp, msg = (all_sum(sums.detach(), accelerator) / counts).tolist()
        sscl, graded = float(sscl.detach()), float(graded.detach())
        kl = float(all_sum(kl_sum.detach(), accelerator) / kl_count) if kl_count is not None else 0.0
        for name, value in (("mntp", mntp), ("sscl", sscl), ("msg", msg), ("graded", graded), ("kl", kl),
                            ("loss", w_mntp * mntp + w_sscl * sscl + w_msg * msg + w_graded * graded + w_kl * kl)):
            totals[name] += value / config.grad_accum
    return totals


def all_sum(tensor: torch.Tensor, accelerator) -> torch.Tensor:
    """The sum of `tensor` over all processes (itself with one)."""
    if accelerator is None or accelerator.num_processes == 1:
        return tensor
    return accelerator.reduce(tensor.clone(), reduction="sum")


def gather_rows(local: torch.Tensor, accelerator) -> torch.Tensor:
    """(world x B, H): every process's rows in rank order, this process's own rows
    keeping their gradient (the others' are constants here)."""
    if accelerator is None or accelerator.num_processes == 1:
        return local
    everyone = accelerator.gather(local.detach().contiguous())
    size, rank = local.shape[0], accelerator.process_index
    return torch.cat([everyone[: rank * size], local, everyone[(rank + 1) * size :]])


def no_sync(objective, accelerator, sync: bool):
    """DDP's all-reduce only on the last micro-batch of gradient accumulation."""
    if sync or accelerator is None or accelerator.num_processes == 1:
        return contextlib.nullcontext()
    return accelerator.no_sync(objective)


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
    wait_for_main = main_process_barrier(accelerator, config)
    if config.device is None or accelerator.num_processes > 1:  # each process on its own device
        config = config.with_(device=str(accelerator.device))
    loaded, model = prepare_model(config, checkpoint)
    config = with_trained_lora_shape(config, model)
    tokenizer, device = loaded.tokenizer, loaded.device
    log.info("training in %s on %s", str(loaded.dtype).removeprefix("torch."), device)
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
    # DDP around the objective when there are several processes (a no-op with one)
    objective, optimizer = accelerator.prepare(MagnetObjective(model), optimizer, device_placement=[False, False])
    log_path = output / "log.jsonl"
    if main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.json").write_text(config.to_json())
        truncate_log(log_path, start)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if main:
        world = accelerator.num_processes
        log.info("%d process(es) x batch %d x %d micro-batch(es): global batch %d", world, config.batch_size,
                 config.grad_accum, world * config.batch_size * config.grad_accum)
    bar = progress_bar(desc="magnet train", total=config.max_steps, unit="step", initial=start,
                       enabled=progress and main)
    for step in range(start, config.max_steps):
        started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        losses = train_step(objective, corpus, config, step, pad_id, device, accelerator)
        accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        record = {"step": step + 1, **{k: round(v, 5) for k, v in losses.items()},
                  "lr": learning_rate(config, step), "seconds": round(time.perf_counter() - started, 3)}
        if main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{losses[k]:.3f}" for k in ("mntp", "sscl", "msg")})
        bar.update(1)
        if not all(math.isfinite(v) for v in losses.values()):  # global losses: every process stops
            raise FloatingPointError(f"non-finite loss at step {step + 1}: {losses}")
        stopping = stop_after is not None and step + 1 - start >= stop_after and step + 1 < config.max_steps
        checkpoint_due = (step + 1) % config.checkpoint_every == 0 and step + 1 < config.max_steps
        eval_due = bool(config.eval_every) and (step + 1) % config.eval_every == 0
        if checkpoint_due or eval_due or stopping:
            # the main process's work; the others wait on a barrier that cannot time out
            # their next all-reduce, however long the quality check takes
            if main and (checkpoint_due or stopping):
                save_checkpoint(output, step + 1, model, optimizer, manifest_for(config, loaded, step + 1))
            if main and eval_due:
                run_quality_check(config, loaded, model, step + 1)
            wait_for_main()
        if stopping:
            bar.close()
            return None
    bar.close()
    adapter = None
    if main:
        adapter = write_adapter(output, model, loaded, config, steps=config.max_steps)
        if config.quality_check:
            run_quality_check(config, loaded, model, config.max_steps, adapter)
        draw_losses(log_path, output / "losses.png")
    wait_for_main()  # the others end once the adapter is published: a recipe's next phase reads it
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
    """One process, or N under `accelerate launch` / `torchrun` (DDP, see MagnetObjective)."""
    from accelerate import Accelerator, DistributedType
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    accelerator = Accelerator(cpu=config.device == "cpu", kwargs_handlers=[
        InitProcessGroupKwargs(timeout=timedelta(seconds=config.dist_timeout_s)),
        # nothing changes a buffer during training: no broadcast before every forward
        DistributedDataParallelKwargs(broadcast_buffers=False),
    ])
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(f"magnet train runs data parallel (DDP); {accelerator.distributed_type.value} "
                         "shards the model, which its checkpoints do not support: launch with "
                         "deploy/accelerate/multi-gpu-7b.yaml (a LoRA run on a 7B base fits on each GPU)")
    return accelerator


def main_process_barrier(accelerator, config: TrainConfig):
    """A barrier for the other processes to wait for the main process's checkpoint and
    quality check: on a gloo group of its own whose timeout is `main_wait_s`, not the
    training collectives' `dist_timeout_s` (a hung all-reduce still fails fast)."""
    if accelerator.num_processes == 1:
        return lambda: None
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=config.main_wait_s))
    return lambda: dist.barrier(group=group)


def truncate_log(path: Path, step: int) -> None:
    """Keep only the records of steps before `step` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def draw_losses(log_path: Path, png: Path) -> None:
    from magnet.training.plot import plot_losses

    plot_losses(log_path, png)

