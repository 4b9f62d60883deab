"""logprobs, top_logprobs and echo through the official `openai` SDK (tiny model, torch path):
the numbers are the model's own raw log-softmax, read by a plain causal forward here."""
from __future__ import annotations

import httpx
import pytest
import torch
from openai import BadRequestError, OpenAI

from magnet.sampling import SamplingParams
from magnet.server.testing import app_with, serve_on_loopback

PROMPT = "The quick brown"


@pytest.fixture(scope="module")
def served(tiny_chat_engine):
    with serve_on_loopback(app_with(tiny_chat_engine)) as base_url:
        with OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client, base_url


@pytest.fixture(scope="module")
def client(served):
    return served[0]


def raw_logprobs(engine, ids: list[int]) -> list[float]:
    """log p(ids[i] | ids[:i]) for i >= 1, from the model's plain causal forward."""
    with torch.inference_mode():
        rows = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return [float(rows[i - 1, ids[i]]) for i in range(1, len(ids))]


def close(a, b, tol=1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b))


def test_completion_logprobs_are_the_models_raw_logprobs(client, tiny_chat_engine):
    answer = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3)
    choice = answer.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == answer.usage.completion_tokens == 5
    generated = tiny_chat_engine.generate(PROMPT, SamplingParams(max_tokens=5, logprobs=0)).logprobs
    prompt_ids = tiny_chat_engine.tokenizer(PROMPT)["input_ids"]
    ids = prompt_ids + [entry.token for entry in generated]
    assert close(lp.token_logprobs, raw_logprobs(tiny_chat_engine, ids)[len(prompt_ids) - 1:])
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[token] == logprob and 3 <= len(top) <= 4  # the token itself and the 3 likeliest
        assert logprob == max(top.values())  # greedy picks the likeliest
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_logprobs_are_raw_whatever_the_sampling(client, tiny_chat_engine):
    """Temperature, top_k and penalties change what is drawn, not the reported numbers."""
    answer = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=6, temperature=1.7, seed=3,
                                       logprobs=0, extra_body={"top_k": 5, "repetition_penalty": 1.3})
    lp = answer.choices[0].logprobs
    same_draw = tiny_chat_engine.generate(PROMPT, SamplingParams(max_tokens=6, temperature=1.7, seed=3, top_k=5,
                                                                 repetition_penalty=1.3, logprobs=0))
    assert same_draw.text == answer.choices[0].text
    prompt_ids = tiny_chat_engine.tokenizer(PROMPT)["input_ids"]
    ids = prompt_ids + [entry.token for entry in same_draw.logprobs]
    assert len(lp.tokens) == 6 and "".join(lp.tokens) == answer.choices[0].text
    assert close(lp.token_logprobs, raw_logprobs(tiny_chat_engine, ids)[len(prompt_ids) - 1:])
    assert all(len(top) == 1 for top in lp.top_logprobs)  # logprobs=0: the token alone


def test_echo_with_max_tokens_0_scores_the_prompt(client, tiny_chat_engine):
    """What lm-evaluation-harness's loglikelihood reads: the prompt's tokens, the first null."""
    answer = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=0, echo=True, logprobs=1)
    choice = answer.choices[0]
    ids = tiny_chat_engine.tokenizer(PROMPT)["input_ids"]
    assert choice.text == PROMPT and answer.usage.completion_tokens == 0 and answer.usage.prompt_tokens == len(ids)
    lp = choice.logprobs
    assert "".join(lp.tokens) == PROMPT and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert close(lp.token_logprobs[1:], raw_logprobs(tiny_chat_engine, ids))
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs[1:])


def test_echo_then_generate_continues_the_offsets(client, tiny_chat_engine):
    answer = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=2, echo=True, logprobs=1,
                                       temperature=0)
    choice, n_prompt = answer.choices[0], answer.usage.prompt_tokens
    alone = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=2, logprobs=1, temperature=0)
    assert choice.text == PROMPT + alone.choices[0].text
    assert len(choice.logprobs.tokens) == n_prompt + 2
    assert close(choice.logprobs.token_logprobs[n_prompt:], alone.choices[0].logprobs.token_logprobs)
    assert choice.logprobs.text_offset[n_prompt] == len(PROMPT)
    echoed = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=2, echo=True, temperature=0)
    assert echoed.choices[0].text == choice.text and echoed.choices[0].logprobs is None


