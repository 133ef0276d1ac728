"""Fuzzing the API from its own OpenAPI spec (schemathesis) against the real server on 127.0.0.1.

Every generated request must get an answer below 500 — except a 503 where the operation documents one (a
question or a transcript when no model is available), which must then carry the engine's explanation.
"""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from hypothesis import given  # noqa: E402


def check(case, statuses: list[int], may_503: set[tuple[str, str]]) -> None:
    response = case.call(timeout=60)
    statuses.append(response.status_code)
    if response.status_code == 503:
        assert (case.method.upper(), case.path) in may_503, response.text
        assert "not available" in response.json()["detail"], response.text
    else:
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        assert response.json()["detail"], response.text  # every refusal says why


def test_no_server_error_from_spec_generated_requests(live_url):
    assert live_url.startswith("http://127.0.0.1:")
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    spec = httpx.get(f"{live_url}/openapi.json", timeout=30).json()
    may_503 = {(method.upper(), path) for path, item in spec["paths"].items() for method, op in item.items()
               if "503" in op.get("responses", {})}
    assert ("POST", "/ask") in may_503
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/ocr", "/video/analyze", "/ask", "/results/{sha256}"}
    statuses: list[int] = []
    for operation in operations:
        @given(operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def fuzz(case) -> None:
            check(case, statuses, may_503)

        fuzz()
    assert len(statuses) >= 3 * len(operations)  # the fuzzer really sent requests
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)
