"""Support fees: proposed by an agent, agreed or declined on the status page, charged after
resolution, billed by finance; waived; reopened before and after billing.

Cases are opened through the intake as the web form opens them; the customer answers through
the portal with the access key their acknowledgement carried.
"""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from trellis.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Role, User
from trellis.mail.models import OutboundMessage
from trellis.support import billing, contracts, intake, services
from trellis.support.models import Case, CaseEvent, Charge, SupportFee

from .. import factories
from ..api.conftest import assert_problem, token_client
from ..concurrency import OwnConnections

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)
Status = Case.Status
FeeStatus = SupportFee.Status
ChargeStatus = Charge.Status


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def agent(db, team):
    return factories.user(Role.SUPPORT, username="agent", first_name="Minji", team=team)


@pytest.fixture
def opened(open_web_case):
    case, key = open_web_case(subject="Export fails")
    return Case.objects.get(pk=case.pk), key


def propose(agent, case, amount="50000", currency="KRW", description="On-site visit"):
    return billing.propose_fee(
        agent, case.pk, amount=amount, currency=currency, description=description
    )


def answer(client, case, key, fee, choice="agree"):
    url = reverse("portal:fee", args=[case.tracking_number, key, fee.pk])
    return client.post(url, {"answer": choice})


def resolve(agent, case):
    return services.set_status(agent, case.pk, Status.RESOLVED)


def status_of(charge):
    return billing.charge_status(Charge.objects.select_related("case").get(pk=charge.pk))


def audit_of(record):
    content_type = ContentType.objects.get_for_model(type(record))
    return list(
        AuditEvent.objects.filter(content_type=content_type, object_id=record.pk)
        .order_by("id")
        .values_list("changes", flat=True)
    )


def mail_about(case):
    content_type = ContentType.objects.get_for_model(Case)
    return list(
        OutboundMessage.objects.filter(content_type=content_type, object_id=case.pk).order_by("id")
    )


def public_kinds(case):
    return [
        e.kind
        for e in CaseEvent.objects.filter(case=case, public=True).order_by("at", "id")
        if e.kind.startswith("fee_")
    ]


# The whole way.


def test_proposed_agreed_resolved_charged_billed(client, agent, manager, opened, frozen):
    case, key = opened
    fee = propose(agent, case)
    assert (fee.status, fee.amount, fee.contract) == (FeeStatus.PROPOSED, Decimal(50000), None)
    notice = mail_about(case)[-1]
    assert "50,000 KRW" in notice.text and "On-site visit" in notice.text
    assert reverse("portal:index") in notice.text
    page = client.get(reverse("portal:status", args=[case.tracking_number, key])).content.decode()
    assert "50,000 KRW" in page and "I agree to this fee" in page

    frozen.shift(dt.timedelta(hours=1))
    response = answer(client, case, key, fee)
    assert response.status_code == 302
    fee.refresh_from_db()
    assert (fee.status, fee.answered_at) == (FeeStatus.AGREED, START + dt.timedelta(hours=1))
    assert public_kinds(case) == ["fee_proposed", "fee_agreed"]
    page = client.get(response.url).content.decode()
    assert "You agreed to the support fee of 50,000 KRW." in page
    assert "I agree to this fee" not in page
    # Work goes on, nothing is billable before the case is resolved.
    services.reply(agent, case.pk, "Working on it.", status=Status.IN_PROGRESS)
    assert not Charge.objects.exists()

    resolve(agent, case)
    charge = Charge.objects.get()
    assert (charge.fee, charge.amount, charge.currency) == (fee, Decimal(50000), "KRW")
    assert status_of(charge) == ChargeStatus.TO_BILL
    assert audit_of(charge)[0]["amount"] == "50000"

    [billed] = billing.mark_billed(manager, [charge.pk], invoice_reference="INV-2026-031")
    assert status_of(billed) == ChargeStatus.BILLED
    charge.refresh_from_db()
    assert (charge.invoice_reference, charge.billed_by) == ("INV-2026-031", manager)
    assert audit_of(charge)[-1]["invoice_reference"] == ["", "INV-2026-031"]
    client.force_login(agent)
    agent_page = client.get(reverse("support:case-detail", args=[case.pk])).content.decode()
    assert "INV-2026-031" in agent_page and "agreed" in agent_page


