"""Schemathesis against a real server on loopback (tiny Llama): every route, a fixed seed,
generated from the OpenAPI schema. No case may get a 5xx or an answer the schema does not
describe (status code, content type, body)."""
from __future__ import annotations

import pytest
import schemathesis  # the dev extra
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from magnet.server.testing import app_with, serve_on_loopback

EXAMPLES_PER_OPERATION = 100  # x 15 operations, fewer where the schema allows few: > 1,000 cases


@pytest.fixture(scope="module")
def api_schema(tiny_engine):
    app = app_with(tiny_engine, max_length=256)
    with serve_on_loopback(app) as base_url:
        yield schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def not_a_server_error(ctx, response, case):
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"


CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)


@pytest.mark.slow
def test_no_5xx_and_every_answer_matches_the_schema(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8, "every route must be in the schema"
    cases = 0
    for operation in operations:

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            nonlocal cases
            cases += 1
            response = case.call(timeout=60)
            case.validate_response(response, checks=CHECKS)

        check()
    print(f"fuzzed {cases} cases over {len(operations)} operations")
    assert cases >= EXAMPLES_PER_OPERATION * len(operations) // 2
