import json
from typing import Any

import pytest
from django.test import Client

from trellis.core import services as core_services
from trellis.core.models import AuditEvent, User
from trellis.crm.models import (
    Account,
    Activity,
    Contact,
    Lead,
    Opportunity,
    Order,
    OrderLine,
    Product,
)

PREFIX = "/api/v1/"
# Any 32 letters make a valid CSRF secret; the browser would get one from the csrftoken cookie.
CSRF_SECRET = "s" * 32


class Api:
    """A test client that speaks JSON to /api/v1/, as a script or as a browser."""

    def __init__(self, client: Client, csrf: bool = False) -> None:
        self.client = client
        self.headers = {"X-CSRFToken": CSRF_SECRET} if csrf else {}

    def _send(self, method: str, path: str, body: Any = None, **params: Any):
        url = PREFIX + path
        if method == "get":
            return self.client.get(url, params, headers=self.headers)
        if params:
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return getattr(self.client, method)(
            url, data, content_type="application/json", headers=self.headers
        )

    def get(self, path: str, **params: Any):
        return self._send("get", path, **params)

    def post(self, path: str, body: Any = None, **params: Any):
        return self._send("post", path, {} if body is None else body, **params)

    def patch(self, path: str, body: Any, **params: Any):
        return self._send("patch", path, body, **params)

    def put(self, path: str, body: Any, **params: Any):
        return self._send("put", path, body, **params)

    def delete(self, path: str, **params: Any):
        return self._send("delete", path, None, **params)


def token_client(user: User) -> Api:
    _token, key = core_services.create_api_token(user, "tests")
    return Api(Client(headers={"Authorization": f"Bearer {key}"}))


def session_client(user: User, csrf: bool = True) -> Api:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    return Api(client, csrf=csrf)


@pytest.fixture
def api_as(db):
    """``api_as(user)``: a token-authenticated JSON client acting as ``user``."""
    return token_client


@pytest.fixture
def anonymous(db) -> Api:
    return Api(Client())


def assert_problem(response, status: int, *fields: str) -> dict:
    """The answer is a problem of this status; with ``fields``, exactly these are named."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:trellis:problem:")
    assert body["title"] and body["detail"]
    assert all(set(error) == {"field", "message"} for error in body["errors"])
    if fields:
        assert {error["field"] for error in body["errors"]} == set(fields), body["errors"]
    return body


_TABLES = (
    Account,
    Contact,
    Contact.accounts.through,
    Lead,
    Opportunity,
    Product,
    Order,
    OrderLine,
    Activity,
    AuditEvent,
)


def database_state() -> dict:
    """Every row a request could touch, to compare before and after a refused request."""
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in _TABLES}