def test_the_customer_declines_and_nothing_is_charged(client, agent, opened):
    case, key = opened
    fee = propose(agent, case)
    answer(client, case, key, fee, "decline")
    fee.refresh_from_db()
    assert fee.status == FeeStatus.DECLINED and fee.answered_at == START
    resolve(agent, case)
    assert not Charge.objects.exists()
    assert public_kinds(case) == ["fee_proposed", "fee_declined"]
    assert audit_of(fee)[-1]["status"] == ["proposed", "declined"]


def test_a_fee_agreed_after_resolution_is_charged_at_once(client, agent, opened):
    case, key = opened
    fee = propose(agent, case)
    resolve(agent, case)
    assert not Charge.objects.exists()
    answer(client, case, key, fee)
    assert Charge.objects.get().fee == fee


def test_the_customer_answers_through_the_lookup_grant_too(client, agent, opened):
    case, _key = opened
    fee = propose(agent, case)
    client.post(
        reverse("portal:index"),
        {"tracking_number": case.tracking_number, "email": case.requester_email},
    )
    url = reverse("portal:case-fee", args=[case.tracking_number, fee.pk])
    assert client.post(url, {"answer": "agree"}).status_code == 302
    assert SupportFee.objects.get().status == FeeStatus.AGREED


# Reopening.


def test_a_reopened_case_puts_its_charge_back_to_waiting_until_resolved_again(
    client, agent, manager, opened
):
    case, key = opened
    fee = propose(agent, case)
    answer(client, case, key, fee)
    resolve(agent, case)
    charge = Charge.objects.get()
    services.set_status(agent, case.pk, Status.OPEN)
    assert status_of(charge) == ChargeStatus.WAITING
    with pytest.raises(Conflict):
        billing.mark_billed(manager, [charge.pk], invoice_reference="INV-1")
    resolve(agent, case)
    assert status_of(charge) == ChargeStatus.TO_BILL
    assert Charge.objects.count() == 1
    # The customer's reply reopens a resolved case as well.
    intake.customer_reply(case, body="It happens again.", via=Case.Channel.WEB)
    assert status_of(charge) == ChargeStatus.WAITING
    services.reply(agent, case.pk, "Fixed for good.", status=Status.RESOLVED)
    assert status_of(charge) == ChargeStatus.TO_BILL


def test_a_billed_charge_stays_billed_when_the_case_is_reopened(client, agent, manager, opened):
    case, key = opened
    fee = propose(agent, case)
    answer(client, case, key, fee)
    resolve(agent, case)
    charge = Charge.objects.get()
    billing.mark_billed(manager, [charge.pk], invoice_reference="INV-7")
    services.set_status(agent, case.pk, Status.OPEN)
    assert status_of(charge) == ChargeStatus.BILLED
    with pytest.raises(Conflict):
        billing.waive_fee(agent, case.pk, fee.pk)
    resolve(agent, case)
    assert Charge.objects.count() == 1


# Waiving.


def test_an_agent_waives_a_proposed_fee_and_the_customer_sees_it(client, agent, opened):
    case, key = opened
    fee = propose(agent, case)
    billing.waive_fee(agent, case.pk, fee.pk, reason="Goodwill")
    fee.refresh_from_db()
    assert (fee.status, fee.waived_by, fee.waive_reason) == (FeeStatus.WAIVED, agent, "Goodwill")
    page = client.get(reverse("portal:status", args=[case.tracking_number, key])).content.decode()
    assert "The support fee of 50,000 KRW was waived." in page
    assert "I agree to this fee" not in page
    response = answer(client, case, key, fee)
    assert response.status_code == 409
    assert SupportFee.objects.get().status == FeeStatus.WAIVED


def test_waiving_a_charged_fee_waives_its_charge(client, agent, manager, opened):
    case, key = opened
    fee = propose(agent, case)
    answer(client, case, key, fee)
    resolve(agent, case)
    billing.waive_fee(agent, case.pk, fee.pk)
    charge = Charge.objects.get()
    assert status_of(charge) == ChargeStatus.WAIVED
    with pytest.raises(Conflict):
        billing.mark_billed(manager, [charge.pk], invoice_reference="INV-1")
    with pytest.raises(Conflict):
        billing.waive_fee(agent, case.pk, fee.pk)


