"""Data-parallel training: two CPU processes (gloo) on the tiny random Llama.

Launched the way a GPU run is (`accelerate launch`, `torchrun`), the two-process
run must train exactly like one process with twice the batch on the same data,
resume like an uninterrupted run, and survive a main-process quality check that
takes longer than the collectives' timeout.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from magnet.server.testing import free_port
from magnet.training.config import TrainConfig
from magnet.training.corpus import Corpus, share
from magnet.training.loop import train, view_spec

BIN = Path(sys.executable).parent
WORLD = 2
PER_PROCESS = {"batch_size": 2, "sscl_batch_size": 2}
TEXT = [
    "The quick brown fox jumps over the lazy dog and runs far away into the green forest today.",
    "A man is playing a guitar on the stage while the crowd sings along with him all night long.",
    "Paris is the capital of France and Berlin is the capital of Germany, two large European cities.",
    "She walked to the store, bought some milk, and came back home before the rain started to fall.",
    "The old library on the hill keeps thousands of books that nobody has opened for many years.",
    "Children played football in the park until their parents called them home for a warm dinner.",
]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A config file shared by every run (no LoRA dropout: its masks are drawn per process; fp32, as
    bf16 rounding differs between one batch of 4 and two gathered batches of 2)."""
    root = tmp_path_factory.mktemp("ddp")
    data = root / "text.txt"
    data.write_text("\n".join(TEXT * 2) + "\n")
    config = dict(data=[str(data)], model=str(tiny_model_dir), max_length=32, sscl_max_length=64,
                  min_sscl_words=5, max_steps=6, grad_accum=2, lr=1e-2, switch_at=0.5, checkpoint_every=2,
                  quality_check=False, span_min=16, span_max=64, lora_dropout=0.0, device="cpu", dtype="float32",
                  **PER_PROCESS)
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return root, path


