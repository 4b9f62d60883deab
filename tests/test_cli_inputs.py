"""`magnet` sub-commands fail in one line, before loading a model: a missing input file names
its flag, and a missing optional package names the `pip install` that adds it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from magnet.cli import main


def run_magnet(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags, named", [
    (["--data", "wiki.train.raw"], "--data wiki.train.raw: no such file"),
    (["--data", "{data}", "--pairs", "nope.tsv"], "--pairs nope.tsv: no such file"),
    (["--data", "{data}", "--init-adapter", "no/adapter"], "--init-adapter no/adapter: no such folder"),
    (["--config", "missing.json"], "--config missing.json: no such file"),
    ([], "no training text: pass --data FILE"),
    (["--data", "{data}", "--context", "sideways"], "unknown context 'sideways': choose one of bidirectional"),
    (["--data", "{data}", "--lr-decay", "linear"], "unknown lr_decay 'linear': choose one of constant, cosine"),
    (["--data", "{data}", "--augmenter", "shuffle"], "unknown augmenter 'shuffle'"),
    (["--data", "{data}", "--dtype", "float64"], "unknown dtype 'float64'"),
])
def test_train_names_a_missing_input_before_loading_anything(flags, named, tmp_path, monkeypatch):
    data = tmp_path / "text.raw"
    data.write_text("Some text.\n")
    monkeypatch.chdir(tmp_path)
    loads = []
    monkeypatch.setattr("magnet.training.loop.train", lambda *a, **k: loads.append(a))
    argv = ["train", "--output", str(tmp_path / "run"), *[f.format(data=data) for f in flags]]
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert named in str(raised.value) and "\n" not in str(raised.value) and loads == []


@pytest.mark.parametrize("text, named", [
    ("{not json", "recipe.json: not JSON"),
    ("[1, 2]", "recipe.json: must be a JSON object"),
    ('{"max_stepz": 3}', "recipe.json: unknown training setting(s): max_stepz"),
])
def test_a_bad_config_file_is_named_in_one_line(text, named, tmp_path, monkeypatch):
    (tmp_path / "recipe.json").write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        main(["train", "--config", "recipe.json", "--output", str(tmp_path / "run")])
    assert named in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("phases, named", [
    ([{"name": "fill"}, {"name": "graded", "graded_pairs": ["nope.csv"], "graded_weight": 1}],
     "--graded-pairs nope.csv: no such file"),
    ([{"name": "fill", "init_adapter": "no/adapter"}], "--init-adapter no/adapter: no such folder"),
    ([{"name": "fill"}, {"name": "fill"}], "recipe.json: phases[1]: the name 'fill' is taken"),
    ([{"name": "fill", "context": "sideways"}], "unknown context 'sideways'"),
])
def test_a_recipe_names_a_bad_phase_before_loading_anything(phases, named, tmp_path, monkeypatch):
    import json

    data = tmp_path / "text.raw"
    data.write_text("Some text.\n")
    (tmp_path / "recipe.json").write_text(json.dumps({"data": [str(data)], "phases": phases}))
    monkeypatch.chdir(tmp_path)
    loads = []
    monkeypatch.setattr("magnet.training.loop.train", lambda *a, **k: loads.append(a))
    with pytest.raises(SystemExit) as raised:
        main(["train", "--config", "recipe.json", "--output", str(tmp_path / "run")])
    assert named in str(raised.value) and "\n" not in str(raised.value) and loads == []


@pytest.mark.parametrize("argv, missing, extra", [
    (["serve", "--help"], "pydantic_settings", "server"),
    (["serve", "--port", "1"], "fastapi", "server"),     # --help needs no fastapi: serving does
    (["train", "--data", __file__, "--output", "o"], "torch", "train"),
    (["eval", "sts", "--help"], "torch", "train"),
])
def test_a_missing_extra_is_named_with_its_install_command(argv, missing, extra):
    # The module is made unimportable as in a client-only install (None in sys.modules).
    command = argv[0]
    out = run_magnet(f"import sys; sys.modules[{missing!r}] = None\n"
                     f"from magnet.cli import main; sys.exit(main({argv!r}))")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"magnet {command}: No module named {missing!r}. The bare install is the client only; add the {extra} "
        f"extra: from the repository, pip install \".[{extra}]\" (torch first, as README.md's "
        "\"Install pieces separately\" says)")
    assert "Traceback" not in out.stderr


def test_a_module_no_extra_provides_still_raises():
    out = run_magnet("import sys; sys.modules['vllm'] = None\n"
                     "import magnet.server.cli as c\n"
                     "def run(args):\n    import vllm\n"
                     "c.run = run\n"
                     "from magnet.cli import main; sys.exit(main(['serve']))")
    assert "ModuleNotFoundError" in out.stderr and "pip install" not in out.stderr


@pytest.mark.parametrize("argv", [
    ["eval", "sts", "--data", "nope.csv"],
    ["eval", "infill", "--data", "nope.csv"],
    ["eval", "tagging", "--data", "nope.txt"],
    ["train-tagger", "--train", "nope.txt", "--out", "heads"],
])
def test_every_command_names_a_missing_input_file_in_one_line(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("magnet.model_options.load_engine", lambda *a, **k: pytest.fail("loaded a model first"))
    with pytest.raises(SystemExit) as raised:
        main(argv)
    message = str(raised.value)
    assert "nope." in message and "no such file" in message and "\n" not in message


@pytest.mark.parametrize("spec, named", [
    ({"adapter": "/nonexistent"}, "--adapter /nonexistent: no adapter_config.json"),
    ({"model": "/nonexistent"}, "--model /nonexistent: expected a local Hugging Face checkpoint"),
    ({"dtype": "float64"}, "--dtype float64: unknown dtype 'float64'"),
    ({"device": "toaster"}, "--device toaster: Expected one of cpu, cuda"),
])
def test_a_model_option_that_cannot_load_ends_the_command_in_one_line(spec, named):
    from magnet.loading import ModelSpec
    from magnet.model_options import engine_of

    with pytest.raises(SystemExit) as raised:
        engine_of(ModelSpec(**spec))
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_eval_tagging_names_missing_heads_before_loading_the_model(monkeypatch, tmp_path):
    from magnet import model_options

    loads = []
    monkeypatch.setattr(model_options, "load_engine", lambda args: loads.append(args))
    with pytest.raises(SystemExit) as raised:
        main(["eval", "tagging", "--heads", str(tmp_path / "none")])
    assert "no tagging heads in" in str(raised.value) and loads == []


def test_serve_names_a_bad_key_file_or_adapters_variable_in_one_line(monkeypatch, tmp_path):
    from magnet.server.shutdown import MagnetServer

    def serve(self):
        raise AssertionError("the server would have started")

    monkeypatch.setattr(MagnetServer, "run", serve)
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--api-key-file", str(tmp_path / "no-key")])
    assert "api_key_file" in str(raised.value) and "No such file" in str(raised.value)
    monkeypatch.setenv("MAGNET_ADAPTERS", "legal=/ckpt/legal")
    with pytest.raises(SystemExit) as raised:
        main(["serve"])
    assert "MAGNET_ADAPTERS='{\"legal\": \"/ckpt/legal\"}'" in str(raised.value)


def test_a_flag_wins_over_every_phase_of_a_recipe_but_its_folders(tmp_path, monkeypatch):
    import json

    data = tmp_path / "text.raw"
    data.write_text("Some text.\n")
    phases = [{"name": "fill", "max_steps": 1200, "lr": 1e-4}, {"name": "sscl", "max_steps": 120}]
    (tmp_path / "recipe.json").write_text(json.dumps({"data": [str(data)], "lora_r": 32, "phases": phases}))
    trained = []
    monkeypatch.setattr("magnet.training.phases.run_phases", lambda phases, **k: trained.extend(phases))
    main(["train", "--config", str(tmp_path / "recipe.json"), "--output", str(tmp_path / "run"),
          "--max-steps", "5", "--lora-r", "4"])
    assert [(p.config.max_steps, p.config.lora_r, p.config.lr) for p in trained] == [(5, 4, 1e-4), (5, 4, 3e-5)]
    assert [p.config.output for p in trained] == [str(tmp_path / "run" / "fill"), str(tmp_path / "run" / "sscl")]
    assert trained[1].config.init_adapter == str(tmp_path / "run" / "fill" / "adapter")