def test_streamed_logprobs_add_up(client):
    whole = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
    pieces = list(client.completions.create(model="magnet", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2,
                                            stream=True))
    tokens = [t for p in pieces if p.choices[0].logprobs for t in p.choices[0].logprobs.tokens]
    values = [v for p in pieces if p.choices[0].logprobs for v in p.choices[0].logprobs.token_logprobs]
    offsets = [o for p in pieces if p.choices[0].logprobs for o in p.choices[0].logprobs.text_offset]
    assert tokens == whole.choices[0].logprobs.tokens and close(values, whole.choices[0].logprobs.token_logprobs)
    assert offsets == whole.choices[0].logprobs.text_offset


def test_streamed_echo_starts_with_the_prompt(client):
    whole = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1,
                                      echo=True)
    pieces = list(client.completions.create(model="magnet", prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1,
                                            echo=True, stream=True))
    assert pieces[0].choices[0].text.startswith(PROMPT)
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    lps = [p.choices[0].logprobs for p in pieces if p.choices[0].logprobs]
    assert [t for lp in lps for t in lp.tokens] == whole.choices[0].logprobs.tokens
    assert [o for lp in lps for o in lp.text_offset] == whole.choices[0].logprobs.text_offset
    assert close([v for lp in lps for v in lp.token_logprobs][1:], whole.choices[0].logprobs.token_logprobs[1:])
    only = list(client.completions.create(model="magnet", prompt=PROMPT, max_tokens=0, echo=True, stream=True))
    assert "".join(p.choices[0].text for p in only) == PROMPT and only[-1].choices[0].finish_reason == "length"
    assert all(p.choices[0].logprobs is None for p in only)  # not asked for
    alone = client.completions.create(model="magnet", prompt=PROMPT, max_tokens=0, echo=True)
    assert alone.choices[0].text == PROMPT and alone.choices[0].logprobs is None


def test_infill_returns_its_fills_logprobs(client):
    answer = client.completions.create(model="magnet", prompt="The quick ", suffix=" the lazy dog.", max_tokens=4,
                                       temperature=0, logprobs=2)
    choice = answer.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == answer.usage.completion_tokens >= 1
    assert "".join(lp.tokens).lstrip(" ") == choice.text.lstrip(" ")  # the space before the gap joins the fill
    assert all(v <= 0 and top[t] == v and len(top) <= 3 for t, v, top in zip(lp.tokens, lp.token_logprobs,
                                                                               lp.top_logprobs))
    plain = client.completions.create(model="magnet", prompt="The quick ", suffix=" the lazy dog.", max_tokens=4,
                                      temperature=0)
    assert plain.choices[0].text == choice.text and plain.choices[0].logprobs is None


