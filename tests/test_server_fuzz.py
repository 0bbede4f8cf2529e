"""Schemathesis fuzzes every non-streaming route from the OpenAPI document the server publishes,
against ``python -m worker serve`` running as a real process.

Checks: no 5xx, only documented status codes and content types, and bodies that match the
documented schemas. The event stream is left out (a fuzzer reads a body to its end, and a live
stream has none); ``tests/test_server_relay.py`` tests it with a streaming client.
``positive_data_acceptance`` is off: a JSON schema cannot say "prompt or messages, not both", so
some schema-valid bodies are rightly refused with a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.serve_fixtures import start_serve, stop_serve, write_serve_config
from tests.server_harness import auth
from worker.server.openapi import openapi_document

pytestmark = pytest.mark.timeout(300)

Case = schemathesis.Case[APIOperation[Any, Any, Any, Any]]

schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path_regex=r"/events$")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the whole module: the fuzzer's jobs accumulate, as they would in use."""
    folder = tmp_path_factory.mktemp("fuzz")
    served = start_serve(write_serve_config(folder), folder / "serve.log")
    yield served.url
    stop_serve(served.process)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_routes_conform_to_the_openapi_document(
    case: schemathesis.Case[APIOperation[Any, Any, Any, Any]], server_url: str
) -> None:
    case.call_and_validate(base_url=server_url, headers=auth(), excluded_checks=[positive_data_acceptance])
