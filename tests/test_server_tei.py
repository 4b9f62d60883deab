"""The TEI dialect (POST /embed, POST /, POST /rerank, GET /info) on the tiny model: TEI's shapes,
the engine's own numbers, and a 4xx naming what to change for what Magnet cannot do."""
from __future__ import annotations

import pytest

import magnet
from magnet.server.testing import app_with, assert_error, running_app

TEXTS = ["Paris is the capital of France.", "A man plays the guitar.", "The quick brown fox jumps."]
QUERY = "A man is playing a guitar."


@pytest.fixture
async def client(tiny_engine):
    async with running_app(app_with(tiny_engine, max_client_batch_size=5)) as http:
        yield http


def close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("path", ["/embed", "/"])
async def test_embed_returns_one_row_per_input_equal_to_the_engines(client, tiny_engine, path):
    rows = (await client.post(path, json={"inputs": TEXTS})).json()
    expected = tiny_engine.embed(TEXTS).embeddings.tolist()
    assert len(rows) == 3 and all(close(r, e) for r, e in zip(rows, expected))
    [single] = (await client.post(path, json={"inputs": TEXTS[1]})).json()  # a lone text: a list of one row
    assert close(single, expected[1])


async def test_normalize_false_gives_the_raw_vectors(client, tiny_engine):
    [row] = (await client.post("/embed", json={"inputs": [TEXTS[0]], "normalize": False})).json()
    assert close(row, tiny_engine.embed([TEXTS[0]], normalize=False).embeddings[0].tolist(), 1e-4)
    assert abs(sum(x * x for x in row) - 1) > 1e-3  # not unit length


async def test_token_ids_embed_as_the_text_they_spell(client, tiny_engine):
    ids = tiny_engine.tokens(TEXTS[0])
    from_ids = (await client.post("/embed", json={"inputs": [ids]})).json()
    from_text = (await client.post("/embed", json={"inputs": [TEXTS[0]]})).json()
    assert close(from_ids[0], from_text[0])


async def test_truncation_cuts_the_chosen_end(client, tiny_engine):
    long = " ".join(TEXTS * 40)  # over the tiny model's 256-token limit
    assert_error(await client.post("/embed", json={"inputs": long}), 422, "input_too_long", "truncate")
    right = (await client.post("/embed", json={"inputs": long, "truncate": True})).json()[0]
    left = (await client.post("/embed", json={"inputs": long, "truncate": True,
                                               "truncation_direction": "Left"})).json()[0]
    assert close(right, tiny_engine.embed([long], truncate=True).embeddings[0].tolist())
    assert not close(left, right, 1e-3)  # the start was cut, not the end
    ends_the_same = long + " Tom went home."
    shifted = (await client.post("/embed", json={"inputs": ends_the_same, "truncate": True,
                                                  "truncation_direction": "left"})).json()[0]
    assert not close(shifted, left, 1e-3)  # a left cut keeps the end, so a new end changes the vector
    # exactly the text's last tokens, the instruction and both ends kept (no decode and re-tokenize)
    head, body = tiny_engine.instruction_ids(tiny_engine.instruction), tiny_engine.tokens(long)
    room = tiny_engine.max_length - len(head) - 2
    row = [tiny_engine.anchor_id] + head + body[-room:] + [tiny_engine.tokenizer.eos_token_id]
    assert close(left, tiny_engine.embed_token_ids([row]).embeddings[0].tolist())


@pytest.mark.parametrize("body, words", [
    ({"inputs": TEXTS, "prompt_name": "query"}, ["prompt_name", "instruction"]),
    ({"inputs": TEXTS, "dimensions": 8}, ["dimensions"]),
    ({"inputs": ["ok", " "]}, ["inputs[1]", "empty"]),
    ({"inputs": []}, ["inputs", "at least one"]),
    ({"inputs": ["a", [1, 2]]}, ["mixes"]),
    ({"inputs": TEXTS, "truncation_direction": "middle"}, ["truncation_direction"]),
])
async def test_what_magnet_cannot_do_is_a_422_saying_so(client, body, words):
    assert_error(await client.post("/embed", json=body), 422, "invalid_input", *words)


async def test_an_id_outside_the_vocabulary_is_a_422_naming_it(client, tiny_engine):
    vocabulary = len(tiny_engine.tokenizer)
    response = await client.post("/embed", json={"inputs": [[1, 2], [3, vocabulary + 7]]})
    assert_error(response, 422, "invalid_input", f"inputs[1][1] is token id {vocabulary + 7}",
                 "check_embedding_ctx_length=False")


async def test_more_inputs_than_the_client_batch_size_is_a_413_naming_it(client):
    assert (await client.post("/embed", json={"inputs": ["x"] * 5})).status_code == 200
    assert_error(await client.post("/embed", json={"inputs": ["x"] * 6}), 413, "payload_too_large",
                 "6 inputs", "limit of 5", "max_client_batch_size")
    assert_error(await client.post("/rerank", json={"query": QUERY, "texts": ["x"] * 6}), 413,
                 "payload_too_large", "limit of 5")
    for path in ("/v1/embed", "/v1/embeddings"):  # the native and OpenAI routes keep the same limit
        assert (await client.post(path, json={"input": ["x"] * 5})).status_code == 200
        assert_error(await client.post(path, json={"input": ["x"] * 6}), 413, "payload_too_large",
                     "6 inputs", "limit of 5")


async def test_rerank_is_tei_shaped_best_first_and_equal_to_v1_score(client):
    ranks = (await client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": False,
                                                 "truncate": True, "truncation_direction": "right"})).json()
    scored = (await client.post("/v1/score", json={"query": QUERY, "texts": TEXTS})).json()
    assert ranks == scored  # [{"index", "score"}], best first
    assert set(ranks[0]) == {"index", "score"}
    assert [r["score"] for r in ranks] == sorted((r["score"] for r in ranks), reverse=True)
    with_text = (await client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True})).json()
    assert all(r["text"] == TEXTS[r["index"]] for r in with_text)


async def test_rerank_scores_are_cosines_of_the_engines_embeddings(client, tiny_engine):
    ranks = (await client.post("/rerank", json={"query": QUERY, "texts": TEXTS})).json()
    query, *texts = tiny_engine.embed([QUERY, *TEXTS]).embeddings
    for rank in ranks:
        assert abs(rank["score"] - float(query @ texts[rank["index"]])) < 1e-5


async def test_info_reports_the_model_and_the_limits(client, tiny_engine):
    info = (await client.get("/info")).json()
    assert info["model_id"] == info["served_model_name"] == tiny_engine.name
    assert info["model_dtype"] == "float32"
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert info["max_input_length"] == tiny_engine.max_length
    assert info["max_client_batch_size"] == 5
    assert info["auto_truncate"] is False and info["version"] == magnet.__version__
    assert {"max_concurrent_requests", "max_batch_tokens", "tokenization_workers"} <= set(info)


async def test_tei_routes_need_the_api_key_when_one_is_set(tiny_engine):
    async with running_app(app_with(tiny_engine, api_key="k")) as http:
        for method, path, body in (("POST", "/embed", {"inputs": "x"}), ("POST", "/", {"inputs": "x"}),
                                   ("POST", "/rerank", {"query": "q", "texts": ["a"]}), ("GET", "/info", None)):
            assert (await http.request(method, path, json=body)).status_code == 401, path
            authorized = await http.request(method, path, json=body, headers={"Authorization": "Bearer k"})
            assert authorized.status_code == 200, path
