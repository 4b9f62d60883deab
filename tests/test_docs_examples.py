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


def tiny_heads(engine, directory: Path) -> Path:
    """Untrained heads for every task, made for the tiny engine (so they load, and tag at random)."""
    identity = engine_identity(engine)
    hidden = engine.model.config.hidden_size
    heads = {task: TagHead(hidden, labels).eval() for task, labels in LABELS.items()}
    save_heads(directory, heads, HeadsManifest(identity.base, identity.adapter, tasks=list(LABELS)))
    return directory


@pytest.fixture(scope="module")
def docs_server(tiny_chat_engine, tmp_path_factory):
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


@pytest.mark.parametrize("path", FILES_WITH_EXAMPLES, ids=lambda p: p.name)
def test_the_examples_of_a_file_run(path, docs_server, capsys):
    runnable = [b for b in python_blocks(path) if b.no_run is None]
    namespace = {"__name__": "__docs__"}
    for block in runnable:
        # Padded so a traceback's line number is the markdown file's.
        source = "\n" * block.line + block.source.replace(DOCUMENTED_URL, docs_server)
        exec(compile(source, block.file, "exec"), namespace)
    printed = capsys.readouterr().out
    assert "model='" not in printed and "Chunk(" not in printed  # examples print text, not pydantic objects


def test_the_print_check_catches_a_printed_object(docs_server, capsys):
    from magnet.client import MagnetClient

    with MagnetClient() as client:
        print(next(iter(client.generate_stream("Once upon a time", max_tokens=2))), end="")
    assert "model='" in capsys.readouterr().out
