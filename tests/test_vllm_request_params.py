"""What a request becomes for vLLM (no engine is started): logprobs, echo and structured output
map onto vLLM's SamplingParams, and vLLM's logprobs come back in our shape.

vLLM is part of the service's install (scripts/install-vllm.sh): a failed import fails these
tests rather than skipping them.
"""
from __future__ import annotations

import json

from vllm.logprobs import Logprob
from vllm.sampling_params import RequestOutputKind

from magnet.sampling import SamplingParams, StructuredOutput, TokenLogprob
from magnet.server.vllm_backend import token_logprobs, vllm_params


def test_logprobs_and_echo_reach_vllm():
    mapped = vllm_params(SamplingParams(max_tokens=5, logprobs=3, prompt_logprobs=2), RequestOutputKind.DELTA)
    assert (mapped.max_tokens, mapped.logprobs, mapped.prompt_logprobs) == (5, 3, 2)
    score_only = vllm_params(SamplingParams(max_tokens=0, logprobs=1, prompt_logprobs=1), RequestOutputKind.DELTA)
    assert score_only.max_tokens == 1  # vLLM must make a token; the backend drops it
    plain = vllm_params(SamplingParams(), RequestOutputKind.DELTA)
    assert (plain.logprobs, plain.prompt_logprobs, plain.structured_outputs) == (None, None, None)


def test_structured_output_reaches_vllm():
    def structured(spec):
        return vllm_params(SamplingParams(structured=spec), RequestOutputKind.DELTA).structured_outputs

    assert structured(StructuredOutput(choice=("a", "b"))).choice == ["a", "b"]
    assert structured(StructuredOutput(regex="[0-9]+")).regex == "[0-9]+"
    schema = json.dumps({"type": "object"})
    assert structured(StructuredOutput(json=schema)).json == schema
    assert structured(StructuredOutput(json_object=True)).json_object is True


def test_vllm_logprobs_become_ours_ranked_and_cut_to_k():
    """vLLM's dict holds the token itself (any rank) and ranks 1..k; ours keeps ranks 1..k in order."""
    positions = [None,
                 {7: Logprob(-2.5, rank=4), 3: Logprob(-0.1, rank=1), 9: Logprob(-1.0, rank=2)},
                 {3: Logprob(-0.2, rank=1), 5: Logprob(-1.9, rank=2)}]
    got = token_logprobs([1, 7, 3], positions, k=2)
    assert got == [TokenLogprob(1, None),
                   TokenLogprob(7, -2.5, ((3, -0.1), (9, -1.0))),
                   TokenLogprob(3, -0.2, ((3, -0.2), (5, -1.9)))]
