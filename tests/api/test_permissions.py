"""Who may do what: anonymous, no right, the right, and records outside one's visibility."""

import pytest
from django.test import Client

from trellis.core import services as core_services
from trellis.core.models import ApiToken, Role

from .. import factories
from .conftest import Api, assert_problem, database_state, token_client

# Every endpoint, with a body good enough that only authentication can stop it.
ENDPOINTS = [
    ("get", "me", None),
    ("get", "tokens/", None),
    ("post", "tokens/", {"name": "script"}),
    ("delete", "tokens/1", None),
    *[("get", f"{path}/", None) for path in ("accounts", "orders", "activities")],
    ("get", "accounts/1", None),
    ("post", "accounts/", {"name": "Hanbit"}),
    ("patch", "accounts/1", {"version": 1, "name": "Nuri"}),
    ("delete", "accounts/1", None),
    ("put", "orders/1/lines", {"version": 1, "lines": []}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_anonymous_callers_get_401_and_change_nothing(method, path, body, admin):
    factories.account(admin)
    before = database_state()
    api = Api(Client())
    answer = getattr(api, method)(path, body) if body is not None else getattr(api, method)(path)
    assert_problem(answer, 401)
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert database_state() == before


@pytest.mark.parametrize(
    "authorization", ["Bearer trl_not-a-token", "Bearer ", "Basic dXNlcjpwdw==", "trl_x"]
)
def test_a_bad_token_is_401(authorization, db):
    assert_problem(Api(Client(headers={"Authorization": authorization})).get("accounts/"), 401)


def test_a_revoked_token_or_inactive_user_is_401(sales):
    token, key = core_services.create_api_token(sales, "script")
    api = Api(Client(headers={"Authorization": f"Bearer {key}"}))
    assert api.get("me").status_code == 200
    core_services.revoke_api_token(sales, token.pk)
    assert_problem(api.get("me"), 401)

    sales.is_active = False
    sales.save(update_fields=["is_active"])
    _token, key = core_services.create_api_token(sales, "another")
    assert_problem(Api(Client(headers={"Authorization": f"Bearer {key}"})).get("me"), 401)


def test_me_tells_who_and_what_rights(sales):
    me = token_client(sales).get("me").json()
    assert (me["id"], me["username"], me["role"], me["team_name"]) == (
        sales.pk,
        "sales",
        "sales",
        "Seoul sales",
    )
    assert me["rights"]["opportunity"] == {
        "scope": "own",
        "create": True,
        "edit": True,
        "delete": True,
    }


def test_tokens_are_created_listed_and_revoked_by_their_owner(sales, other_sales):
    api = token_client(sales)
    created = api.post("tokens/", {"name": "nightly import"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("trl_")
    assert (
        Api(Client(headers={"Authorization": f"Bearer {key}"})).get("me").json()["id"] == sales.pk
    )

    listed = api.get("tokens/").json()
    assert [t["name"] for t in listed] == ["nightly import", "tests"]
    assert all("key" not in t for t in listed)

    theirs = ApiToken.objects.create(user=other_sales, name="theirs", key_hash="x" * 64)
    assert_problem(api.delete(f"tokens/{theirs.pk}"), 404)
    assert api.delete(f"tokens/{created.json()['id']}").status_code == 204
    assert_problem(Api(Client(headers={"Authorization": f"Bearer {key}"})).get("me"), 401)
    assert_problem(api.post("tokens/", {"name": ""}), 422, "name")


def test_listing_a_type_one_may_not_see_is_403(db, team):
    support = factories.user(Role.SUPPORT, username="support", team=team)
    marketing = factories.user(Role.MARKETING, username="marketing", team=team)
    assert_problem(token_client(support).get("leads/"), 403)
    assert_problem(token_client(support).get("opportunities/"), 403)
    assert_problem(token_client(marketing).get("orders/"), 403)
    assert token_client(support).get("accounts/").status_code == 200


def test_reading_a_record_of_a_type_one_may_not_see_is_404(sales, team):
    support = factories.user(Role.SUPPORT, username="support", team=team)
    lead = factories.lead(sales)
    assert_problem(token_client(support).get(f"leads/{lead.pk}"), 404)


@pytest.mark.parametrize(
    ("role", "method", "path", "body"),
    [
        (Role.READ_ONLY, "post", "accounts/", {"name": "Hanbit"}),
        (Role.SALES, "post", "products/", {"name": "Widget", "sku": "W-1", "unit_price": 1000}),
        (Role.MARKETING, "post", "opportunities/", {"name": "Deal", "account_id": "{account}"}),
        (Role.READ_ONLY, "patch", "accounts/{account}", {"version": 1, "name": "Nuri"}),
        (Role.READ_ONLY, "delete", "accounts/{account}", None),
        (Role.SALES, "delete", "accounts/{account}", None),
    ],
)
def test_lacking_the_right_is_403_and_changes_nothing(role, method, path, body, team, admin):
    user = factories.user(role, username="someone", team=team)
    account = factories.account(admin, team_id=team.pk)
    if role == Role.SALES and method == "delete":
        account = factories.account(user)  # their own: they see it, but may not delete accounts
    path = path.format(account=account.pk)
    if isinstance(body, dict):
        body = {k: account.pk if v == "{account}" else v for k, v in body.items()}
    before = database_state()
    api = token_client(user)
    answer = getattr(api, method)(path, body) if body is not None else getattr(api, method)(path)
    assert_problem(answer, 403)
    assert database_state() == before


def test_records_outside_ones_visibility_are_404_and_unlisted(sales, other_sales, outsider):
    mine = factories.opportunity(sales)
    colleagues = factories.opportunity(other_sales)  # sales sees only their own deals
    strangers = factories.opportunity(outsider)
    api = token_client(sales)
    before = database_state()
    for hidden in (colleagues, strangers):
        item = f"opportunities/{hidden.pk}"
        assert_problem(api.get(item), 404)
        assert_problem(api.patch(item, {"version": 1, "name": "Mine now"}), 404)
        assert_problem(api.delete(item), 404)
        about_it = {"related_type": "opportunity", "related_id": hidden.pk, "subject": "Call"}
        assert_problem(api.post("activities/", about_it), 422, "related_id")
    assert database_state() == before
    assert [d["id"] for d in api.get("opportunities/").json()["items"]] == [mine.pk]


def test_a_hidden_record_cannot_be_linked(sales, outsider):
    theirs = factories.account(outsider)
    before = database_state()
    answer = token_client(sales).post("opportunities/", {"name": "Deal", "account_id": theirs.pk})
    body = assert_problem(answer, 422, "account_id")
    assert body["errors"][0]["message"] == f"No such record: {theirs.pk}."
    assert database_state() == before


def test_a_team_sees_its_accounts(sales, other_sales):
    account = factories.account(other_sales)
    answer = token_client(sales).get(f"accounts/{account.pk}")
    assert answer.status_code == 200
    assert answer.json()["owner_name"] == str(other_sales)
