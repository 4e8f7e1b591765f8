"""The generic record services in ``core.records``, exercised through the CRM's record specs."""

import dataclasses
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from trellis.core import audit, events, records
from trellis.core.errors import StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.crm import services
from trellis.crm.models import Account, Contact, Opportunity, Order, OrderLine, Product

from .. import factories
from ..concurrency import OwnConnections


def audit_rows(model) -> list[tuple[str, int]]:
    content_type = ContentType.objects.get_for_model(model)
    return list(
        AuditEvent.objects.filter(content_type=content_type)
        .order_by("id")
        .values_list("action", "object_id")
    )


def label(record) -> dict[str, Any]:
    return {"id": record.pk, "label": str(record)}


# Fields a caller may and may not set


@pytest.mark.parametrize("field", ["colour", "version", "search_text", "created_at", "id"])
def test_a_field_the_spec_does_not_offer_is_refused_and_nothing_is_written(sales, field):
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "account", {"name": "Hanbit", field: "7"})
    assert failure.value.errors == {field: ["Unknown field."]}
    assert not Account.objects.exists()
    assert audit_rows(Account) == []


def test_an_unknown_field_in_an_update_changes_nothing(sales):
    account = factories.account(sales, name="Hanbit")
    with pytest.raises(ValidationFailed) as failure:
        services.update(sales, "account", account.pk, {"name": "Other", "version": 9}, 1)
    assert failure.value.errors == {"version": ["Unknown field."]}
    account.refresh_from_db()
    assert (account.name, account.version) == ("Hanbit", 1)
    assert audit_rows(Account) == [("created", account.pk)]


@pytest.mark.parametrize("key", ["account", "account_id"])
def test_a_foreign_key_may_be_given_by_name_or_by_column(sales, key):
    account = factories.account(sales)
    deal = services.create(sales, "opportunity", {"name": "Renewal", key: account.pk})
    assert Opportunity.objects.get(pk=deal.pk).account_id == account.pk

    other = factories.account(sales)
    services.update(sales, "opportunity", deal.pk, {key: other.pk}, version=1)
    deal.refresh_from_db()
    assert (deal.account_id, deal.version) == (other.pk, 2)


@pytest.mark.parametrize("key", ["account", "account_id"])
def test_a_hidden_record_behind_a_foreign_key_looks_missing(sales, outsider, key):
    hidden = factories.account(outsider)
    missing_pk = hidden.pk + 1000
    with pytest.raises(ValidationFailed) as hidden_failure:
        services.create(sales, "opportunity", {"name": "Poach", key: hidden.pk})
    with pytest.raises(ValidationFailed) as missing_failure:
        services.create(sales, "opportunity", {"name": "Poach", key: missing_pk})
    # Reported under the key the caller used, in words that do not tell hidden from missing.
    assert hidden_failure.value.errors == {key: [f"No such record: {hidden.pk}."]}
    assert missing_failure.value.errors == {key: [f"No such record: {missing_pk}."]}
    assert not Opportunity.objects.exists()


def test_a_hidden_record_cannot_be_linked_by_an_update_either(sales, outsider):
    deal = factories.opportunity(sales)
    original_account = deal.account_id
    hidden = factories.account(outsider)
    with pytest.raises(ValidationFailed) as failure:
        services.update(sales, "opportunity", deal.pk, {"account_id": hidden.pk}, version=1)
    assert list(failure.value.errors) == ["account_id"]
    deal.refresh_from_db()
    assert (deal.account_id, deal.version) == (original_account, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "Give the id of an existing record."),
        (None, "This field is required."),
        ("", "This field is required."),
    ],
)
def test_a_bad_foreign_key_value_is_a_field_error(sales, value, message):
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "opportunity", {"name": "Deal", "account_id": value})
    assert failure.value.errors == {"account_id": [message]}
    assert not Opportunity.objects.exists()


def test_a_required_foreign_key_left_out_is_a_field_error(sales):
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "opportunity", {"name": "Deal"})
    assert list(failure.value.errors) == ["account"]
    assert not Opportunity.objects.exists()


