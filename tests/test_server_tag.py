"""/v1/tag: the real Tagger with heads trained on the tiny model, and batching on the worker."""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest
from test_tagging_tagger import SAMPLE, train  # the tagging suite's tiny CoNLL sample and trainer
from test_server_prepared import tokenizer_calls  # noqa: F401  (a fixture: counts tokenizer calls)

from magnet.server.app import create_app
from magnet.server.settings import Settings
from magnet.server.testing import occupy_worker, running_app

WORDS = ["Peter", "Blackburn", "lives", "in", "Brussels", "."]


@pytest.fixture(scope="module")
def heads_dir(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    sample = root / "sample.txt"
    sample.write_text(SAMPLE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAGNET_CACHE_DIR", str(root / "cache"))
        train(tiny_model_dir, sample, root / "heads")
    return root / "heads"


@pytest.fixture
async def client(tiny_engine, heads_dir):
    settings = Settings(generate_backend="torch", heads=str(heads_dir))  # loaded by the server
    async with running_app(create_app(settings, engine=tiny_engine)) as http:
        yield http


async def test_tag_words_gives_the_heads_tags_and_word_index_entities(client):
    body = (await client.post("/v1/tag", json={"words": [WORDS], "task": "ner"})).json()
    [result] = body["results"]
    assert body["task"] == "ner" and result["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert result["entities"] == [{"text": "Peter Blackburn", "label": "PER", "start": 0, "end": 2},
                                  {"text": "Brussels", "label": "LOC", "start": 4, "end": 5}]


async def test_tag_text_entities_are_character_offsets(client):
    text = "Peter Blackburn lives in Brussels ."
    [result] = (await client.post("/v1/tag", json={"input": text, "task": "ner"})).json()["results"]
    assert result["words"] == WORDS
    for entity in result["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]


async def test_pos_has_no_entities_and_health_lists_tasks(client):
    [result] = (await client.post("/v1/tag", json={"words": [WORDS], "task": "pos"})).json()["results"]
    assert result["tags"] == ["NNP", "NNP", "VBZ", "IN", "NNP", "."] and result["entities"] == []
    health = (await client.get("/health")).json()
    assert sorted(health["tasks"]) == ["chunk", "ner", "pos"] and health["backends"]["tag"] == "torch"


async def test_unknown_task_is_422_listing_the_loaded_tasks(client):
    response = await client.post("/v1/tag", json={"input": "Peter lives here.", "task": "srl"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_task" and all(t in error["message"] for t in ("ner", "pos", "chunk"))


@pytest.mark.parametrize("body, words", [
    ({"task": "ner"}, ["exactly one of 'input'"]),
    ({"input": "a", "words": [["a"]]}, ["exactly one of 'input'"]),
    ({"words": [["a", " "]]}, ["words[0]", "empty word"]),
    ({"input": ["ok", ""]}, ["input[1]", "empty"]),
])
async def test_bad_tag_bodies_are_422(client, body, words):
    response = await client.post("/v1/tag", json=body)
    assert response.status_code == 422
    assert all(w in response.json()["error"]["message"] for w in words)


async def test_explicit_heads_of_another_model_refuse_to_load(tiny_engine, heads_dir, tmp_path):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(heads_dir, other)
    manifest = json.loads((other / "magnet.json").read_text())
    manifest["base"]["hidden_size"] = 576
    (other / "magnet.json").write_text(json.dumps(manifest))
    app = create_app(Settings(generate_backend="torch", heads=str(other)), engine=tiny_engine)
    with pytest.raises(RuntimeError, match="hidden_size: 576 != 32"):
        async with running_app(app):
            pass


class CaseTagger:
    """A one-task tagger (capitalised word -> B-CAP) that records each call's batch and thread."""

    tasks = ["case"]

    def __init__(self):
        self.calls: list[tuple[int, int]] = []  # (number of items, thread id)

    def prepare(self, texts=None, words=None) -> list[CaseItem]:
        return [CaseItem(w) for w in ([t.split() for t in texts] if texts is not None else words)]

    def tag_items(self, items: list[CaseItem], task: str) -> list[dict]:
        self.calls.append((len(items), threading.get_ident()))
        return [{"words": item.words, "tags": ["B-CAP" if x[:1].isupper() else "O" for x in item.words],
                 "entities": []} for item in items]


@dataclass
class CaseItem:
    words: list[str]

    @property
    def n_tokens(self) -> int:
        return len(self.words) + 1


async def test_tag_and_embed_requests_share_the_worker_and_batch(tiny_engine):
    tagger = CaseTagger()
    app = create_app(Settings(generate_backend="torch", heads="none"), engine=tiny_engine, tagger=tagger)
    worker = app.state.service.worker
    async with running_app(app) as http:
        release, held = await occupy_worker(worker)
        texts = ["Peter lives", "in Brussels", "The Commission"]
        tags = [asyncio.ensure_future(http.post("/v1/tag", json={"input": t, "task": "case"})) for t in texts]
        embed = asyncio.ensure_future(http.post("/v1/embed", json={"input": "a fox"}))
        while worker.depth < 4:
            await asyncio.sleep(0.001)
        release.set()
        answers = [(await t).json()["results"][0]["tags"] for t in tags]
        assert (await embed).status_code == 200
        await held
    assert answers == [["B-CAP", "O"], ["O", "B-CAP"], ["B-CAP", "B-CAP"]]
    assert [n for n, _ in tagger.calls] == [3]  # three requests, one tagger call
    assert tagger.calls[0][1] != threading.get_ident()


async def test_a_tag_request_is_tokenized_once(client, tiny_engine, tokenizer_calls):
    """The token ids that price a tag request (admission, the queue) are the ones the model reads."""
    texts = ["Peter lives in Brussels.", "Anna sings."]
    tokenizer_calls.clear()
    response = await client.post("/v1/tag", json={"input": texts, "task": "ner"})
    assert response.status_code == 200, response.text
    assert tokenizer_calls == [texts]  # one batched call, on the tokenizer thread