# Bad input and the wrong people.


@pytest.mark.parametrize(
    ("amount", "currency", "description", "fields"),
    [
        ("-1", "KRW", "Visit", {"amount"}),
        ("0", "KRW", "Visit", {"amount"}),
        ("abc", "KRW", "Visit", {"amount"}),
        ("NaN", "KRW", "Visit", {"amount"}),
        ("100", "XYZ", "Visit", {"currency"}),
        ("10.5", "KRW", "Visit", {"amount"}),
        ("10.555", "USD", "Visit", {"amount"}),
        ("100", "KRW", "   ", {"description"}),
        ("100", "KRW", "x" * 2001, {"description"}),
    ],
)
def test_bad_fees_are_refused_and_nothing_changes(
    agent, opened, amount, currency, description, fields
):
    case, _key = opened
    mails = len(mail_about(case))
    with pytest.raises(ValidationFailed) as failure:
        propose(agent, case, amount, currency, description)
    assert set(failure.value.errors) == fields
    assert not SupportFee.objects.exists()
    assert len(mail_about(case)) == mails


def test_a_closed_case_takes_no_fee_and_others_may_not_propose(agent, sales, opened):
    case, _key = opened
    with pytest.raises(PermissionDenied):
        propose(sales, case)
    marketer = factories.user(Role.MARKETING, username="marketer")
    with pytest.raises(NotFound):
        propose(marketer, case)
    services.set_status(agent, case.pk, Status.CLOSED)
    with pytest.raises(Conflict):
        propose(agent, case)
    assert not SupportFee.objects.exists()


def test_agreeing_twice_is_refused_and_the_first_answer_stands(client, agent, opened, frozen):
    case, key = opened
    fee = propose(agent, case)
    answer(client, case, key, fee, "agree")
    frozen.shift(dt.timedelta(minutes=5))
    response = answer(client, case, key, fee, "decline")
    assert response.status_code == 409
    assert "You already answered this fee." in response.content.decode()
    fee.refresh_from_db()
    assert (fee.status, fee.answered_at) == (FeeStatus.AGREED, START)
    with pytest.raises(Conflict):
        billing.answer_fee(case, fee.pk, agree=True)
    assert public_kinds(case) == ["fee_proposed", "fee_agreed"]


def test_a_wrong_key_or_another_cases_fee_is_a_404_and_changes_nothing(
    client, agent, opened, open_web_case
):
    case, key = opened
    other, other_key = open_web_case(subject="Another", requester_email="lee@example.com")
    fee = propose(agent, other)
    assert answer(client, case, "not-the-key", fee).status_code == 404
    assert answer(client, case, key, fee).status_code == 404  # my key, their fee
    url = reverse("portal:case-fee", args=[other.tracking_number, fee.pk])
    assert client.post(url, {"answer": "agree"}).status_code == 404  # no grant in this browser
    assert answer(client, other, other_key, fee, "maybe").status_code == 422
    assert SupportFee.objects.get().status == FeeStatus.PROPOSED


def test_a_fee_on_a_covered_case_is_for_work_outside_the_contract(
    client, agent, sales, open_web_case
):
    account = factories.account(sales, name="Hanbit", email="info@hanbit.example")
    contract = contracts.create_contract(
        agent,
        {
            "account_id": account.pk,
            "name": "Maintenance",
            "start_date": "2026-01-01",
            "end_date": "2026-12-31",
        },
    )
    case, key = open_web_case(requester_email="kim@hanbit.example")
    fee = propose(agent, case, description="Data migration, not part of maintenance")
    assert fee.contract == contract
    notice = mail_about(case)[-1]
    assert contract.number in notice.text
    page = client.get(reverse("portal:status", args=[case.tracking_number, key])).content.decode()
    assert f"outside the coverage of your support contract {contract.number}" in page


