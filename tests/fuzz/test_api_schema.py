"""schemathesis against /api/openapi.json with a valid token: no 5xx, and every response
matches the schema the API publishes."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sense.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", application)

pytestmark = pytest.mark.slow


@pytest.fixture
def token(transactional_db: None, alice_token: str, acme: Any) -> str:
    # transactional_db: the WSGI app closes its connection after each request, which an
    # open test transaction would not allow.
    from campaigns.models import Connection

    # Something to find: a connection of alice's tenant, so ids in the schema can match.
    Connection.objects.create(
        tenant=acme,
        name="Main",
        provider="evolution",
        base_url="http://127.0.0.1:9",
        credentials={"instance": "main", "api_key": "k"},
    )
    return alice_token


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_fails_and_matches_its_schema(case: Any, token: str) -> None:
    # Business rules may refuse schema-valid input (an empty phone) with a documented 4xx;
    # what must never happen is a 5xx or a response that contradicts the schema.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
