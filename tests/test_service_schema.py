"""schemathesis against the service's served OpenAPI spec: generated requests (valid and invalid,
with a valid bearer token) never get a 5xx, and answers conform to the spec.

Real parts: the spec is fetched from the API served by uvicorn on loopback, in front of a real
redis-server. Bounded (few examples per operation) so it runs in seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service_fixtures import AUTH, ApiHandle, needs_redis

pytestmark = needs_redis


@pytest.fixture(scope="module")
def served_spec(api: ApiHandle) -> Any:  # (this module's Redis and API: conftest)
    spec = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    spec.config.update(base_url=api.url, headers=AUTH)
    return spec


# The library's rules are partly cross-field (durations and options per model, prompt or image),
# which a JSON schema cannot say: schema-valid bodies it refuses (422) are expected, not failures.
EXPECTED_REFUSALS = [positive_data_acceptance]


def test_no_server_errors_and_answers_match_the_spec(served_spec: Any) -> None:
    # Driven through hypothesis directly rather than schemathesis' pytest plugin, which breaks
    # with new pytest releases: the checks are the same.
    operations = [result.ok() for result in served_spec.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=EXPECTED_REFUSALS)

        check()