def launch(command: list[str], root: Path, output: Path, *flags: str, timeout: float = 120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(root / "hf")}  # no user accelerate config
    result = subprocess.run([*command, "train", "--config", str(root / "config.json"), "--output", str(output),
                             "--no-progress", *flags], capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def accelerate_launch() -> list[str]:
    # --multi_gpu picks accelerate's torchrun launcher; --device cpu (the config) makes it gloo on CPU
    return [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(WORLD), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "magnet.cli"]


def torchrun() -> list[str]:
    return [str(BIN / "torchrun"), "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "magnet.cli"]


def losses(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def assert_same_adapter(left: Path, right: Path, rtol: float, atol: float) -> None:
    a = load_file(left / "adapter" / "adapter_model.safetensors")
    b = load_file(right / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol, msg=key)


@pytest.fixture(scope="module")
def two_processes(setup):
    root, _ = setup
    output = root / "two"
    result = launch(accelerate_launch(), root, output)
    assert result.stdout.count("adapter written to") == 1  # by the main process only
    assert "2 process(es) x batch 2 x 2 micro-batch(es): global batch 8" in result.stderr
    return output


def test_each_process_takes_its_share_of_the_one_process_batch(setup, tiny_loaded):
    _, path = setup
    one = TrainConfig.from_file(path, batch_size=2 * PER_PROCESS["batch_size"],
                                sscl_batch_size=2 * PER_PROCESS["sscl_batch_size"])
    per_process = TrainConfig.from_file(path)
    spec = view_spec(one, tiny_loaded.tokenizer, 300)
    single = Corpus.build(one, tiny_loaded.tokenizer, spec)
    shared = Corpus.build(per_process, tiny_loaded.tokenizer, spec)
    for step in range(3):
        whole = single.views(step, 1)
        parts = [shared.views(step, 1, rank, WORLD) for rank in range(WORLD)]
        assert [len(p) for p in parts] == [PER_PROCESS["batch_size"]] * WORLD
        assert [v.input_ids for p in parts for v in p] == [v.input_ids for v in whole]
        assert [v.labels for p in parts for v in p] == [v.labels for v in whole]
        xs, positives = single.sscl_batch(step, 0)
        shares = [shared.sscl_batch(step, 0, rank, WORLD) for rank in range(WORLD)]
        assert [x for s in shares for x in s[0]] == xs and [p for s in shares for p in s[1]] == positives
    assert share(list(range(7)), 1, 3) == [2, 3]  # equal shares; a remainder is nobody's
    with pytest.raises(ValueError, match="cannot be shared"):
        shared.sscl_batch(0, 0, 0, world=len(shared.sscl_pairs) + 1)


def test_two_processes_train_like_one_with_twice_the_batch(setup, two_processes):
    root, path = setup
    one = TrainConfig.from_file(path, output=str(root / "one"), batch_size=2 * PER_PROCESS["batch_size"],
                                sscl_batch_size=2 * PER_PROCESS["sscl_batch_size"])
    assert train(one, progress=False) is not None
    single, double = losses(root / "one"), losses(two_processes)
    assert [r["step"] for r in double] == list(range(1, 7))
    assert any(r["sscl"] > 0 for r in double)  # the SSCL steps (gathered negatives) are in the comparison
    for a, b in zip(single, double):
        for name in ("mntp", "sscl", "msg", "loss"):
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-5), (name, a, b)
    assert_same_adapter(root / "one", two_processes, rtol=1e-3, atol=1e-5)


def test_a_resumed_two_process_run_matches_the_uninterrupted_one(setup, two_processes):
    root, _ = setup
    output = root / "resumed"
    # with gradient checkpointing too: DDP's hooks fire once per parameter although a step runs
    # the decoder three times (x^m, x, x+), and recomputing changes no number
    launch(torchrun(), root, output, "--stop-after", "3", "--gradient-checkpointing")
    assert (output / "checkpoints" / "step-000003").is_dir() and not (output / "adapter").exists()
    launch(torchrun(), root, output, "--resume", "--gradient-checkpointing")
    resumed, straight = losses(output), losses(two_processes)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(straight, resumed):
        for name in ("mntp", "sscl", "msg"):
            assert a[name] == pytest.approx(b[name], rel=1e-4, abs=1e-6), (name, a, b)
    assert_same_adapter(two_processes, output, rtol=1e-4, atol=1e-6)


SLOW_QUALITY_CHECK = """
import sys, time
import magnet.training.quality as quality

real = quality.quality_report

def slow(*args, **kwargs):  # a quality check much longer than the collectives' timeout
    time.sleep({delay})
    return real(*args, **kwargs)

quality.quality_report = slow
from magnet.cli import main
raise SystemExit(main())
"""


def test_a_quality_check_longer_than_the_collective_timeout_does_not_fail_the_others(setup, tmp_path):
    root, _ = setup
    timeout, delay = 6, 15
    script = tmp_path / "slow_eval.py"
    script.write_text(SLOW_QUALITY_CHECK.format(delay=delay))
    command = [str(BIN / "torchrun"), "--nproc_per_node", str(WORLD), "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script)]
    output = tmp_path / "run"
    launch(command, root, output, "--max-steps", "3", "--eval-every", "2", "--dist-timeout-s", str(timeout))
    [check] = [json.loads(line) for line in (output / "quality.jsonl").read_text().splitlines()]
    assert check["step"] == 2  # written by the main process alone, at step 2; step 3 ran after it
    assert [r["step"] for r in losses(output)] == [1, 2, 3] and (output / "adapter").is_dir()


@pytest.mark.parametrize("name", ["multi-gpu-7b.yaml", "multi-node-7b.yaml"])
def test_the_accelerate_configs_launch_8_gpu_data_parallel_runs_with_the_papers_batch(name):
    """Parsed and validated by accelerate's own launcher code (no GPU here to run them on)."""
    import re

    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    path = Path(__file__).resolve().parent.parent / "deploy" / "accelerate" / name
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "magnet.cli", "train"])
    args, _, _ = _validate_launch_command(args)
    assert args.multi_gpu and not (args.use_fsdp or args.use_deepspeed)  # DDP: what magnet train runs
    assert args.mixed_precision == "bf16" and args.num_processes == 8 * args.num_machines
    [batch] = {int(b) for b in re.findall(r"--batch-size (\d+)", path.read_text())}
    assert args.num_processes * batch == 32 and "--gradient-checkpointing" in path.read_text()