def test_an_inactive_user_cannot_become_an_owner(sales, other_sales):
    other_sales.is_active = False
    other_sales.save()
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "account", {"name": "Hanbit", "owner": other_sales.pk})
    assert failure.value.errors == {"owner": [f"No such record: {other_sales.pk}."]}


# Many-to-many: a contact's accounts


def test_contact_accounts_must_all_be_visible(sales, outsider):
    mine = factories.account(sales)
    hidden = factories.account(outsider)
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "contact", {"name": "Kim", "accounts": [mine.pk, hidden.pk]})
    assert failure.value.errors == {"accounts": [f"No such record: {hidden.pk}."]}
    assert not Contact.objects.exists()
    assert not Contact.accounts.through.objects.exists()


def test_contact_accounts_are_set_and_replaced_through_visibility(sales, outsider):
    first, second = factories.account(sales), factories.account(sales)
    hidden = factories.account(outsider)
    contact = services.create(sales, "contact", {"name": "Kim", "accounts": [first.pk]})
    assert list(contact.accounts.all()) == [first]

    with pytest.raises(ValidationFailed) as failure:
        services.update(sales, "contact", contact.pk, {"accounts": [second, hidden.pk]}, 1)
    assert list(failure.value.errors) == ["accounts"]
    contact.refresh_from_db()
    assert (list(contact.accounts.all()), contact.version) == ([first], 1)

    services.update(sales, "contact", contact.pk, {"accounts": [second.pk]}, version=1)
    contact.refresh_from_db()
    assert (list(contact.accounts.all()), contact.version) == ([second], 2)
    latest = audit.history(contact).first()
    assert latest.changes == {"accounts": [[first.pk], [second.pk]]}


@pytest.mark.parametrize("value", ["12", 12, ["x"]])
def test_contact_accounts_must_be_a_list_of_ids(sales, value):
    with pytest.raises(ValidationFailed) as failure:
        services.create(sales, "contact", {"name": "Kim", "accounts": value})
    assert failure.value.errors == {"accounts": ["Give a list of ids."]}


# Owner and team


def test_the_owner_defaults_to_the_actor_and_the_team_to_the_owners(sales):
    account = services.create(sales, "account", {"name": "Hanbit"})
    assert (account.owner, account.team) == (sales, sales.team)


def test_the_team_follows_a_given_owner(sales, outsider):
    account = services.create(sales, "account", {"name": "Hanbit", "owner": outsider.pk})
    account.refresh_from_db()
    assert (account.owner_id, account.team_id) == (outsider.pk, outsider.team_id)
    assert account.team_id != sales.team_id


def test_a_given_team_is_kept_even_when_empty(sales, outsider):
    elsewhere = services.create(sales, "account", {"name": "A", "team": outsider.team_id})
    no_team = services.create(sales, "account", {"name": "B", "team_id": None})
    assert Account.objects.get(pk=elsewhere.pk).team_id == outsider.team_id
    assert Account.objects.get(pk=no_team.pk).team_id is None


def test_a_user_without_a_team_makes_records_without_a_team(db):
    loner = factories.user("sales", team=None)
    assert factories.account(loner).team_id is None


# Deleting


def test_an_account_with_opportunities_is_in_use_and_nothing_is_deleted(sales, manager):
    account = factories.account(sales)
    deal = factories.opportunity(sales, account_id=account.pk)
    before = audit_rows(Account)
    with pytest.raises(records.InUse) as failure:
        services.delete(manager, "account", account.pk)
    assert failure.value.status == 409
    assert "opportunities" in failure.value.detail
    assert Account.objects.filter(pk=account.pk, version=1).exists()
    assert Opportunity.objects.filter(pk=deal.pk, account_id=account.pk).exists()
    assert audit_rows(Account) == before


def test_a_product_on_an_order_line_is_in_use(sales, admin):
    product = factories.product(admin)
    order = factories.order(sales, lines=[{"product_id": product.pk, "quantity": 1}])
    with pytest.raises(records.InUse) as failure:
        services.delete(admin, "product", product.pk)
    assert "order lines" in failure.value.detail
    assert Product.objects.filter(pk=product.pk).exists()
    assert OrderLine.objects.filter(order=order, product=product).exists()


