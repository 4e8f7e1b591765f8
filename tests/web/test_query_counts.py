"""A list page costs the same number of queries for 5 rows as for a full page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from .conftest import KINDS

pytestmark = pytest.mark.django_db


def _queries_for_list(client, kind) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(kind.url("list"))
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.key)
def test_list_queries_do_not_grow_with_rows(login, manager, kind):
    client = login(manager)
    for _ in range(5):
        kind.make(manager)
    few = _queries_for_list(client, kind)
    for _ in range(45):
        kind.make(manager)
    many = _queries_for_list(client, kind)
    assert len(client.get(kind.url("list")).context["page"].items) == 25
    assert many == few
