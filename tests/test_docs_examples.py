"""Every ```python block of README.md and docs/*.md runs, so no example can go stale.

A file's blocks run in order in one namespace (a later block may use an earlier
one's `client`), against the tiny model: a real server on a loopback port
stands in for http://localhost:8000 (MAGNET_URL, and the URL in the text), and
`Engine.from_spec(...)` / `Tagger.load(engine)` give the tiny engine and heads
made for it. A block that cannot run here is marked in the markdown with
`<!-- no-run: reason -->` on the line before it; those are listed below, so a
new one is a visible decision.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from magnet.engine import Engine
from magnet.server.app import create_app
from magnet.server.settings import Settings
from magnet.server.testing import serve_on_loopback
from magnet.tagging.features import engine_identity
from magnet.tagging.heads import HeadsManifest, TagHead, save_heads
from magnet.tagging.tagger import Tagger

ROOT = Path(__file__).resolve().parent.parent
# The real loaders, kept before docs_server replaces them for this module's life.
LOAD_ENGINE, LOAD_TAGGER = Engine.__dict__["from_spec"], Tagger.__dict__["load"]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_URL = "http://localhost:8000"
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(?P<reason>.+?)\s*-->$")
# Blocks that do not run here, as (file, reason): keep this short.
EXPECTED_NO_RUN = [
    ("docs/client.md", "needs the mteb package and downloads the task's data"),
]
LABELS = {"ner": ["B-PER", "I-PER", "B-LOC", "I-LOC", "O"], "pos": ["NNP", "VBZ", "IN", "."],
          "chunk": ["B-NP", "I-NP", "B-VP", "O"]}


@dataclass
class Block:
    file: str  # relative to the repository root
    line: int  # of the opening fence
    source: str
    no_run: str | None  # the reason, when marked


def python_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marked = NO_RUN.match(before)
            blocks.append(Block(str(path.relative_to(ROOT)), i + 1, "\n".join(lines[i + 1:end]),
                                marked["reason"] if marked else None))
            i = end
        i += 1
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in python_blocks(path)]
FILES_WITH_EXAMPLES = [path for path in DOC_FILES if any(b.no_run is None for b in python_blocks(path))]


def test_the_docs_have_examples_and_few_are_skipped():
    assert {b.file for b in ALL_BLOCKS} >= {"README.md", "docs/client.md", "docs/service.md", "docs/tagging.md"}
    assert sorted((b.file, b.no_run) for b in ALL_BLOCKS if b.no_run) == sorted(EXPECTED_NO_RUN)


# Flags of `magnet` commands whose values are input files the reader must have.
INPUT_FLAGS = ("data", "train", "valid", "pairs", "exclude", "stsb", "select-stsb", "conll-train", "conll-valid",
               "roc", "wikitext")
INPUT_VALUES = re.compile(r"--(?:%s)((?:[ \t]+(?!--|#|\[)[^\s`|\\\[\]]+)+)" % "|".join(INPUT_FLAGS))
PLACEHOLDERS = re.compile(r"^(\.\.\.|[A-Z]+(\.\.\.)?)$")  # FILE, FILE..., ...
SHARED_DATA_VARIABLE = ("$D/", "../shared/data/")  # docs/training.md's D=../shared/data


def documented_input_files() -> list[tuple[str, int, str]]:
    """(file, line, path) of every input file a documented command names."""
    found = []
    for path in DOC_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for values in INPUT_VALUES.findall(line):
                found += [(path.name, number, value.replace(*SHARED_DATA_VARIABLE))
                          for value in values.split() if not PLACEHOLDERS.match(value)]
    return found


def test_every_documented_data_file_exists_from_the_repository_root():
    """A reader runs the commands from a clone whose ../shared/data holds the data."""
    files = documented_input_files()
    assert len(files) >= 20 and all(p.startswith("../shared/data/") for _, _, p in files), [
        f for f in files if not f[2].startswith("../shared/data/")]
    assert [f for f in files if not (ROOT / f[2]).is_file()] == []


def test_the_data_file_scan_sees_a_bare_name():
    line = "magnet train --data wiki.train.raw ../x.csv [--output runs/x]   # comment --pairs FILE`"
    assert [v.split() for v in INPUT_VALUES.findall(line)] == [["wiki.train.raw", "../x.csv"], ["FILE"]]


COMMAND = re.compile(r"(?:^|\s)(?:magnet|-m magnet\.cli)\s+(serve|train-tagger|train|eval)\s(.*)")
SHELL_FENCES = ("```bash", "```sh")


def documented_commands() -> list[tuple[str, int, str, list[str]]]:
    """(file, line, sub-command, its arguments) of every `magnet` command in a shell block;
    an optional part written [--flag value] is kept (it is a usage too)."""
    found = []
    for path in DOC_FILES:
        lines, shell = path.read_text(encoding="utf-8").splitlines(), False
        number = 0
        while number < len(lines):
            line = lines[number]
            if line.strip().startswith("```"):
                shell = not shell and line.strip() in SHELL_FENCES
            elif shell:
                start = number
                while line.rstrip().endswith("\\") and number + 1 < len(lines):
                    number += 1
                    line = line.rstrip()[:-1] + " " + lines[number].strip()
                match = COMMAND.search(line.split(" #")[0])
                if match:
                    words = match[2].replace("[", " ").replace("]", " ").replace(*SHARED_DATA_VARIABLE).split()
                    found.append((path.name, start + 1, match[1], words))
            number += 1
    return found


def test_every_documented_magnet_command_parses(capsys):
    """Each documented command's flags exist and take the values shown (parsed, not run)."""
    import argparse
    import importlib

    from magnet.cli import COMMANDS, take_threads_flag

    commands = documented_commands()
    assert len(commands) >= 20 and {c[2] for c in commands} == {"serve", "train", "train-tagger", "eval"}
    wrong = []
    for name, line, command, words in commands:
        parser = argparse.ArgumentParser(prog=f"magnet {command}", exit_on_error=False)
        importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
        try:
            parser.parse_args(take_threads_flag(words)[1])
        except (argparse.ArgumentError, SystemExit) as exc:
            wrong.append(f"{name}:{line}: magnet {command} {' '.join(words)}: {exc}")
    assert wrong == [], "\n".join(wrong) + capsys.readouterr().err


