"""Structured output through the official `openai` SDK (tiny random model, torch path): whatever
the weights want, the text matches the constraint: generation, chat (streamed) and infill."""
from __future__ import annotations

import json
import re

import httpx
import pytest
from openai import OpenAI

from magnet.server.testing import app_with, serve_on_loopback

CHOICES = ["lazy dog", "brown fox", "guitar"]
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "n": {"type": "integer"}},
                 "required": ["answer", "n"], "additionalProperties": False}


@pytest.fixture(scope="module")
def served(tiny_chat_engine):
    with serve_on_loopback(app_with(tiny_chat_engine)) as base_url:
        with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client, base_url


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def test_choice_and_regex_constrain_sampled_completions(client):
    picked = client.completions.create(model="magnet", prompt="The quick", max_tokens=16, temperature=1.0, seed=1,
                                       n=4, extra_body={"structured_outputs": {"choice": CHOICES}})
    assert all(c.text in CHOICES and c.finish_reason == "stop" for c in picked.choices)
    matched = client.completions.create(model="magnet", prompt="Call", max_tokens=12, temperature=1.0, seed=2, n=3,
                                        extra_body={"structured_outputs": {"regex": "[0-9]{3}-[a-c]{2}"}})
    assert all(re.fullmatch("[0-9]{3}-[a-c]{2}", c.text) for c in matched.choices)


def test_chat_stream_follows_a_json_schema(client):
    stream = client.chat.completions.create(
        model="magnet", messages=[{"role": "user", "content": "Answer."}], max_tokens=40, temperature=0.8, seed=4,
        stream=True, response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER_SCHEMA}})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    value = json.loads(text)
    assert set(value) == {"answer", "n"} and value["answer"] in ("yes", "no") and isinstance(value["n"], int)


def test_json_object_starts_an_object(client):
    answer = client.chat.completions.create(model="magnet", messages=[{"role": "user", "content": "JSON."}],
                                            max_tokens=6, temperature=0, response_format={"type": "json_object"})
    assert answer.choices[0].message.content.startswith("{")


def test_infill_fill_is_one_of_the_choices_or_matches_the_regex(client, tiny_chat_engine):
    for seed in range(3):
        filled = client.completions.create(model="magnet", prompt="The quick brown fox jumps over the ",
                                           suffix=" and runs.", max_tokens=16, temperature=1.0, seed=seed,
                                           extra_body={"structured_outputs": {"choice": CHOICES}})
        assert filled.choices[0].text in CHOICES
    matched = client.completions.create(model="magnet", prompt="She bought ", suffix=" of milk.", max_tokens=16,
                                        temperature=1.0, seed=5, extra_body={"structured_outputs": {"regex": "[0-9]{1,3} l"}})
    assert re.fullmatch("[0-9]{1,3} l", matched.choices[0].text)


@pytest.mark.parametrize("body, named", [
    ({"prompt": "x", "structured_outputs": {"regex": "("}}, "regex does not compile: Regex parsing error"),
    ({"prompt": "x", "structured_outputs": {"grammar": "root ::= \"a\""}}, "grammar"),
    ({"prompt": "x", "structured_outputs": {"choice": []}}, "choice"),
    ({"prompt": "x", "structured_outputs": {"choice": ["a"], "regex": "a"}}, "exactly one"),
    ({"prompt": "x", "response_format": {"type": "json_object"}, "structured_outputs": {"choice": ["a"]}}, "not both"),
    ({"prompt": "x", "suffix": "y", "response_format": {"type": "json_object"}}, "infill"),
])
def test_bad_constraints_are_400_naming_what_to_change(served, body, named):
    response = httpx.post(f"{served[1]}/v1/completions", json=body, timeout=60)
    assert response.status_code == 400 and named in response.text, response.text


