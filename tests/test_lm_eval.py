"""lm-evaluation-harness scores a live Magnet server through /v1/completions (`local-completions`:
echo + logprobs) and its log-likelihoods are the engine's own. The task is a small local JSONL
written here (no hub download); the tokenizer is the served checkpoint's own directory.

lm-eval tokenizes every request itself and sends the token ids (its default), or with
`tokenized_requests=False` the text they spell; its context length comes from its own tokenization.
"""
from __future__ import annotations

import json

import pytest

from magnet.sampling import SamplingParams
from magnet.server.testing import app_with, serve_on_loopback

pytestmark = pytest.mark.slow  # importing lm_eval (datasets, pandas, sklearn) alone takes seconds

DOCS = [
    {"context": "The quick brown fox jumps over the", "choices": ["lazy dog.", "stage."], "label": 0},
    {"context": "Paris is the capital of", "choices": ["France", "Germany", "the lazy dog"], "label": 0},
    {"context": "A man is playing a", "choices": ["guitar", "milk"], "label": 0},
]

TASK = """task: magnet_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def engine_loglikelihood(engine, context: str, continuation: str) -> float:
    """log p(continuation | context), read from the engine's own prompt logprobs (in process)."""
    ids = engine.tokenizer(context + continuation)["input_ids"]
    n_context = len(engine.tokenizer(context)["input_ids"])
    scored = engine.generate(context + continuation, SamplingParams(max_tokens=0, prompt_logprobs=0))
    assert [e.token for e in scored.prompt_logprobs] == ids
    return sum(e.logprob for e in scored.prompt_logprobs[n_context:])


@pytest.mark.parametrize("tokenized", [True, False])  # lm-eval's default sends token ids; False, their text
def test_lm_eval_local_completions_scores_equal_the_engines(tokenized, tiny_engine, tiny_model_dir, tmp_path,
                                                            monkeypatch):
    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (tmp_path / "task.yaml").write_text(TASK.format(data=data))

    import lm_eval
    from lm_eval.tasks import TaskManager

    with serve_on_loopback(app_with(tiny_engine)) as base_url:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"model": "magnet", "base_url": f"{base_url}/v1/completions", "tokenizer": str(tiny_model_dir),
                        "tokenizer_backend": "huggingface", "tokenized_requests": tokenized, "max_retries": 1},
            tasks=["magnet_local"], task_manager=TaskManager(include_path=str(tmp_path)), log_samples=True)
    samples = sorted(results["samples"]["magnet_local"], key=lambda s: s["doc_id"])
    assert len(samples) == len(DOCS)
    for doc, sample in zip(DOCS, samples):
        got = [float(resp[0][0]) for resp in sample["resps"]]  # one (loglikelihood, is_greedy) per choice
        want = [engine_loglikelihood(tiny_engine, doc["context"], " " + choice) for choice in doc["choices"]]
        assert got == pytest.approx(want, abs=1e-4)
    accuracy = results["results"]["magnet_local"]["acc,none"]
    best = [max(range(len(d["choices"])), key=lambda k: engine_loglikelihood(tiny_engine, d["context"],
                                                                            " " + d["choices"][k])) for d in DOCS]
    assert accuracy == pytest.approx(sum(b == d["label"] for b, d in zip(best, DOCS)) / len(DOCS))