def tiny_heads(engine, directory: Path) -> Path:
    """Untrained heads for every task, made for the tiny engine (so they load, and tag at random)."""
    identity = engine_identity(engine)
    hidden = engine.model.config.hidden_size
    heads = {task: TagHead(hidden, labels).eval() for task, labels in LABELS.items()}
    save_heads(directory, heads, HeadsManifest(identity.base, identity.adapter, tasks=list(LABELS)))
    return directory


@pytest.fixture(scope="module")
def docs_server(tiny_chat_engine, tmp_path_factory, hub_client_may_reach_loopback):
    heads = tiny_heads(tiny_chat_engine, tmp_path_factory.mktemp("docs") / "heads")
    load_tagger = Tagger.load.__func__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "from_spec", classmethod(lambda cls, spec=None, config=None: tiny_chat_engine))
        patch.setattr(Tagger, "load",
                      classmethod(lambda cls, engine, heads_dir=heads: load_tagger(cls, engine, heads_dir)))
        patch.delenv("MAGNET_API_KEY", raising=False)
        settings = Settings(generate_backend="torch", heads=str(heads), api_key=None)
        with serve_on_loopback(create_app(settings, engine=tiny_chat_engine)) as base_url:
            patch.setenv("MAGNET_URL", base_url)
            yield base_url


@dataclass
class Shown:
    """What the docs show a statement gives: a value (a literal in the comment lines right
    under an expression) or, under a print(), the printed text."""

    file: str
    line: int  # of the statement
    value: object = None
    printed: str | None = None


