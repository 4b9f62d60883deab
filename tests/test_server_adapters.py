"""Several adapters per server: `--adapter NAME=DIR`, picked per request by `model`."""
from __future__ import annotations

import asyncio
import types
from dataclasses import replace

import httpx
import pytest
from pydantic import ValidationError
from test_loading import save_random_lora  # a tiny LoRA adapter that changes outputs
from test_server_cli import parse

from magnet.client import AsyncMagnetClient
from magnet.errors import MagnetError, UnknownTaskError
from magnet.sampling import INFILL_DEFAULTS, SamplingParams
from magnet.server import cli
from magnet.server.app import create_app
from magnet.server.settings import Settings
from magnet.server.testing import app_with, assert_error, occupy_worker, running_app

NAME = "legal"
TEXTS = ["A man is playing a guitar.", "Paris is the capital of France."]
GREEDY = SamplingParams(max_tokens=6)


def close(a, b, tol=1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b))


@pytest.fixture(scope="module")
def adapter_dir(tiny_loaded, tmp_path_factory):
    return save_random_lora(tiny_loaded, tmp_path_factory.mktemp("adapters") / NAME)


@pytest.fixture(scope="module")
def legal_engine(tiny_model_dir, adapter_dir, tiny_engine):
    """The named adapter loaded on its own, to compare the server's answers with."""
    from magnet.engine import Engine
    from magnet.loading import ModelSpec

    return Engine.from_spec(ModelSpec(model=str(tiny_model_dir), adapter=str(adapter_dir), device="cpu",
                                      dtype="float32"), tiny_engine.config)  # as the tiny fixture


@pytest.fixture
async def http(tiny_engine, adapter_dir):
    """The default = the tiny base without adapter (so it is the base too), plus NAME."""
    async with running_app(app_with(tiny_engine, adapters={NAME: str(adapter_dir)})) as client:
        yield client


async def test_models_lists_every_served_model_with_its_manifest(http, tiny_engine, tiny_loaded):
    cards = (await http.get("/v1/models")).json()["data"]
    assert [c["id"] for c in cards] == [tiny_engine.name, NAME]
    default, legal = cards
    assert default["aliases"] == ["magnet"] and default["manifest"] is None  # the base: no adapter
    assert legal["aliases"] == [] and legal["manifest"]["base"]["name"] == tiny_loaded.base.name
    assert legal["engine"] == f"{tiny_loaded.base.name}+{NAME}"
    assert legal["backends"]["generate"] == "torch" and legal["backends"]["tag"] is None
    assert (await http.get(f"/v1/models/{NAME}")).json() == legal
    assert (await http.get("/v1/models/magnet")).json() == default
    assert_error(await http.get("/v1/models/nope"), 404, "model_not_found", "'nope'", repr(NAME),
                 repr(tiny_engine.name), "'magnet'")


async def test_embed_with_a_named_model_is_that_adapters_embedding(http, tiny_engine, legal_engine):
    named = (await http.post("/v1/embed", json={"input": TEXTS, "model": NAME})).json()
    default = (await http.post("/v1/embed", json={"input": TEXTS})).json()
    assert named["model"] == NAME and default["model"] == tiny_engine.name
    want = legal_engine.embed(TEXTS).embeddings.tolist()
    assert all(close(got, w) for got, w in zip(named["embeddings"], want))
    assert not close(named["embeddings"][0], default["embeddings"][0], tol=1e-3)  # the adapter changes them
    via_alias = (await http.post("/v1/embed", json={"input": TEXTS, "model": "magnet"})).json()
    assert via_alias["model"] == tiny_engine.name and via_alias["embeddings"] == default["embeddings"]