def test_once_unreferenced_the_account_can_be_deleted(sales, manager):
    account = factories.account(sales)
    deal = factories.opportunity(sales, account_id=account.pk)
    services.delete(manager, "opportunity", deal.pk)
    services.delete(manager, "account", account.pk, version=1)
    assert not Account.objects.filter(pk=account.pk).exists()


def test_delete_of_a_stale_version_changes_nothing(sales, manager):
    account = factories.account(sales, name="Old")
    services.update(sales, "account", account.pk, {"name": "New"}, version=1)
    with pytest.raises(StaleVersion) as conflict:
        services.delete(manager, "account", account.pk, version=1)
    assert conflict.value.current.version == 2
    assert Account.objects.filter(pk=account.pk).exists()
    assert [action for action, _pk in audit_rows(Account)] == ["created", "updated"]


def test_an_update_without_a_version_is_refused(sales):
    account = factories.account(sales, name="Old")
    with pytest.raises(ValidationFailed) as failure:
        services.update(sales, "account", account.pk, {"name": "New"}, version=None)
    assert list(failure.value.errors) == ["version"]
    assert Account.objects.get(pk=account.pk).name == "Old"


# The audit trail


def test_create_update_and_delete_are_audited_with_old_and_new_values(sales, other_sales, manager):
    account = services.create(
        sales, "account", {"name": "Hanbit", "phone": "02-2255-0114", "industry": ""}
    )
    created = audit.history(account).get()
    assert (created.action, created.actor, created.summary) == ("created", sales, "Hanbit")
    # Empty values are left out of a creation's record.
    assert created.changes == {
        "name": "Hanbit",
        "phone": "+82222550114",
        "country": "KR",
        "owner": label(sales),
        "team": label(sales.team),
    }

    services.update(
        sales,
        "account",
        account.pk,
        {"name": "Hanbit Soft", "owner": other_sales.pk, "phone": "02-2255-0114"},
        version=1,
    )
    updated = audit.history(account).first()
    assert (updated.action, updated.actor) == ("updated", sales)
    # Only what changed: the phone was given again in another spelling but is the same number.
    assert updated.changes == {
        "name": ["Hanbit", "Hanbit Soft"],
        "owner": [label(sales), label(other_sales)],
    }

    services.delete(manager, "account", account.pk, version=2)
    deleted = AuditEvent.objects.filter(action="deleted").get()
    assert (deleted.object_id, deleted.actor, deleted.summary) == (
        account.pk,
        manager,
        "Hanbit Soft",
    )
    assert deleted.changes == {
        "name": "Hanbit Soft",
        "phone": "+82222550114",
        "country": "KR",
        "owner": label(other_sales),
        "team": label(sales.team),
    }
    assert [action for action, _pk in audit_rows(Account)] == ["created", "updated", "deleted"]


def test_amounts_are_audited_as_plain_numbers(sales):
    deal = factories.opportunity(sales, amount=Decimal("1000.00"), currency="USD")
    services.update(sales, "opportunity", deal.pk, {"amount": Decimal("1250.50")}, version=1)
    assert audit.history(deal).first().changes == {"amount": ["1000", "1250.5"]}


# Events: published after the commit, never for a rolled-back change


@pytest.fixture
def heard():
    calls: list[tuple[str, dict]] = []

    def handler(name: str, payload: dict) -> None:
        calls.append((name, payload))

    events.subscribe("*", handler)
    yield calls
    events.unsubscribe("*", handler)


class Rollback(Exception):
    pass