def comment_under(lines: list[str], end: int) -> str | None:
    """The text of the '#' lines right under line `end` (0-based index of the next line)."""
    texts = []
    while end < len(lines) and lines[end].lstrip().startswith("#"):
        texts.append(lines[end].lstrip()[1:].removeprefix(" "))
        end += 1
    return "\n".join(texts) if texts else None


def literal(text: str):
    """The documented value, JSON or Python literal; NOT_A_LITERAL for prose."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return NOT_A_LITERAL


NOT_A_LITERAL = object()


def statements(block: Block, url: str) -> list[tuple[ast.stmt, Shown | None]]:
    """The block's top-level statements (URL replaced), each with what the docs show it gives."""
    lines = block.source.splitlines()  # the outputs as documented
    pairs = []
    for statement in ast.parse(block.source.replace(DOCUMENTED_URL, url)).body:
        text = comment_under(lines, statement.end_lineno)
        line = block.line + statement.lineno
        is_expression = isinstance(statement, ast.Expr)
        is_print = is_expression and isinstance(statement.value, ast.Call) and getattr(
            statement.value.func, "id", None) == "print"
        value = literal(text) if text is not None else NOT_A_LITERAL
        if text is not None and is_print:
            pairs.append((statement, Shown(block.file, line, printed=text)))
        elif value is not NOT_A_LITERAL and is_expression:
            pairs.append((statement, Shown(block.file, line, value=value)))
        else:
            pairs.append((statement, None))
    return pairs


def run_block(block: Block, namespace: dict, url: str) -> list[tuple[Shown, object]]:
    """Run a block statement by statement; (what the docs show, what it gave) for each
    statement with a documented output."""
    checked = []
    for statement, shown in statements(block, url):
        code = ast.Module(body=[statement], type_ignores=[])
        ast.increment_lineno(code, block.line)  # a traceback's line number is the markdown file's
        if shown is not None and shown.printed is not None:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(code, block.file, "exec"), namespace)
            checked.append((shown, out.getvalue().replace(url, DOCUMENTED_URL)))
        elif shown is not None:
            expression = ast.Expression(body=code.body[0].value)
            checked.append((shown, plain(eval(compile(expression, block.file, "eval"), namespace))))
        else:
            exec(compile(code, block.file, "exec"), namespace)
    return checked