async def test_infill_and_generate_with_a_named_model_are_its_greedy_outputs(http, tiny_engine, legal_engine):
    infill = {"prefix": "The quick ", "suffix": " the lazy dog.", "max_tokens": 6, "model": NAME}
    filled = (await http.post("/v1/infill", json=infill)).json()
    want = legal_engine.infill(["The quick ", " the lazy dog."], replace(INFILL_DEFAULTS, max_tokens=6))
    assert filled["model"] == NAME and filled["fills"] == want.fills
    generated = (await http.post("/v1/generate", json={"prompt": "The quick brown", "max_tokens": 6,
                                                       "model": NAME})).json()
    assert generated["model"] == NAME and generated["text"] == legal_engine.generate("The quick brown", GREEDY).text
    assert legal_engine.generate("The quick brown", GREEDY).text != tiny_engine.generate("The quick brown", GREEDY).text


async def test_openai_routes_take_a_named_model(http, legal_engine):
    embedded = (await http.post("/v1/embeddings", json={"input": TEXTS[0], "model": NAME})).json()
    assert embedded["model"] == NAME
    assert close(embedded["data"][0]["embedding"], legal_engine.embed([TEXTS[0]]).embeddings[0].tolist())
    completed = (await http.post("/v1/completions", json={"prompt": "The quick brown", "max_tokens": 6,
                                                          "temperature": 0, "model": NAME})).json()
    assert completed["model"] == NAME
    assert completed["choices"][0]["text"] == legal_engine.generate("The quick brown", GREEDY).text


class StandInVllm:
    """Stands in for the vLLM backend of the default model: answers "vllm", and "vllm:<id>" for
    the models it serves as LoRAs."""

    name = "vllm"
    max_model_len = 2048

    def __init__(self, model_id: str | None = None, others: dict | None = None):
        self.model_id, self.others = model_id, others

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def for_model(self, model_id):
        return StandInVllm(model_id)

    async def generate(self, prompt, params, ids=None):
        from magnet.sampling import Completion

        return Completion("vllm" if self.model_id is None else f"vllm:{self.model_id}", "stop", 1, 1)


@pytest.fixture
def stand_in_vllm(monkeypatch):
    """select_backend answers a StandInVllm; the list holds the one it made."""
    from magnet.server import generation

    made = []
    monkeypatch.setattr(generation, "select_backend",
                        lambda settings, engine, worker, others=None: made.append(StandInVllm(None, others))
                        or made[-1])
    return made


async def test_with_vllm_named_adapters_generate_as_loras_on_its_engine(tiny_engine, adapter_dir, stand_in_vllm):
    app = app_with(tiny_engine, adapters={NAME: str(adapter_dir)}, vllm_adapters="lora")
    async with running_app(app) as http:
        cards = (await http.get("/v1/models")).json()["data"]
        assert [c["backends"]["generate"] for c in cards] == ["vllm", "vllm"]
        body = {"prompt": "The quick brown", "max_tokens": 6}
        assert (await http.post("/v1/generate", json=body)).json()["text"] == "vllm"
        assert (await http.post("/v1/generate", json={**body, "model": NAME})).json()["text"] == f"vllm:{NAME}"
    (engine_backend,) = stand_in_vllm
    assert engine_backend.others == {NAME: adapter_dir}  # the LoRAs the engine is started with


@pytest.mark.parametrize("choice", ["torch", "auto"])  # auto: torch on CPU, where it is faster
async def test_with_vllm_adapters_torch_named_adapters_generate_on_torch(tiny_engine, adapter_dir, legal_engine,
                                                                          stand_in_vllm, choice):
    app = app_with(tiny_engine, adapters={NAME: str(adapter_dir)}, vllm_adapters=choice)
    async with running_app(app) as http:
        cards = (await http.get("/v1/models")).json()["data"]
        assert [c["backends"]["generate"] for c in cards] == ["vllm", "torch"]
        assert (await http.get("/health")).json()["backends"]["generate"] == "vllm"  # the default model's
        body = {"prompt": "The quick brown", "max_tokens": 6}
        assert (await http.post("/v1/generate", json=body)).json()["text"] == "vllm"
        named = (await http.post("/v1/generate", json={**body, "model": NAME})).json()["text"]
        assert named == legal_engine.generate("The quick brown", GREEDY).text
    assert stand_in_vllm[0].others is None  # no LoRAs on the vLLM engine