def test_events_are_published_on_commit(sales, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        account = services.create(sales, "account", {"name": "Hanbit"})
        assert heard == []  # not before the commit
    assert heard == [("account.created", {"id": account.pk, "actor_id": sales.pk})]

    heard.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.update(sales, "account", account.pk, {"name": "Hanbit Soft"}, version=1)
        services.update(sales, "account", account.pk, {"name": "Hanbit Soft"}, version=2)
    # The second update changed nothing and published nothing; the first says what it changed
    # and what the field held before.
    assert heard == [
        (
            "account.updated",
            {
                "id": account.pk,
                "actor_id": sales.pk,
                "changed": ["name"],
                "before": {"name": "Hanbit"},
            },
        )
    ]


def test_a_rolled_back_change_publishes_nothing(sales, heard, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(Rollback),
        transaction.atomic(),
    ):
        services.create(sales, "account", {"name": "Hanbit"})
        raise Rollback
    assert (callbacks, heard) == ([], [])
    assert not Account.objects.exists()


def test_a_service_that_fails_half_way_publishes_nothing(
    sales, heard, django_capture_on_commit_callbacks
):
    account = factories.account(sales)
    # The order is created (and its event queued) before its lines are checked.
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(ValidationFailed) as failure,
    ):
        services.create_order(sales, {"account_id": account.pk}, [{"product_id": 0}])
    assert list(failure.value.errors) == ["lines.0.product_id"]
    assert (callbacks, heard) == ([], [])
    assert not Order.objects.exists()
    assert audit_rows(Order) == []


def test_events_wait_for_the_outermost_commit(transactional_db, heard):
    sales = factories.user("sales")
    admin = factories.user("admin")
    with transaction.atomic():
        account = services.create(sales, "account", {"name": "Hanbit"})
        services.delete(admin, "account", account.pk)
        assert heard == []
    assert [name for name, _payload in heard] == ["account.created", "account.deleted"]


def test_events_dispatched_together_reach_a_batch_handler_in_one_call(
    sales, heard, django_capture_on_commit_callbacks
):
    batches: list[list[str]] = []

    def one(name: str, payload: dict) -> None:
        raise AssertionError("a handler with a batch form is not called one by one")

    def many(items: list[tuple[str, dict]]) -> None:
        batches.append([name for name, _payload in items])

    events.subscribe("account.created", one, many=many)
    try:
        with events.dispatched_together():
            with django_capture_on_commit_callbacks(execute=True):
                first = services.create(sales, "account", {"name": "Hanbit"})
                with pytest.raises(Rollback), transaction.atomic():
                    services.create(sales, "account", {"name": "Rolled back"})
                    raise Rollback
                second = services.create(sales, "account", {"name": "Daehan"})
            assert (heard, batches) == ([], [])  # committed, but held until the block ends
    finally:
        events.unsubscribe("account.created", one)
    assert batches == [["account.created", "account.created"]]
    # A handler without a batch form hears each event, in the order they were committed.
    assert [payload["id"] for _name, payload in heard] == [first.pk, second.pk]


# Many records at once