def test_native_infill_and_generate_take_structured_outputs(served):
    base_url = served[1]
    for seed in range(2):
        fill = httpx.post(f"{base_url}/v1/infill", timeout=60, json={
            "prefix": "The quick brown fox jumps over the ", "suffix": " and runs.", "max_tokens": 16,
            "temperature": 1.0, "seed": seed, "structured_outputs": {"choice": CHOICES}}).json()
        assert fill["text"] in CHOICES and fill["fills"] == [fill["text"]]
    both = httpx.post(f"{base_url}/v1/infill", timeout=60, json={
        "segments": ["A ", " and a ", "."], "max_tokens": 8, "temperature": 1.0, "seed": 3,
        "structured_outputs": {"regex": "[a-c]{2}"}}).json()
    assert all(re.fullmatch("[a-c]{2}", f) for f in both["fills"]) and len(both["fills"]) == 2
    text = httpx.post(f"{base_url}/v1/generate", timeout=60, json={
        "prompt": "Call", "max_tokens": 12, "temperature": 1.0, "seed": 2,
        "structured_outputs": {"regex": "[0-9]{3}"}}).json()["text"]
    assert re.fullmatch("[0-9]{3}", text)
    refused = httpx.post(f"{base_url}/v1/infill", timeout=60, json={"prefix": "a", "suffix": "b",
                                                                     "structured_outputs": {"json_object": True}})
    assert refused.status_code == 422 and "infill" in refused.text


def test_a_fill_may_be_the_text_its_suffix_starts_with(served):
    # "," is also the gap's end token: while the choice is unmatched it is the fill's text
    for path, body in (("/v1/infill", {"prefix": "Yes", "suffix": ", he said."}),
                       ("/v1/completions", {"prompt": "Yes", "suffix": ", he said."})):
        response = httpx.post(f"{served[1]}{path}", timeout=60,
                              json={**body, "max_tokens": 3, "structured_outputs": {"choice": [","]}})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["text"] if path == "/v1/infill" else answer["choices"][0]["text"]) == ","


def test_vllms_older_guided_fields_constrain_as_structured_outputs(client):
    picked = client.completions.create(model="magnet", prompt="The quick", max_tokens=16, temperature=1.0, seed=1,
                                       n=3, extra_body={"guided_choice": CHOICES})
    assert all(c.text in CHOICES for c in picked.choices)
    matched = client.completions.create(model="magnet", prompt="Call", max_tokens=12, temperature=1.0, seed=2,
                                        extra_body={"guided_regex": "[0-9]{3}"})
    assert re.fullmatch("[0-9]{3}", matched.choices[0].text)


@pytest.mark.parametrize("extra, named", [
    ({"guided_choice": ["a"], "structured_outputs": {"choice": ["b"]}}, "not both"),
    ({"guided_grammar": "root ::= \"a\""}, "grammar"),
])
def test_guided_fields_that_cannot_apply_are_400(served, extra, named):
    response = httpx.post(f"{served[1]}/v1/completions", json={"prompt": "x", **extra}, timeout=60)
    assert response.status_code == 400 and named in response.text, response.text


class RecordingCompiler:
    """xgrammar's compiler, noting the thread that first compiles each grammar."""

    def __init__(self, compiler):
        self.compiler, self.first = compiler, {}

    def __getattr__(self, name):
        method = getattr(self.compiler, name)

        def compile(*args, **kwargs):
            import threading

            self.first.setdefault((name, repr(args)), threading.current_thread().name)
            return method(*args, **kwargs)
        return compile


def test_no_fills_grammar_is_compiled_on_the_model_thread(served, monkeypatch):
    # each count of spaces before a gap is a grammar of its own (the fill matches them first)
    from magnet import structured

    recording = []
    real = structured.compiler_for
    monkeypatch.setattr(structured, "compiler_for",
                        lambda *a: recording[0] if recording else recording.append(RecordingCompiler(real(*a))) or recording[0])
    for body in ({"segments": ["A ", " and a  ", " or   ", "."], "max_tokens": 4},
                 {"prefix": "She bought  ", "suffix": " of milk.", "max_tokens": 4}):
        response = httpx.post(f"{served[1]}/v1/infill", timeout=60,
                              json={**body, "structured_outputs": {"regex": "[a-c]{2}q?"}})
        assert response.status_code == 200, response.text
    threads = recording[0].first
    assert len(threads) == 3  # 1, 2 and 3 spaces (the second request's 2 compiled already)
    assert not any(name.startswith("magnet-model") for name in threads.values()), threads


def test_a_tokenizer_let_go_of_takes_its_grammar_compiler_with_it(tiny_chat_engine):
    # an unloaded adapter's engine must not stay alive through its compiler (~19 MiB each)
    import copy
    import gc

    from magnet import structured

    tokenizer = copy.deepcopy(tiny_chat_engine.tokenizer)
    structured.compiler_for(tokenizer, tiny_chat_engine.vocab_size)
    assert tokenizer in structured._compilers
    held = len(structured._compilers)
    del tokenizer
    gc.collect()
    assert len(structured._compilers) == held - 1
