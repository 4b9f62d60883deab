"""/v1/chat/completions through the official `openai` SDK, on the tiny model with a ChatML template."""
from __future__ import annotations

import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from magnet.sampling import Completion, SamplingParams
from magnet.server.testing import app_with, running_app, serve_on_loopback

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick brown fox"}]



@pytest.fixture(scope="module")
def sdk(tiny_chat_engine):
    with serve_on_loopback(app_with(tiny_chat_engine)) as base_url:
        with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client


def rendered(engine, messages=MESSAGES) -> str:
    return engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_the_prompt_is_the_chat_template_with_the_assistant_turn_opened(tiny_chat_engine):
    assert rendered(tiny_chat_engine) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                          "<|im_start|>user\nThe quick brown fox<|im_end|>\n<|im_start|>assistant\n")


def test_chat_answers_what_the_engine_generates_for_the_rendered_prompt(sdk, tiny_chat_engine):
    answer = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=6, temperature=0)
    want = tiny_chat_engine.generate(rendered(tiny_chat_engine), SamplingParams(max_tokens=6))
    [choice] = answer.choices
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == tiny_chat_engine.name
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == want.finish_reason == "length"
    assert answer.usage.prompt_tokens == want.prompt_tokens and answer.usage.completion_tokens == 6


def test_max_completion_tokens_is_the_newer_name_of_max_tokens(sdk):
    answer = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_completion_tokens=3, temperature=0)
    assert answer.usage.completion_tokens == 3


def test_stream_sends_the_role_then_deltas_that_add_up(sdk):
    whole = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=6, temperature=0)
    chunks = list(sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=6, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_without_include_usage_ends_with_the_finish_reason(sdk):
    chunks = list(sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=3, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage is None


def test_sampling_controls_reach_the_generator(sdk, tiny_chat_engine):
    prompt = rendered(tiny_chat_engine)
    penalised = SamplingParams(max_tokens=8, frequency_penalty=2.0, top_k=50)
    want = tiny_chat_engine.generate(prompt, penalised).text
    assert want != tiny_chat_engine.generate(prompt, SamplingParams(max_tokens=8)).text  # the penalty matters here
    answer = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=8, temperature=0,
                                         frequency_penalty=2.0, extra_body={"top_k": 50})
    assert answer.choices[0].message.content == want


def test_stop_strings_and_seeded_sampling(sdk, tiny_chat_engine):
    seeded = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=3)
    want = tiny_chat_engine.generate(rendered(tiny_chat_engine), SamplingParams(max_tokens=8, temperature=1.0, seed=3))
    assert seeded.choices[0].message.content == want.text
    stopped = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=8, temperature=0, stop=["\n"])
    assert stopped.choices[0].message.content == "" and stopped.choices[0].finish_reason == "stop"


def test_text_parts_and_developer_role_render_like_plain_text(sdk):
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
             MESSAGES[1]]
    a = sdk.chat.completions.create(model="magnet", messages=parts, max_tokens=4, temperature=0)
    b = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=4, temperature=0)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content


def test_unknown_model_is_404_naming_the_served_ids(sdk, tiny_chat_engine):
    with pytest.raises(NotFoundError) as raised:
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    message = raised.value.body["message"]
    assert "'gpt-4o'" in message and tiny_chat_engine.name in message and "'magnet'" in message
    by_name = sdk.chat.completions.create(model=tiny_chat_engine.name, messages=MESSAGES, max_tokens=2)
    assert by_name.usage.completion_tokens == 2


@pytest.mark.parametrize("kwargs, words", [
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, ["messages.0.role", "'user'"]),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     ["only text parts", "image_url"]),
    ({"messages": []}, ["messages"]),
    ({"messages": MESSAGES, "n": 17}, ["n", "16"]),
    ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 21}, ["top_logprobs", "20"]),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, ["tools"]),
    ({"messages": MESSAGES, "functions": [{"name": "f"}]}, ["functions is not supported"]),
    ({"messages": MESSAGES, "function_call": "auto"}, ["function_call is not supported"]),
    ({"messages": MESSAGES, "response_format": {"type": "json_schema"}}, ["response_format", "json_schema"]),
    ({"messages": MESSAGES, "max_tokens": 0}, ["max_tokens"]),
    ({"messages": [{"role": "user", "content": "word " * 300}]}, ["tokens", "256"]),
])
def test_bad_chat_requests_are_400_naming_what_to_change(sdk, kwargs, words):
    with pytest.raises(BadRequestError) as raised:
        sdk.chat.completions.create(model="magnet", **kwargs)
    for word in words:
        assert word in raised.value.body["message"]


def test_a_tokenizer_without_chat_template_is_a_clear_400(sdk, tiny_chat_engine, monkeypatch):
    monkeypatch.setattr(tiny_chat_engine.tokenizer, "chat_template", None)
    with pytest.raises(BadRequestError, match="no chat template"):
        sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=2)


async def test_without_max_tokens_the_answer_may_fill_the_context(tiny_chat_engine, monkeypatch):
    app = app_with(tiny_chat_engine)
    asked: list[SamplingParams] = []

    async def recorded_generate(prompt: str, params: SamplingParams, model: str | None = None,
                                ids: list[int] | None = None) -> Completion:
        asked.append(params)
        return Completion("ok", "stop", 1, 1)

    async with running_app(app) as http:
        monkeypatch.setattr(app.state.service, "generate", recorded_generate)
        response = await http.post("/v1/chat/completions", json={"messages": MESSAGES})  # no model: accepted
        assert response.status_code == 200, response.text
    prompt_tokens = len(tiny_chat_engine.tokenizer(rendered(tiny_chat_engine))["input_ids"])
    assert [p.max_tokens for p in asked] == [tiny_chat_engine.max_length - prompt_tokens]
    assert asked[0].temperature == 1.0  # OpenAI's default


async def test_chat_needs_the_api_key_when_one_is_set(tiny_chat_engine):
    app = app_with(tiny_chat_engine, api_key="k")
    async with running_app(app) as http:
        refused = await http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2})
        allowed = await http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2},
                                  headers={"Authorization": "Bearer k"})
    assert refused.status_code == 401 and allowed.status_code == 200
    assert allowed.json()["choices"][0]["message"]["role"] == "assistant"


def test_n_choices_are_independent_samples_seeded_one_after_another(sdk, tiny_chat_engine):
    answer = sdk.chat.completions.create(model="magnet", messages=MESSAGES, max_tokens=5, temperature=1.0,
                                         seed=7, n=3)
    want = [tiny_chat_engine.generate(rendered(tiny_chat_engine), SamplingParams(max_tokens=5, temperature=1.0,
                                                                                 seed=7 + k)) for k in range(3)]
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert [c.message.content for c in answer.choices] == [w.text for w in want]
    assert len({w.text for w in want}) > 1  # the seeds differ, so do the samples
    assert answer.usage.prompt_tokens == want[0].prompt_tokens  # the prompt counted once
    assert answer.usage.completion_tokens == sum(w.completion_tokens for w in want)


def test_n_streamed_choices_interleave_and_each_adds_up(sdk):
    kwargs = dict(model="magnet", messages=MESSAGES, max_tokens=5, temperature=1.0, seed=3, n=2)
    whole = sdk.chat.completions.create(**kwargs)
    chunks = list(sdk.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    roles = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert roles == [0, 1]
    for k in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == k)
        assert text == whole.choices[k].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
