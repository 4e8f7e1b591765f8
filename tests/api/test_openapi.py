"""The API's contract: the OpenAPI schema is kept in tests/api/openapi.json.

A change to an endpoint, a field, a model or a rule that shows in the API changes the schema,
and this test fails until the snapshot is refreshed on purpose:

    TRELLIS_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/api/test_openapi.py

Review the diff of openapi.json like code: clients depend on it.
"""

import json
import os
from pathlib import Path

from django.test import Client

SNAPSHOT = Path(__file__).with_name("openapi.json")


def _current_schema(language: str = "en") -> str:
    answer = Client(headers={"Accept-Language": language}).get("/api/openapi.json")
    assert answer.status_code == 200
    return json.dumps(answer.json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_the_openapi_schema_matches_the_snapshot(db):
    current = _current_schema()
    if os.environ.get("TRELLIS_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(current, encoding="utf-8")
    assert SNAPSHOT.exists(), "No snapshot yet: run with TRELLIS_UPDATE_SNAPSHOTS=1."
    assert current == SNAPSHOT.read_text(encoding="utf-8"), (
        "The API changed. If on purpose, refresh the snapshot with TRELLIS_UPDATE_SNAPSHOTS=1 "
        "and review the diff of tests/api/openapi.json."
    )


def test_the_schema_does_not_depend_on_the_language_asked_for(db):
    assert _current_schema("ko") == _current_schema("en")


def test_every_operation_is_documented_with_its_errors(db):
    schema = json.loads(_current_schema())
    operation_ids = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], (method, path)
            assert operation["tags"], (method, path)
            operation_ids.add(operation["operationId"])
            responses = operation["responses"]
            assert {"401", "422"} <= set(responses), (method, path)
            problem = responses["422"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}
            if "{" in path:
                assert "404" in responses, (method, path)
    assert {"list_opportunities", "create_order", "set_order_lines", "get_me"} <= operation_ids
    assert schema["components"]["securitySchemes"].keys() == {"BearerToken", "BrowserSession"}


def test_the_docs_page_can_try_writes_with_the_session(admin):
    client = Client()
    client.force_login(admin)
    page = client.get("/api/docs")
    assert page.status_code == 200
    # The page sends the CSRF token with the requests it tries.
    assert b"X-CSRFToken" in page.content or b'data-api-csrf="true"' in page.content