def test_update_many_writes_each_record_with_its_audit_and_event(
    sales, heard, django_capture_on_commit_callbacks
):
    deals = [factories.opportunity(sales, name=f"Deal {n}") for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        services.update_many(
            sales,
            "opportunity",
            [
                (deals[0].pk, {"description": "first"}, deals[0].version),
                (deals[1].pk, {"name": deals[1].name}, deals[1].version),  # no change
                (deals[2].pk, {"description": "third", "probability": 40}, deals[2].version),
            ],
        )
    stored = {d.pk: d for d in Opportunity.objects.all()}
    assert [stored[d.pk].version for d in deals] == [2, 1, 2]
    assert (stored[deals[0].pk].description, stored[deals[2].pk].description) == ("first", "third")
    assert stored[deals[2].pk].probability_manual  # a probability given is kept, as in update
    assert audit.history(deals[0]).first().changes == {"description": ["", "first"]}
    assert audit.history(deals[1]).count() == 1  # created only
    assert [(name, p["id"], p["changed"]) for name, p in heard] == [
        ("opportunity.updated", deals[0].pk, ["description"]),
        ("opportunity.updated", deals[2].pk, ["description", "probability"]),
    ]


def test_update_many_refuses_the_whole_batch_for_one_stale_record(sales):
    first, second = factories.opportunity(sales), factories.opportunity(sales)
    with pytest.raises(StaleVersion):
        services.update_many(
            sales,
            "opportunity",
            [(first.pk, {"description": "new"}, 1), (second.pk, {"description": "new"}, 7)],
        )
    assert set(Opportunity.objects.values_list("description", "version")) == {("", 1)}


def test_update_many_takes_no_links_and_no_status(sales):
    contact = factories.contact(sales)
    deal = factories.opportunity(sales)
    with pytest.raises(ValueError, match="one record at a time"):
        services.update_many(sales, "contact", [(contact.pk, {"accounts": []}, 1)])
    with pytest.raises(ValueError, match="one deal at a time"):
        services.update_many(sales, "opportunity", [(deal.pk, {"status": "won"}, 1)])


# Two writers at once


def account_state(pk: int) -> tuple[str, int, list[str]]:
    account = Account.objects.get(pk=pk)
    return account.name, account.version, [action for action, _pk in audit_rows(Account)]


def test_of_two_writers_of_the_same_version_exactly_one_wins(transactional_db):
    sales = factories.user("sales")
    account = factories.account(sales, name="Before")
    threads = OwnConnections()
    start = threading.Barrier(2, timeout=30)

    def write(name: str) -> Callable[[], Any]:
        def run():
            actor = User.objects.get(pk=sales.pk)
            start.wait()
            return services.update(actor, "account", account.pk, {"name": name}, version=1)

        return run

    outcomes = threads.run(write("A"), write("B"))

    winners = [o for o in outcomes if isinstance(o, Account)]
    losers = [o for o in outcomes if isinstance(o, StaleVersion)]
    assert (len(winners), len(losers)) == (1, 1), outcomes
    [winner], [loser] = winners, losers
    assert (loser.current.name, loser.current.version) == (winner.name, 2)
    [state] = threads.run(lambda: account_state(account.pk))
    assert state == (winner.name, 2, ["created", "updated"])


def test_a_writer_waits_for_the_one_holding_the_record_then_sees_it_changed(transactional_db):
    sales = factories.user("sales")
    account = factories.account(sales, name="Before")
    threads = OwnConnections()
    first_holds_the_record = threading.Event()

    def prepare_and_signal(instance):
        services.ACCOUNT.prepare(instance)
        first_holds_the_record.set()

    # The same spec with a hook that runs inside the transaction, after the record is locked.
    signalling = dataclasses.replace(services.ACCOUNT, prepare=prepare_and_signal)

    def first():
        actor = User.objects.get(pk=sales.pk)
        return records.update(actor, signalling, account.pk, {"name": "First"}, version=1)

    def second():
        actor = User.objects.get(pk=sales.pk)
        assert first_holds_the_record.wait(timeout=30)
        return services.update(actor, "account", account.pk, {"name": "Second"}, version=1)

    won, lost = threads.run(first, second)

    assert isinstance(won, Account), won
    assert isinstance(lost, StaleVersion), lost
    assert (lost.current.name, lost.current.version) == ("First", 2)
    [state] = threads.run(lambda: account_state(account.pk))
    assert state == ("First", 2, ["created", "updated"])


def test_editing_a_contacts_accounts_keeps_the_links_the_editor_cannot_see(sales, outsider):
    theirs = factories.account(outsider, name="Busan branch")
    mine, other_mine = factories.account(sales), factories.account(sales)
    contact = factories.contact(outsider, accounts=[theirs.pk])
    # The contact is shared with the sales user's team so that they may edit it.
    Contact.objects.filter(pk=contact.pk).update(team=sales.team)
    services.update(sales, "contact", contact.pk, {"accounts": [mine.pk]}, version=1)
    assert set(Contact.objects.get(pk=contact.pk).accounts.all()) == {theirs, mine}
    services.update(sales, "contact", contact.pk, {"accounts": [other_mine.pk]}, version=2)
    assert set(Contact.objects.get(pk=contact.pk).accounts.all()) == {theirs, other_mine}