def test_the_fee_mail_speaks_the_customers_language(agent, open_web_case):
    case, _key = open_web_case(
        subject="내보내기 오류", body="엑셀 내보내기가 안 됩니다.", language="ko"
    )
    propose(agent, case)
    notice = mail_about(case)[-1]
    assert (notice.to, case.language) == ([case.requester_email], "ko")
    assert "고객지원팀 드림" in notice.text and "50,000 KRW" in notice.text


# Billing.


def charged(client, agent, open_web_case, n=1, **overrides):
    """``n`` resolved cases with an agreed fee each; their charges."""
    result = []
    for index in range(n):
        case, key = open_web_case(subject=f"Case {index}", **overrides)
        fee = propose(agent, case, amount=str(10000 * (index + 1)))
        answer(client, case, key, fee)
        resolve(agent, case)
        result.append(Charge.objects.get(fee=fee))
    return result


def test_mark_billed_takes_all_of_a_batch_or_none(client, agent, manager, open_web_case):
    first, second = charged(client, agent, open_web_case, 2)
    services.set_status(agent, second.case_id, Status.OPEN)
    with pytest.raises(Conflict) as failure:
        billing.mark_billed(manager, [first.pk, second.pk], invoice_reference="INV-1")
    assert second.case.tracking_number in failure.value.detail
    assert not Charge.objects.filter(billed_at__isnull=False).exists()
    with pytest.raises(ValidationFailed) as failure:
        billing.mark_billed(manager, [first.pk, 999_999], invoice_reference=" ")
    assert set(failure.value.errors) == {"invoice_reference"}
    with pytest.raises(ValidationFailed) as failure:
        billing.mark_billed(manager, [first.pk, 999_999], invoice_reference="INV-1")
    assert set(failure.value.errors) == {"charge_ids"}
    with pytest.raises(PermissionDenied):
        billing.mark_billed(agent, [first.pk], invoice_reference="INV-1")
    billing.mark_billed(manager, [first.pk], invoice_reference="INV-1")
    assert status_of(first) == ChargeStatus.BILLED


def test_two_people_marking_the_same_charge_billed_at_once_bill_it_once(transactional_db, team):
    agent = factories.user(Role.SUPPORT, username="agent2", first_name="Minji", team=team)
    one = factories.user(Role.MANAGER, username="finance1")
    two = factories.user(Role.MANAGER, username="finance2")
    case, _key = intake.open_case(
        channel="web", subject="Export fails", body="Since today.", requester_email="a@b.example"
    )
    fee = propose(agent, case)
    billing.answer_fee(case, fee.pk, agree=True)
    resolve(agent, case)
    charge = Charge.objects.get()
    start = threading.Barrier(2, timeout=30)

    def bill_as(user, reference):
        def run():
            actor = User.objects.get(pk=user.pk)
            start.wait()
            return billing.mark_billed(actor, [charge.pk], invoice_reference=reference)

        return run

    outcomes = OwnConnections().run(bill_as(one, "INV-A"), bill_as(two, "INV-B"))
    winners = [o for o in outcomes if isinstance(o, list)]
    losers = [o for o in outcomes if isinstance(o, Conflict)]
    assert (len(winners), len(losers)) == (1, 1), outcomes
    charge.refresh_from_db()
    assert charge.invoice_reference == winners[0][0].invoice_reference
    billed = CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.CHARGE, data__what="billed")
    assert billed.count() == 1