async def test_an_unknown_model_is_a_404_naming_the_served_ones(http, tiny_engine):
    for path, body in [("/v1/embed", {"input": "hi"}), ("/v1/generate", {"prompt": "hi"}),
                       ("/v1/completions", {"prompt": "hi"})]:
        response = await http.post(path, json={**body, "model": "medical"})
        assert_error(response, 404, "model_not_found", "'medical'", repr(NAME), repr(tiny_engine.name))


async def test_requests_for_two_models_at_once_each_get_their_own_models_answer(tiny_engine, adapter_dir,
                                                                                legal_engine):
    app = app_with(tiny_engine, adapters={NAME: str(adapter_dir)})
    prompts = ["The quick brown", "Once upon a time", "Paris is"]
    async with running_app(app) as http:
        release, held = await occupy_worker(app.state.service.worker)  # all queue, then join in one step
        asked = [(prompt, model) for prompt in prompts for model in (NAME, None)]
        answers = [asyncio.ensure_future(http.post("/v1/generate", json={"prompt": p, "max_tokens": 6, "model": m}))
                   for p, m in asked]
        infills = [asyncio.ensure_future(http.post("/v1/infill", json={
            "prefix": p, "suffix": " end.", "max_tokens": 4, "model": m})) for p, m in asked]
        while app.state.service.worker.depth < 2 * len(asked):
            await asyncio.sleep(0.005)
        release.set()
        await held
        generated = [(await a).json()["text"] for a in answers]
        filled = [(await a).json()["fills"] for a in infills]
    engines = {NAME: legal_engine, None: tiny_engine}
    assert generated == [engines[m].generate(p, GREEDY).text for p, m in asked]
    params = replace(INFILL_DEFAULTS, max_tokens=4)
    assert filled == [engines[m].infill([p, " end."], params).fills for p, m in asked]


async def test_tagging_a_model_without_heads_is_a_422_naming_the_one_with_heads(tiny_engine, adapter_dir):
    heads = types.SimpleNamespace(tasks={"ner": None})  # heads of the default model (never reached here)
    settings = Settings(generate_backend="torch", heads="none", adapters={NAME: str(adapter_dir)})
    async with running_app(create_app(settings, engine=tiny_engine, tagger=heads)) as http:
        response = await http.post("/v1/tag", json={"input": "Peter lives in Brussels .", "model": NAME})
        assert_error(response, 422, "unknown_task", repr(NAME), repr(tiny_engine.name))
        cards = (await http.get("/v1/models")).json()["data"]
        assert [c["backends"]["tag"] for c in cards] == ["torch", None]


async def test_the_client_picks_a_model_per_call(tiny_engine, adapter_dir, legal_engine):
    heads = types.SimpleNamespace(tasks={"ner": None})
    settings = Settings(generate_backend="torch", heads="none", adapters={NAME: str(adapter_dir)})
    app = create_app(settings, engine=tiny_engine, tagger=heads)
    async with running_app(app):
        async with AsyncMagnetClient("http://magnet", transport=httpx.ASGITransport(app=app)) as client:
            embedded = await client.embed(TEXTS, model=NAME)
            assert embedded.model == NAME
            want = legal_engine.embed(TEXTS).embeddings.tolist()
            assert all(close(got, w) for got, w in zip(embedded.embeddings, want))
            encoded = await client.encode(TEXTS, model=NAME, convert_to_numpy=False)
            assert all(close(got, w) for got, w in zip(encoded, want))
            assert await client.infill("The quick ", " the lazy dog.", max_tokens=6, model=NAME) == legal_engine.infill(
                ["The quick ", " the lazy dog."], replace(INFILL_DEFAULTS, max_tokens=6)).text
            generated = await client.generate("The quick brown", max_tokens=6, model=NAME)
            assert generated.text == legal_engine.generate("The quick brown", GREEDY).text
            with pytest.raises(UnknownTaskError, match=repr(tiny_engine.name)):
                await client.tag("Peter lives in Brussels .", model=NAME)
            with pytest.raises(MagnetError, match="'medical'") as unknown:
                await client.embed("hi", model="medical")
            assert unknown.value.status == 404