def plain(value):
    """Results as the docs write them: pydantic models and numpy arrays as plain data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def same_shape(real, shown) -> bool:
    """The documented shape: same dict keys, list items shaped like the documented first item,
    same kinds of scalars (the tiny random model's words and numbers differ)."""
    if isinstance(shown, dict):
        return isinstance(real, dict) and set(real) == set(shown) and all(same_shape(real[k], v) for k, v in shown.items())
    if isinstance(shown, (list, tuple)):
        return isinstance(real, (list, tuple)) and (not shown or all(same_shape(r, shown[0]) for r in real))
    if isinstance(shown, bool) or shown is None:
        return type(real) is type(shown)
    if isinstance(shown, (int, float)):
        return isinstance(real, (int, float)) and not isinstance(real, bool)
    return isinstance(real, type(shown))


def same_value(real, shown, tolerance: float) -> bool:
    """The documented value itself; numbers within `tolerance` (docs round them)."""
    if isinstance(shown, dict):
        return isinstance(real, dict) and set(real) == set(shown) and all(
            same_value(real[k], v, tolerance) for k, v in shown.items())
    if isinstance(shown, (list, tuple)):
        return isinstance(real, (list, tuple)) and len(real) == len(shown) and all(
            same_value(r, v, tolerance) for r, v in zip(real, shown))
    if isinstance(shown, float):
        return isinstance(real, (int, float)) and abs(real - shown) <= tolerance
    return real == shown


def check_shown(checked: list[tuple[Shown, object]], exact: bool) -> list[str]:
    """One line per documented output that the code does not give today."""
    wrong = []
    for shown, got in checked:
        if shown.printed is not None:
            ok = got.rstrip("\n") == shown.printed
        else:
            ok = same_value(got, shown.value, SCORE_TOLERANCE) if exact else same_shape(got, shown.value)
        if not ok:
            wrong.append(f"{shown.file}:{shown.line}: the docs show {shown.printed or shown.value!r}, "
                         f"the code gives {got!r}")
    return wrong


# Outputs shown under examples, at least (a literal under an expression, or a print's text).
SHOWN_OUTPUTS = {"service.md": 2, "tagging.md": 2, "client.md": 1}
# Documented numbers are rounded, and a retrained adapter moves a cosine a little.
SCORE_TOLERANCE = 0.02


def run_file(path: Path, url: str) -> list[tuple[Shown, object]]:
    namespace = {"__name__": "__docs__"}
    return [pair for block in python_blocks(path) if block.no_run is None for pair in run_block(block, namespace, url)]


@pytest.mark.parametrize("path", FILES_WITH_EXAMPLES, ids=lambda p: p.name)
def test_the_examples_of_a_file_run_and_give_the_documented_shapes(path, docs_server, capsys):
    checked = run_file(path, docs_server)
    assert len(checked) >= SHOWN_OUTPUTS.get(path.name, 0)  # none goes unchecked by a change of form
    assert check_shown(checked, exact=False) == []
    printed = capsys.readouterr().out
    assert "model='" not in printed and "Chunk(" not in printed  # examples print text, not pydantic objects


def test_the_output_check_catches_a_wrong_shape_and_a_wrong_print(docs_server):
    block = Block("x.md", 1, 'import httpx\n'
                             'httpx.post("http://localhost:8000/tokenize", json={"prompt": "a"}).json()\n'
                             '# {"tokens": [1], "count": 1}\n'
                             'print("hello")\n'
                             '# hullo\n', None)
    wrong = check_shown(run_block(block, {}, docs_server), exact=False)
    assert len(wrong) == 2 and "max_model_len" in wrong[0] and "'hello\\n'" in wrong[1]


def test_the_print_check_catches_a_printed_object(docs_server, capsys):
    from magnet.client import MagnetClient

    with MagnetClient() as client:
        print(next(iter(client.generate_stream("Once upon a time", max_tokens=2))), end="")
    assert "model='" in capsys.readouterr().out


@pytest.fixture(scope="module")
def real_docs_server(hub_client_may_reach_loopback):
    """The embedded model with the default adapter and shipped heads, served as the docs say."""
    from magnet.loading import ModelSpec

    engine = LOAD_ENGINE.__func__(Engine, ModelSpec(device="cpu"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Tagger, "load", LOAD_TAGGER)
        patch.setattr(Engine, "from_spec", classmethod(lambda cls, spec=None, config=None: engine))
        patch.delenv("MAGNET_API_KEY", raising=False)
        with serve_on_loopback(create_app(Settings(generate_backend="torch", api_key=None), engine=engine)) as url:
            patch.setenv("MAGNET_URL", url)
            yield url


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tagging.md", "service.md"])
def test_the_documented_outputs_are_the_default_models(name, real_docs_server):
    """The values the docs show (tags, token ids, scores to SCORE_TOLERANCE) are what the
    embedded model with the default adapter and heads gives. A new default adapter or new
    heads: run this test, and copy the outputs it reports into the docs."""
    # Only the blocks that show outputs (each runs on its own): the rest run in the fast test.
    blocks = [b for b in python_blocks(ROOT / "docs" / name)
              if b.no_run is None and any(shown for _, shown in statements(b, real_docs_server))]
    checked = [pair for block in blocks for pair in run_block(block, {"__name__": "__docs__"}, real_docs_server)]
    assert len(checked) >= SHOWN_OUTPUTS[name]
    assert check_shown(checked, exact=True) == []