def test_chat_logprobs_and_top_logprobs(client):
    messages = [{"role": "user", "content": "Say something."}]
    answer = client.chat.completions.create(model="magnet", messages=messages, max_tokens=5, temperature=0,
                                            logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 5
    assert "".join(c.token for c in content) == answer.choices[0].message.content
    for c in content:
        assert len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob == c.logprob  # greedy: the token is the top one
        assert c.bytes == list(c.token.encode("utf-8"))
    streamed = list(client.chat.completions.create(model="magnet", messages=messages, max_tokens=5, temperature=0,
                                                   logprobs=True, stream=True))
    pieces = [c for chunk in streamed if chunk.choices and chunk.choices[0].logprobs
              for c in chunk.choices[0].logprobs.content]
    assert [c.token for c in pieces] == [c.token for c in content] and all(not c.top_logprobs for c in pieces)
    plain = client.chat.completions.create(model="magnet", messages=messages, max_tokens=5, temperature=0)
    assert plain.choices[0].logprobs is None


@pytest.mark.parametrize("route, body, named", [
    ("completions", {"prompt": PROMPT, "max_tokens": 0}, "echo"),
    ("completions", {"prompt": PROMPT, "logprobs": 21}, "logprobs"),
    ("completions", {"prompt": PROMPT, "suffix": "x", "echo": True}, "echo"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "logprobs=true"),
    ("chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21},
     "top_logprobs"),
])
def test_bad_logprob_requests_are_400_naming_the_field(served, route, body, named):
    response = httpx.post(f"{served[1]}/v1/{route}", json=body, timeout=30)
    assert response.status_code == 400 and named in response.text


def test_sdk_raises_unprocessable_for_max_tokens_0_without_echo(client):
    with pytest.raises(BadRequestError):
        client.completions.create(model="magnet", prompt=PROMPT, max_tokens=0)


def test_native_infill_returns_each_fills_logprobs(served):
    body = {"segments": ["The quick ", " over the ", " dog."], "max_tokens": 4, "temperature": 0}
    answer = httpx.post(f"{served[1]}/v1/infill", json={**body, "logprobs": 1}, timeout=60).json()
    assert len(answer["logprobs"]) == len(answer["fills"]) == 2
    assert sum(len(lp["tokens"]) for lp in answer["logprobs"]) == answer["usage"]["completion_tokens"]
    for fill, lp in zip(answer["fills"], answer["logprobs"]):
        assert "".join(lp["tokens"]).lstrip(" ") == fill.lstrip(" ")
        assert all(top[t] == v <= 0 for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]))
    plain = httpx.post(f"{served[1]}/v1/infill", json=body, timeout=60).json()
    assert plain["fills"] == answer["fills"] and plain["logprobs"] is None


def test_a_generated_eos_is_scored_and_counted_as_lm_eval_reads_it(served, tiny_chat_engine):
    # lm-eval's loglikelihood: echo + max_tokens 1, then token_logprobs[ctxlen:-1], the last
    # entry taken as the one generated token; a generation that ends on EOS generated it
    prompt = [5, 6, 7, 8]
    eos = tiny_chat_engine.tokenizer.eos_token_id
    body = {"model": "magnet", "prompt": [prompt], "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 1.0}
    answers = [httpx.post(f"{served[1]}/v1/completions", json={**body, "seed": seed}, timeout=60).json()
               for seed in range(120)]
    stopped = [a for a in answers if a["choices"][0]["finish_reason"] == "stop"]
    assert stopped, "no draw ended on EOS: pick other seeds"
    answer = stopped[0]
    lp = answer["choices"][0]["logprobs"]
    assert answer["usage"]["completion_tokens"] == 1 and len(lp["token_logprobs"]) == len(prompt) + 1
    assert lp["token_logprobs"][-1] == pytest.approx(raw_logprobs(tiny_chat_engine, prompt + [eos])[-1], abs=1e-4)
    assert answer["choices"][0]["text"] == tiny_chat_engine.tokenizer.decode(prompt)  # the EOS is no text


def test_token_id_prompts_are_read_as_sent_not_retokenized(served, tiny_chat_engine):
    # "the" spelled letter by letter: its text re-tokenizes to fewer tokens; lm-eval scores the
    # ids it sent, so those are what the model reads and what echo scores
    tokenizer = tiny_chat_engine.tokenizer
    letters = [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "the"]
    assert len(tokenizer("the", add_special_tokens=False)["input_ids"]) < len(letters)
    ids = letters + tokenizer(" cat sat", add_special_tokens=False)["input_ids"]
    answer = httpx.post(f"{served[1]}/v1/completions", timeout=60, json={
        "model": "magnet", "prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0}).json()
    lp = answer["choices"][0]["logprobs"]
    assert answer["usage"]["prompt_tokens"] == len(ids)
    assert len(lp["token_logprobs"]) == len(ids) + answer["usage"]["completion_tokens"]
    assert close(lp["token_logprobs"][1:len(ids)], raw_logprobs(tiny_chat_engine, ids))