async def test_with_an_adapted_default_the_base_is_served_under_its_own_name(tiny_model_dir, tiny_loaded,
                                                                             adapter_dir, legal_engine):
    settings = Settings(generate_backend="torch", heads="none", adapters={"other": str(adapter_dir)})
    app = create_app(settings, engine=legal_engine)  # the default has the adapter merged
    base = tiny_loaded.base.name
    async with running_app(app) as http:
        cards = (await http.get("/v1/models")).json()["data"]
        assert [c["id"] for c in cards] == [legal_engine.name, "other", base]
        assert cards[2]["manifest"] is None and cards[1]["manifest"] == cards[0]["manifest"]
        answer = (await http.post("/v1/embed", json={"input": TEXTS[0], "model": base})).json()
        unadapted = app.state.service.engines[base]
        assert unadapted.loaded.adapter_path is None
        assert close(answer["embeddings"][0], unadapted.embed([TEXTS[0]]).embeddings[0].tolist())


async def test_a_name_that_clashes_with_a_served_model_refuses_to_start(tiny_engine, adapter_dir):
    app = app_with(tiny_engine, adapters={tiny_engine.name: str(adapter_dir)})
    with pytest.raises(RuntimeError, match="clash"):
        async with running_app(app):
            pass


async def test_an_adapter_dir_that_does_not_load_refuses_to_start(tiny_engine, tmp_path):
    app = app_with(tiny_engine, adapters={NAME: str(tmp_path / "missing")})
    with pytest.raises(RuntimeError, match="failed to start"):
        async with running_app(app):
            pass


@pytest.mark.parametrize("name, word", [("", "non-empty"), ("magnet", "alias"), (" legal", "spaces")])
def test_settings_refuse_a_bad_adapter_name(name, word):
    with pytest.raises(ValidationError, match=word):
        Settings(adapters={name: "/ckpt/x"})


def test_adapter_flag_sets_the_default_or_adds_named_ones(monkeypatch):
    monkeypatch.setenv("MAGNET_ADAPTERS", '{"env": "/ckpt/env"}')
    assert Settings().adapters == {"env": "/ckpt/env"}  # the variable is JSON
    settings = cli.settings_from(parse("--adapter", "legal=/ckpt/legal", "--adapter", "none",
                                       "--adapter", "med=/ckpt/a=b"))
    assert settings.adapter == "none"  # flags add to the variable's names
    assert settings.adapters == {"env": "/ckpt/env", "legal": "/ckpt/legal", "med": "/ckpt/a=b"}
    overridden = cli.settings_from(parse("--adapter", "env=/ckpt/flag"))
    assert overridden.adapters == {"env": "/ckpt/flag"}
    only_default = cli.settings_from(parse("--adapter", "/ckpt/mine"))
    assert only_default.adapter == "/ckpt/mine" and only_default.adapters == {"env": "/ckpt/env"}


@pytest.mark.parametrize("argv, words", [
    (["--adapter", "legal=/a", "--adapter", "legal=/b"], "twice"),
    (["--adapter", "=/ckpt/x"], "non-empty"),
    (["--adapter", "legal="], "empty"),
])
def test_a_bad_name_dir_flag_refuses_to_start(argv, words):
    with pytest.raises((SystemExit, ValidationError), match=words):
        cli.settings_from(parse(*argv))
