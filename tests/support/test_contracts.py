"""Support contracts: writing them, who sees them, and which cases they cover.

Contracts are made through ``contracts.create_contract`` (as the UI and the API make them);
cases are opened through the intake as the web form opens them.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent, Role
from trellis.support import contracts, services
from trellis.support.models import Case, CaseEvent, SupportContract

from .. import factories
from ..api.conftest import assert_problem, token_client

pytestmark = pytest.mark.django_db

TODAY = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)
CUSTOMER = "kim@hanbit.example"


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(TODAY, tick=False)
    return time_machine


@pytest.fixture
def agent(db, team):
    return factories.user(Role.SUPPORT, username="agent", first_name="Minji", team=team)


@pytest.fixture
def account(sales):
    """An account of the Seoul team: the outsider (Busan) may not see it."""
    return factories.account(sales, name="Hanbit", email="info@hanbit.example")


@pytest.fixture
def products(admin):
    return factories.product(admin, name="Ledger"), factories.product(admin, name="Payroll")


def contract_data(account, **overrides):
    return {
        "account_id": account.pk,
        "name": "Maintenance 2026",
        "start_date": "2026-01-01",
        "end_date": "2026-12-31",
        **overrides,
    }


def contract_audit(contract):
    content_type = ContentType.objects.get_for_model(SupportContract)
    return list(
        AuditEvent.objects.filter(content_type=content_type, object_id=contract.pk).order_by("id")
    )


def open_case(open_web_case, **overrides):
    overrides.setdefault("requester_email", CUSTOMER)
    case, _key = open_web_case(**overrides)
    return Case.objects.get(pk=case.pk)


# Writing contracts.


def test_an_agent_creates_a_numbered_contract_and_it_is_audited(agent, account, products):
    contract = contracts.create_contract(
        agent,
        contract_data(
            account,
            all_products=False,
            products=[products[0].pk],
            response_hours=8,
            fee_basis="hourly",
            fee_amount="120000",
            currency="KRW",
        ),
    )
    assert contract.number == "SC-2026-000001"
    assert (contract.owner, contract.fee_amount, contract.version) == (agent, Decimal(120000), 1)
    assert list(contract.products.all()) == [products[0]]
    [created] = contract_audit(contract)
    assert created.action == AuditEvent.Action.CREATED
    assert created.changes["products"] == [products[0].pk]
    second = contracts.create_contract(agent, contract_data(account, name="Second"))
    assert second.number == "SC-2026-000002"


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"end_date": "2025-12-31"}, {"end_date"}),
        ({"fee_basis": "hourly", "fee_amount": "-1"}, {"fee_amount"}),
        ({"fee_basis": "per_case", "fee_amount": "10.5"}, {"fee_amount"}),  # KRW: no minor unit
        ({"fee_basis": "per_case", "fee_amount": "10", "currency": "XYZ"}, {"currency"}),
        ({"fee_basis": "hourly"}, {"fee_amount"}),
        ({"fee_amount": "10"}, {"fee_basis"}),
        ({"fee_amount": "ten"}, {"fee_amount"}),
        ({"all_products": False}, {"products"}),
        ({"name": ""}, {"name"}),
        ({"account_id": 999_999}, {"account_id"}),
        ({"response_hours": 0}, {"response_hours"}),
    ],
)
def test_bad_contracts_are_refused_and_nothing_is_written(agent, account, overrides, fields):
    with pytest.raises(ValidationFailed) as failure:
        contracts.create_contract(agent, contract_data(account, **overrides))
    assert set(failure.value.errors) == fields
    assert not SupportContract.objects.exists()


def test_who_may_write_contracts(agent, manager, sales, account):
    with pytest.raises(PermissionDenied):
        contracts.create_contract(sales, contract_data(account))
    contract = contracts.create_contract(manager, contract_data(account))
    with pytest.raises(PermissionDenied):
        contracts.update_contract(sales, contract.pk, {"name": "x"}, version=1)
    assert SupportContract.objects.get().name == "Maintenance 2026"


def test_an_edit_needs_the_current_version(agent, account):
    contract = contracts.create_contract(agent, contract_data(account))
    contracts.update_contract(agent, contract.pk, {"name": "Gold support"}, version=1)
    with pytest.raises(StaleVersion):
        contracts.update_contract(agent, contract.pk, {"name": "Silver"}, version=1)
    contract.refresh_from_db()
    assert (contract.name, contract.version) == ("Gold support", 2)
    assert contract_audit(contract)[-1].changes == {"name": ["Maintenance 2026", "Gold support"]}


# Who sees them.


def test_whoever_sees_the_account_sees_its_contracts(agent, sales, outsider, account):
    contract = contracts.create_contract(agent, contract_data(account))
    assert list(contracts.visible_contracts(sales)) == [contract]
    assert list(contracts.visible_contracts(agent)) == [contract]
    assert list(contracts.visible_contracts(outsider)) == []
    with pytest.raises(NotFound):
        contracts.contract(outsider, contract.pk)
    # Marketing sees every account (read-only): so it sees the contract too.
    marketer = factories.user(Role.MARKETING, username="marketer")
    assert list(contracts.visible_contracts(marketer)) == [contract]


def test_a_hidden_contract_is_a_404_on_the_page_and_in_the_api(client, agent, outsider, account):
    contract = contracts.create_contract(agent, contract_data(account))
    client.force_login(outsider)
    assert client.get(reverse("support:contract-detail", args=[contract.pk])).status_code == 404
    assert_problem(token_client(outsider).get(f"support-contracts/{contract.pk}"), 404)
    listed = token_client(outsider).get("support-contracts/").json()
    assert listed["items"] == []


# Coverage.


def test_a_case_of_an_account_with_an_active_contract_is_covered_on_arrival(
    agent, account, open_web_case
):
    contract = contracts.create_contract(agent, contract_data(account))
    case = open_case(open_web_case)
    assert (case.account, case.contract) == (account, contract)
    event = CaseEvent.objects.get(case=case, kind=CaseEvent.Kind.COVERAGE)
    assert (event.public, event.data["to"]) == (False, contract.number)


def test_an_expired_or_future_contract_covers_nothing(agent, account, open_web_case):
    contracts.create_contract(agent, contract_data(account, end_date="2026-03-09"))
    contracts.create_contract(agent, contract_data(account, start_date="2026-03-11"))
    assert open_case(open_web_case).contract is None


def test_a_contract_for_some_products_covers_only_cases_about_them(
    agent, account, products, open_web_case
):
    ledger, payroll = products
    listed = contracts.create_contract(
        agent, contract_data(account, all_products=False, products=[ledger.pk])
    )
    assert open_case(open_web_case, product=ledger).contract == listed
    assert open_case(open_web_case, product=payroll).contract is None
    assert open_case(open_web_case).contract is None
    # A contract naming the product wins over one covering everything.
    everything = contracts.create_contract(agent, contract_data(account, name="All"))
    assert open_case(open_web_case, product=ledger).contract == listed
    assert open_case(open_web_case, product=payroll).contract == everything


def test_coverage_follows_a_change_of_product_or_account(
    agent, admin, account, products, open_web_case
):
    ledger, payroll = products
    listed = contracts.create_contract(
        agent, contract_data(account, all_products=False, products=[ledger.pk])
    )
    case = open_case(open_web_case, product=ledger)
    assert case.contract == listed
    services.edit(agent, case.pk, {"product_id": payroll.pk}, version=case.version)
    case.refresh_from_db()
    assert case.contract is None
    services.edit(agent, case.pk, {"product_id": ledger.pk}, version=case.version)
    case.refresh_from_db()
    assert case.contract == listed
    elsewhere = factories.account(admin, name="Nuri")
    services.edit(agent, case.pk, {"account_id": elsewhere.pk}, version=case.version)
    case.refresh_from_db()
    assert case.contract is None
    kinds = CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.COVERAGE)
    assert [e.data["to"] for e in kinds.order_by("id")] == [listed.number, "", listed.number, ""]


def test_writing_a_contract_relinks_the_accounts_open_cases(agent, account, open_web_case):
    case = open_case(open_web_case)
    assert case.contract is None
    contract = contracts.create_contract(agent, contract_data(account))
    case.refresh_from_db()
    assert case.contract == contract
    contracts.update_contract(agent, contract.pk, {"end_date": "2026-03-01"}, version=1)
    case.refresh_from_db()
    assert case.contract is None


def test_the_case_page_shows_coverage_and_the_sidebar_lists_contracts(
    client, agent, account, open_web_case
):
    contract = contracts.create_contract(agent, contract_data(account))
    covered = open_case(open_web_case)
    plain = open_case(open_web_case, requester_email="someone@elsewhere.example")
    client.force_login(agent)
    page = client.get(reverse("support:case-detail", args=[covered.pk])).content.decode()
    assert "Covered by contract" in page and contract.number in page
    assert "covers this case" in page
    page = client.get(reverse("support:case-detail", args=[plain.pk])).content.decode()
    assert "Not covered by a support contract" in page


# The pages.


def test_contracts_are_created_and_edited_from_the_ui(client, agent, account):
    client.force_login(agent)
    assert client.get(reverse("support:contract-new")).status_code == 200
    form = {
        "account": account.pk,
        "name": "Maintenance",
        "start_date": "2026-01-01",
        "end_date": "2025-01-01",
        "all_products": "on",
        "currency": "KRW",
    }
    refused = client.post(reverse("support:contract-new"), form)
    assert refused.status_code == 422
    assert "The end date cannot be before the start date." in refused.content.decode()
    form["end_date"] = "2026-12-31"
    created = client.post(reverse("support:contract-new"), form)
    contract = SupportContract.objects.get()
    assert created.url == reverse("support:contract-detail", args=[contract.pk])
    url = reverse("support:contract-detail", args=[contract.pk])
    assert client.post(url, {**form, "name": "Gold", "version": 1}).status_code == 302
    stale = client.post(url, {**form, "name": "Silver", "version": 1})
    assert stale.status_code == 409
    contract.refresh_from_db()
    assert (contract.name, contract.version) == ("Gold", 2)
    listing = client.get(reverse("support:contract-list"), {"active": "yes"}).content.decode()
    assert contract.number in listing


def test_sales_may_read_but_not_create_contracts_in_the_ui(client, sales):
    client.force_login(sales)
    assert client.get(reverse("support:contract-list")).status_code == 200
    assert client.get(reverse("support:contract-new")).status_code == 403


# The API.


def test_contracts_through_the_api(agent, account, products):
    api = token_client(agent)
    body = {
        **contract_data(account),
        "all_products": False,
        "product_ids": [products[1].pk],
        "fee_basis": "per_case",
        "fee_amount": "50000",
    }
    created = api.post("support-contracts/", body)
    assert created.status_code == 201, created.content
    row = created.json()
    assert (row["number"], row["active"], row["product_ids"]) == (
        "SC-2026-000001",
        True,
        [products[1].pk],
    )
    assert (row["fee_amount"], row["currency"], row["version"]) == ("50000", "KRW", 1)
    changed = api.patch(f"support-contracts/{row['id']}", {"name": "Gold", "version": 1})
    assert changed.json()["name"] == "Gold"
    stale = assert_problem(
        api.patch(f"support-contracts/{row['id']}", {"name": "Silver", "version": 1}), 409
    )
    assert stale["current"]["name"] == "Gold"
    assert_problem(api.post("support-contracts/", {**body, "end_date": "2020-01-01"}), 422)
    assert_problem(api.post("support-contracts/", {**body, "fee_amount": "-5"}), 422, "fee_amount")
    assert_problem(api.post("support-contracts/", {**body, "currency": "XXX"}), 422, "currency")
    assert [item["name"] for item in api.get("support-contracts/").json()["items"]] == ["Gold"]
    assert api.get("support-contracts/", active="false").json()["items"] == []
    assert_problem(api.get("support-contracts/", colour="red"), 422, "colour")
