"""The official `openai` SDK against the app: embeddings, completions (suffix = infill), models."""
from __future__ import annotations

import base64
import struct

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, OpenAI

from magnet.server.testing import app_with, running_app, serve_on_loopback

TEXTS = ["A man is playing a guitar.", "Paris is the capital of France."]



def close(a, b, tol=1e-5) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < tol


@pytest.fixture(scope="module")
def sync_openai(tiny_engine):
    """A real uvicorn on a loopback port (the sync SDK needs a sync transport)."""
    with serve_on_loopback(app_with(tiny_engine)) as base_url:
        with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client


def test_embeddings_float_and_base64_match_the_engine(sync_openai, tiny_engine):
    want = tiny_engine.embed(TEXTS).embeddings.tolist()
    floats = sync_openai.embeddings.create(model="magnet", input=TEXTS, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens > 0
    assert all(close(d.embedding, w) for d, w in zip(floats.data, want))
    raw = sync_openai.embeddings.create(model="magnet", input=TEXTS, encoding_format="base64")
    decoded = [list(struct.unpack(f"<{len(w)}f", base64.b64decode(d.embedding))) for d, w in zip(raw.data, want)]
    assert all(close(d, w) for d, w in zip(decoded, want))
    default = sync_openai.embeddings.create(model="magnet", input=TEXTS[0])  # base64 on the wire, decoded by the SDK
    assert close(default.data[0].embedding, want[0])


def test_embeddings_with_dimensions_are_a_400_naming_the_field(sync_openai):
    with pytest.raises(BadRequestError) as caught:
        sync_openai.embeddings.create(model="magnet", input=TEXTS, dimensions=8)
    assert "dimensions" in str(caught.value) and "omit it" in str(caught.value)


def test_completions_generate_and_suffix_infills(sync_openai, tiny_engine):
    from dataclasses import replace

    from magnet.sampling import INFILL_DEFAULTS, SamplingParams

    params = SamplingParams(max_tokens=6)
    plain = sync_openai.completions.create(model="magnet", prompt="The quick brown", max_tokens=6, temperature=0)
    assert plain.choices[0].text == tiny_engine.generate("The quick brown", params).text
    filled = sync_openai.completions.create(model="magnet", prompt="The quick ", suffix=" the lazy dog.",
                                            max_tokens=6, temperature=0)
    want = tiny_engine.infill(["The quick ", " the lazy dog."], replace(INFILL_DEFAULTS, max_tokens=6))
    assert filled.choices[0].text == want.text and filled.usage.completion_tokens == want.completion_tokens


def test_streamed_completion_adds_up(sync_openai):
    whole = sync_openai.completions.create(model="magnet", prompt="The quick brown", max_tokens=6, temperature=0)
    pieces = list(sync_openai.completions.create(model="magnet", prompt="The quick brown", max_tokens=6,
                                                 temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(p.usage is None for p in pieces)  # not asked for
    counted = list(sync_openai.completions.create(model="magnet", prompt="The quick brown", max_tokens=6, n=2,
                                                  temperature=0, stream=True, stream_options={"include_usage": True}))
    assert counted[-1].choices == [] and counted[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert counted[-1].usage.completion_tokens == 2 * whole.usage.completion_tokens  # both choices' tokens
    assert all(p.usage is None for p in counted[:-1])


def test_models_lists_the_served_model_and_backends(sync_openai, tiny_engine):
    [card] = sync_openai.models.list().data
    assert card.id == tiny_engine.name
    assert card.model_extra["backends"]["generate"] == "torch"


def test_sdk_sees_a_400_for_bad_parameters(sync_openai):
    with pytest.raises(BadRequestError, match="n"):
        sync_openai.completions.create(model="magnet", prompt="x", n=17)
    with pytest.raises(BadRequestError, match="outside this model's vocabulary"):
        sync_openai.embeddings.create(model="magnet", input=[[1, 2, 10**6]])


async def test_async_sdk_in_process(tiny_engine):
    app = app_with(tiny_engine)
    async with running_app(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        async with AsyncOpenAI(base_url="http://magnet/v1", api_key="unused", http_client=http) as client:
            answer = await client.embeddings.create(model="magnet", input=TEXTS)
            assert close(answer.data[1].embedding, tiny_engine.embed(TEXTS).embeddings[1].tolist())
            several = await client.completions.create(model="magnet", prompt=["a b", "c d"], max_tokens=3, temperature=0)
            assert [c.index for c in several.choices] == [0, 1]


async def test_several_prompts_in_one_request_decode_side_by_side(tiny_engine):
    import asyncio

    from magnet.sampling import SamplingParams
    from magnet.server.testing import occupy_worker

    prompts = ["The quick brown", "Once upon a time", "Paris is"]
    app = app_with(tiny_engine)
    async with running_app(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://magnet")
        worker = app.state.service.worker
        release, held = await occupy_worker(worker)
        answer = asyncio.ensure_future(http.post("/v1/completions", json={
            "prompt": prompts, "max_tokens": 5, "temperature": 0}))
        while worker.depth < len(prompts):  # all three wait at once: they will join one batch
            await asyncio.sleep(0.005)
        release.set()
        await held
        choices = (await answer).json()["choices"]
        alone = [tiny_engine.generate(p, SamplingParams(max_tokens=5)).text for p in prompts]
        assert [c["text"] for c in choices] == alone and [c["index"] for c in choices] == [0, 1, 2]
        too_long = await http.post("/v1/completions", json={"prompt": ["fine", "word " * 5000], "max_tokens": 2})
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"


def test_n_choices_per_prompt_are_numbered_prompt_by_prompt(sync_openai, tiny_engine):
    from magnet.sampling import SamplingParams

    prompts = ["The quick brown", "Paris is"]
    answer = sync_openai.completions.create(model="magnet", prompt=prompts, max_tokens=4, temperature=1.0,
                                            seed=11, n=2)
    want = [tiny_engine.generate(p, SamplingParams(max_tokens=4, temperature=1.0, seed=11 + k))
            for p in prompts for k in range(2)]
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert [c.text for c in answer.choices] == [w.text for w in want]
    assert answer.usage.prompt_tokens == want[0].prompt_tokens + want[2].prompt_tokens
    streamed = sync_openai.completions.create(model="magnet", prompt=prompts[0], max_tokens=4, temperature=1.0,
                                              seed=11, n=2, stream=True)
    pieces = {0: "", 1: ""}
    for chunk in streamed:
        pieces[chunk.choices[0].index] += chunk.choices[0].text
    assert [pieces[0], pieces[1]] == [w.text for w in want[:2]]


def test_null_fields_mean_their_defaults_as_openai_takes_them(sync_openai, tiny_engine):
    # code that passes its own None through the SDK sends null (chat shares these fields' model)
    nulls = {"temperature": None, "top_p": None, "n": None, "stream": None}
    plain = sync_openai.completions.create(model="magnet", prompt="The quick", max_tokens=4, temperature=0)
    given = sync_openai.completions.create(model="magnet", prompt="The quick", extra_body={
        **nulls, "max_tokens": None, "echo": None, "temperature": 0})
    assert given.usage.completion_tokens <= 16 and len(given.choices) == 1  # OpenAI's defaults: 16 tokens, n 1
    assert given.choices[0].text.startswith(plain.choices[0].text)


def test_openai_routes_refuse_in_openais_shape_and_native_routes_keep_theirs(sync_openai):
    # the SDK raises BadRequestError; LangChain reads context_length_exceeded as a context overflow
    with pytest.raises(BadRequestError) as raised:
        sync_openai.completions.create(model="magnet", prompt="word " * 5000, max_tokens=2)
    error = raised.value.body if "error" not in raised.value.body else raised.value.body["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert "param" in error and "the prompt" in error["message"]
    native = httpx.post(str(sync_openai.base_url).replace("/v1/", "/v1/generate"), timeout=60,
                        json={"prompt": "word " * 5000, "max_tokens": 2})
    assert native.status_code == 422 and native.json() == {"error": {
        "code": "input_too_long", "message": native.json()["error"]["message"]}}