def test_the_billing_page_filters_exports_and_bills_in_bulk(
    client, agent, manager, open_web_case, frozen
):
    first, second = charged(client, agent, open_web_case, 2)
    frozen.move_to(dt.datetime(2026, 4, 2, 3, 0, tzinfo=dt.UTC), tick=False)
    [april] = charged(client, agent, open_web_case, 1, requester_email="lee@example.com")
    client.force_login(manager)
    url = reverse("support:billing")
    page = client.get(url).content.decode()
    assert all(f'value="{c.pk}"' in page for c in (first, second, april))
    march = client.get(url, {"month": "2026-03"}).content.decode()
    assert f'value="{april.pk}"' not in march and f'value="{first.pk}"' in march
    assert client.get(url, {"month": "March"}).status_code == 200  # shown with an error

    export = client.get(url, {"month": "2026-03", "format": "csv"})
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert export["Content-Type"].startswith("text/csv") and len(lines) == 3
    assert first.case.tracking_number in lines[1] + lines[2]

    done = client.post(
        reverse("support:billing-mark"),
        {"charges": [first.pk, second.pk], "invoice_reference": "INV-03", "back": "month=2026-03"},
    )
    assert done.status_code == 302
    assert Charge.objects.filter(invoice_reference="INV-03").count() == 2
    again = client.post(
        reverse("support:billing-mark"), {"charges": [first.pk], "invoice_reference": "INV-X"}
    )
    assert again.status_code == 409
    empty = client.post(reverse("support:billing-mark"), {"invoice_reference": "INV-X"})
    assert empty.status_code == 422
    billed = client.get(url, {"status": "billed"}).content.decode()
    assert "INV-03" in billed

    client.force_login(agent)
    assert client.get(url).status_code == 200  # support sees the list
    refused = client.post(
        reverse("support:billing-mark"), {"charges": [april.pk], "invoice_reference": "INV-4"}
    )
    assert refused.status_code == 403
    client.force_login(factories.user(Role.SALES, username="seller"))
    assert client.get(url).status_code == 403


def test_the_case_page_proposes_and_waives_fees(client, agent, opened):
    case, _key = opened
    client.force_login(agent)
    url = reverse("support:case-fee", args=[case.pk])
    bad = client.post(url, {"amount": "-3", "currency": "KRW", "description": "Visit"})
    assert bad.status_code == 422
    good = client.post(url, {"amount": "30000", "currency": "KRW", "description": "Visit"})
    assert good.status_code == 302
    fee = SupportFee.objects.get()
    page = client.get(reverse("support:case-detail", args=[case.pk])).content.decode()
    assert "30,000 KRW" in page and "waiting for the customer" in page
    waive = reverse("support:case-fee-waive", args=[case.pk, fee.pk])
    assert client.post(waive, {"reason": "Goodwill"}).status_code == 302
    assert client.post(waive, {"reason": "again"}).status_code == 409
    assert SupportFee.objects.get().status == FeeStatus.WAIVED


# The API.


def test_fees_and_charges_through_the_api(client, agent, manager, opened):
    case, key = opened
    api = token_client(agent)
    created = api.post(
        f"cases/{case.pk}/fees", {"amount": "25000", "currency": "KRW", "description": "Visit"}
    )
    assert created.status_code == 201, created.content
    row = created.json()
    assert (row["status"], row["amount"], row["charge_id"]) == ("proposed", "25000", None)
    assert_problem(
        api.post(f"cases/{case.pk}/fees", {"amount": "-1", "currency": "KRW", "description": "x"}),
        422,
        "amount",
    )
    assert_problem(
        api.post(f"cases/{case.pk}/fees", {"amount": "1", "currency": "ABC", "description": "x"}),
        422,
        "currency",
    )
    answer(client, case, key, SupportFee.objects.get(pk=row["id"]))
    resolve(agent, case)
    [listed] = api.get(f"cases/{case.pk}/fees").json()["items"]
    assert (listed["status"], listed["charge_status"]) == ("agreed", "to_bill")

    finance = token_client(manager)
    charges = finance.get("support-charges/", status="to_bill", month="2026-03").json()["items"]
    assert [(c["tracking_number"], c["amount"]) for c in charges] == [
        (case.tracking_number, "25000")
    ]
    assert_problem(finance.get("support-charges/", month="2026-13"), 422, "month")
    assert_problem(
        api.post(
            "support-charges/bill", {"charge_ids": [listed["charge_id"]], "invoice_reference": "I"}
        ),
        403,
    )
    billed = finance.post(
        "support-charges/bill", {"charge_ids": [listed["charge_id"]], "invoice_reference": "INV-9"}
    )
    assert billed.json()["items"][0]["status"] == "billed"
    assert_problem(
        finance.post(
            "support-charges/bill",
            {"charge_ids": [listed["charge_id"]], "invoice_reference": "INV-10"},
        ),
        409,
    )
    assert_problem(api.post(f"cases/{case.pk}/fees/{row['id']}/waive", {}), 409)
    assert_problem(
        token_client(factories.user(Role.SALES, username="s2")).get("support-charges/"), 403
    )
