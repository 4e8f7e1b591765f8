"""Whatever JSON a client sends, the answer is never a 5xx.

Hypothesis throws arbitrary values of every JSON type at the create and update endpoints of each
record type, under the real field names and under made-up ones, and arbitrary query strings at
the lists. Anything refused must be refused in the problem shape.
"""

import datetime as dt
import json
import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trellis.crm.api import RECORD_TYPES

from .. import factories
from .conftest import token_client

FUZZ = settings(
    # More for a longer hunt: TRELLIS_FUZZ_EXAMPLES=2000 pytest tests/api/test_fuzz.py
    max_examples=int(os.environ.get("TRELLIS_FUZZ_EXAMPLES", 60)),
    deadline=None,
    database=None,  # no .hypothesis/ directory in the tree
    # The fixtures are made once per test, not per example, on purpose; and a few field names
    # drawn many times make unique dictionary keys hard to find, which is fine here.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)

# Values that sit on the edges of what the database and the validators take.
EDGES = st.sampled_from(
    [
        0,
        -1,
        2**31,
        2**63,
        2**64,
        10**20,
        1e308,
        -0.0,
        0.1,
        "",
        " ",
        "\x00",
        "NaN",
        "Infinity",
        "1e999",
        "9999999999999999.99",
        "KRW",
        "opportunity",
        "2026-02-30",
        "2026-01-01T00:00:00+09:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31",
        "주식회사 한빛소프트",
        "a" * 5001,
        "😀" * 201,
        float("nan"),  # json.dumps writes these bare, as a careless client might
        float("inf"),
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | EDGES
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture
def world(admin):
    account = factories.account(admin)
    product = factories.product(admin)
    records = {
        "account": account,
        "contact": factories.contact(admin, accounts=[account]),
        "lead": factories.lead(admin),
        "opportunity": factories.opportunity(admin, account_id=account.pk),
        "product": product,
        "order": factories.order(admin, account_id=account.pk),
    }
    records["activity"] = factories.activity(admin, records["opportunity"])
    ids = st.sampled_from([record.pk for record in records.values()])
    return token_client(admin), records, ids


OFFSETS = st.sampled_from(
    [dt.UTC, dt.timezone(dt.timedelta(hours=9)), dt.timezone(-dt.timedelta(hours=14))]
)
CONTACT_DETAILS = st.sampled_from(
    ["minji@example.com", "a@b", "02-2255-0114", "010 1234 5678", "+1 202 555 0100", "12"]
)


def typed(schema: dict, ids: st.SearchStrategy) -> st.SearchStrategy:
    """Values of the type an OpenAPI property asks for, in and around its bounds.

    Most fuzzed requests should get past the schema into the services' own checks (formats,
    money, related records, versions), where a crash is likelier than in pydantic.
    """
    if "anyOf" in schema:
        return st.one_of([typed(option, ids) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63)
        return ids | st.integers(low, high) | st.sampled_from([low, high, low - 1, high + 1])
    if kind == "number":  # decimals arrive as numbers or strings
        return st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(typed(schema.get("items", {}), ids), max_size=3)
    if kind == "string":
        if schema.get("format") == "date":
            return st.dates().map(str)
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=OFFSETS).map(dt.datetime.isoformat)
        longest = schema.get("maxLength", 50)
        return st.text(max_size=min(longest + 2, 300)) | CONTACT_DETAILS
    return JSON


# What a create needs at least, so that the rest of the body is checked by the service.
MINIMAL = {
    "name": "Minimal",
    "sku": "SKU-FUZZ",
    "unit_price": 1000,
    "subject": "Fuzz",
    "related_type": "account",
}


def bodies(endpoints, model, records, ids) -> st.SearchStrategy:
    """Objects of the model's own fields, mostly well typed, sometimes not; and junk."""
    properties = model.model_json_schema()["properties"]
    properties.pop("lines", None)

    def objects(junk_values: bool) -> st.SearchStrategy:
        def value(name: str, schema: dict) -> st.SearchStrategy:
            values = typed(schema, ids)
            return values | JSON if junk_values and name != "version" else values

        fields = st.fixed_dictionaries(
            {}, optional={name: value(name, schema) for name, schema in properties.items()}
        )
        if "lines" in model.model_fields:
            line = st.fixed_dictionaries(
                {"product_id": st.just(records["product"].pk) | ids},
                optional={
                    "quantity": st.integers(-1, 2**32),
                    "unit_price": typed({"type": "number"}, ids),
                    "discount_pct": typed({"type": "number"}, ids),
                    **({"colour": JSON} if junk_values else {}),
                },
            )
            fields = st.tuples(fields, st.lists(line, max_size=3)).map(
                lambda both: {**both[0], "lines": both[1]}
            )
        return fields

    required = {
        name: MINIMAL.get(name, records["account"].pk)
        for name, field in model.model_fields.items()
        if field.is_required() and name != "version"
    }

    def with_required(given: dict) -> dict:
        return {**required, **given}

    junk = st.dictionaries(st.text(max_size=8), JSON, max_size=3) | JSON
    clean = objects(junk_values=False).map(with_required)
    return st.one_of(clean, clean, objects(junk_values=True).map(with_required), junk)


def encode(body) -> str:
    return json.dumps(body)


def assert_no_server_error(answer) -> None:
    event(f"status {answer.status_code}")  # see them with --hypothesis-show-statistics
    assert answer.status_code < 500, answer.content
    if answer.status_code >= 400:
        assert answer["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("endpoints", RECORD_TYPES, ids=lambda e: e.key)
@FUZZ
@given(data=st.data())
def test_create_never_fails_with_a_server_error(endpoints, world, data):
    api, records, ids = world
    body = data.draw(bodies(endpoints, endpoints.Create, records, ids))
    assert_no_server_error(api.post(endpoints.path + "/", encode(body)))


@pytest.mark.parametrize("endpoints", RECORD_TYPES, ids=lambda e: e.key)
@FUZZ
@given(data=st.data())
def test_update_never_fails_with_a_server_error(endpoints, world, data):
    api, records, ids = world
    body = data.draw(bodies(endpoints, endpoints.Update, records, ids))
    if isinstance(body, dict) and data.draw(st.booleans()):
        # Mostly with the right version, so the change reaches the service.
        record = records[endpoints.key]
        record.refresh_from_db()
        body["version"] = record.version
    item = f"{endpoints.path}/{records[endpoints.key].pk}"
    assert_no_server_error(api.patch(item, encode(body)))
    if endpoints.key == "order":
        assert_no_server_error(api.put(item + "/lines", encode(body)))


@pytest.mark.parametrize("endpoints", RECORD_TYPES, ids=lambda e: e.key)
@FUZZ
@given(data=st.data())
def test_lists_never_fail_with_a_server_error(endpoints, world, data):
    api, _records, _ids = world
    names = st.sampled_from(sorted(endpoints.ListParams.model_fields)) | st.text(min_size=1)
    values = st.text(max_size=20) | EDGES.map(str) | st.integers().map(str)
    params = data.draw(st.dictionaries(names, values, max_size=4))
    assert_no_server_error(api.get(endpoints.path + "/", **params))
