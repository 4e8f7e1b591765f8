"""The agent side of the support desk: claim, hand-off, status, triage, replies, merge, split.

Cases are opened through the intake as the web form opens them (``open_web_case``); with no
assignment rules they wait in the general queue. E-mail to the customer is checked as the
``OutboundMessage`` rows the services queue (the mail layer sends them after commit).
"""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType

from trellis.core.errors import Conflict, NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent, Role, User
from trellis.mail.models import OutboundMessage
from trellis.support import contracts, intake, queries, services
from trellis.support.models import Case, CaseAttachment, CaseEvent, Feature

from .. import factories
from ..concurrency import OwnConnections
from .conftest import CUSTOMER

pytestmark = pytest.mark.django_db

Status = Case.Status
Kind = Case.Kind
EventKind = CaseEvent.Kind


@pytest.fixture
def colleague(db, team):
    return factories.user(Role.SUPPORT, username="colleague", first_name="Jisoo", team=team)


@pytest.fixture
def marketer(db):
    """Marketing has no right on cases at all: every case is hidden from them."""
    return factories.user(Role.MARKETING, username="marketer")


@pytest.fixture
def new_case(open_web_case) -> Callable[..., Case]:
    def make(**overrides) -> Case:
        case, _key = open_web_case(**overrides)
        return Case.objects.get(pk=case.pk)

    return make


def timeline(case: Case) -> list[tuple[str, bool]]:
    return [(e.kind, e.public) for e in CaseEvent.objects.filter(case=case).order_by("at", "id")]


def mail_to_customer(case: Case) -> list[OutboundMessage]:
    content_type = ContentType.objects.get_for_model(Case)
    return list(
        OutboundMessage.objects.filter(content_type=content_type, object_id=case.pk).order_by("id")
    )


def case_audit(case: Case) -> list[dict]:
    content_type = ContentType.objects.get_for_model(Case)
    return list(
        AuditEvent.objects.filter(content_type=content_type, object_id=case.pk)
        .order_by("id")
        .values_list("changes", flat=True)
    )


def state(case: Case) -> dict[str, Any]:
    """Everything an action could change about a case, to compare before and after a refusal."""
    row = Case.objects.filter(pk=case.pk).values().get()
    return {
        "case": row,
        "events": list(CaseEvent.objects.filter(case=case).order_by("id").values()),
        "mail": len(mail_to_customer(case)),
        "audit": len(case_audit(case)),
        "features": list(Feature.objects.values()),
    }


# Claiming from the queue


def test_a_claim_makes_the_agent_the_one_owner_and_tells_the_customer_it_is_assigned(
    agent, new_case
):
    case = new_case()
    assert (case.owner_id, case.team_id, case.status) == (None, None, Status.NEW)
    before = timeline(case)

    claimed = services.claim(agent, case.pk)

    case.refresh_from_db()
    assert (case.owner_id, case.team_id, case.status, case.version) == (
        agent.pk,
        agent.team_id,
        Status.OPEN,
        2,
    )
    assert claimed.version == case.version
    assert timeline(case) == [*before, (EventKind.ASSIGNED, False), (EventKind.STATUS, True)]
    status_event = CaseEvent.objects.get(case=case, kind=EventKind.STATUS)
    # The customer reads "assigned to the support team": no agent is named on the public event.
    assert status_event.data == {"from": "new", "to": "open"}
    assert status_event.author == ""
    assert case_audit(case)[-1] == {
        "owner": [None, agent.pk],
        "team": [None, agent.team_id],
        "status": ["new", "open"],
    }


def test_a_case_claimed_by_someone_else_is_a_conflict_naming_them(agent, colleague, new_case):
    case = new_case()
    services.claim(colleague, case.pk)
    before = state(case)

    with pytest.raises(Conflict) as conflict:
        services.claim(agent, case.pk)

    assert str(colleague) in conflict.value.detail
    assert state(case) == before


def test_claiming_ones_own_case_again_changes_nothing(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    before = state(case)
    assert services.claim(agent, case.pk).owner_id == agent.pk
    assert state(case) == before


def test_a_closed_case_cannot_be_claimed(agent, manager, new_case):
    case = new_case()
    services.set_status(manager, case.pk, Status.CLOSED)
    Case.objects.filter(pk=case.pk).update(owner=None)
    before = state(case)
    with pytest.raises(Conflict):
        services.claim(agent, case.pk)
    assert state(case) == before


def test_two_agents_claiming_at_once_leave_exactly_one_owner(transactional_db):
    team = factories.TeamFactory(name="Support")
    first = factories.user(Role.SUPPORT, username="first", team=team)
    second = factories.user(Role.SUPPORT, username="second", team=team)
    case, _key = intake.open_case(
        channel="web", subject="Export fails", body="Since today.", requester_email=CUSTOMER
    )
    start = threading.Barrier(2, timeout=30)

    def claim_as(user: User) -> Callable[[], Any]:
        def run():
            actor = User.objects.get(pk=user.pk)
            start.wait()
            return services.claim(actor, case.pk)

        return run

    for _round in range(3):
        Case.objects.filter(pk=case.pk).update(owner=None, status=Status.NEW)
        outcomes = OwnConnections().run(claim_as(first), claim_as(second))

        winners = [o for o in outcomes if isinstance(o, Case)]
        losers = [o for o in outcomes if isinstance(o, Conflict)]
        assert (len(winners), len(losers)) == (1, 1), outcomes
        [winner], [loser] = winners, losers
        assert str(winner.owner) in loser.detail
        stored = Case.objects.get(pk=case.pk)
        assert stored.owner_id == winner.owner_id
        claims = CaseEvent.objects.filter(case=case, kind=EventKind.ASSIGNED, data__via="claim")
        assert claims.count() == _round + 1


# Handing over


def test_a_hand_off_to_an_expert_is_internal_and_sends_the_customer_nothing(
    agent, colleague, new_case
):
    case = new_case()
    services.claim(agent, case.pk)
    mail_before = len(mail_to_customer(case))
    public_before = [e for e in timeline(case) if e[1]]

    services.assign(agent, case.pk, user_id=colleague.pk, note="Knows the Excel export.", version=2)

    case.refresh_from_db()
    assert (case.owner_id, case.team_id, case.status, case.version) == (
        colleague.pk,
        colleague.team_id,
        Status.OPEN,
        3,
    )
    hand_off = CaseEvent.objects.filter(case=case, kind=EventKind.ASSIGNED).latest("id")
    assert (hand_off.public, hand_off.body, hand_off.actor_id) == (
        False,
        "Knows the Excel export.",
        agent.pk,
    )
    assert hand_off.data["owner"] == colleague.pk
    assert hand_off.data["previous_owner"] == agent.pk
    assert [e for e in timeline(case) if e[1]] == public_before
    assert len(mail_to_customer(case)) == mail_before
    assert case_audit(case)[-1] == {"owner": [agent.pk, colleague.pk]}


def test_a_hand_off_to_a_team_puts_the_case_in_that_teams_queue(agent, new_case):
    specialists = factories.TeamFactory(name="Database specialists")
    expert = factories.user(Role.SUPPORT, username="expert", team=specialists)
    case = new_case()
    services.claim(agent, case.pk)

    services.assign(agent, case.pk, team_id=specialists.pk, note="Index corruption?")

    case.refresh_from_db()
    assert (case.owner_id, case.team_id) == (None, specialists.pk)
    assert [c.pk for c in queries.cases(expert, view="queue").items] == [case.pk]
    assert queries.cases(agent, view="queue").items == []
    services.claim(expert, case.pk)
    assert Case.objects.get(pk=case.pk).owner_id == expert.pk


def test_the_first_assignment_of_a_new_case_opens_it(manager, agent, new_case):
    case = new_case()
    services.assign(manager, case.pk, user_id=agent.pk)
    case.refresh_from_db()
    assert (case.owner_id, case.status) == (agent.pk, Status.OPEN)
    assert timeline(case)[-2:] == [(EventKind.ASSIGNED, False), (EventKind.STATUS, True)]


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({}, "user_id"),
        ({"user_id": 999_999}, "user_id"),
        ({"user_id": "sales"}, "user_id"),
        ({"user_id": "abc"}, "user_id"),
        ({"team_id": 999_999}, "team_id"),
        ({"user_id": "agent", "note": "x" * (services.MAX_NOTE + 1)}, "note"),
    ],
)
def test_a_bad_hand_off_changes_nothing(agent, sales, new_case, given, field):
    case = new_case()
    services.claim(agent, case.pk)
    named = {"agent": agent.pk, "sales": sales.pk}
    given = {key: named.get(value, value) for key, value in given.items()}
    before = state(case)
    with pytest.raises(ValidationFailed) as failure:
        services.assign(agent, case.pk, **given)
    assert list(failure.value.errors) == [field]
    assert state(case) == before


def test_a_hand_off_of_a_stale_version_is_refused_with_the_current_case(agent, colleague, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    before = state(case)
    with pytest.raises(StaleVersion) as stale:
        services.assign(agent, case.pk, user_id=colleague.pk, version=1)
    assert stale.value.current.version == 2
    assert state(case) == before


# Status


def test_status_changes_are_public_and_the_customer_is_told(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    mail_before = len(mail_to_customer(case))

    services.set_status(agent, case.pk, Status.IN_PROGRESS, version=2)
    services.set_status(agent, case.pk, Status.RESOLVED)
    resolved = Case.objects.get(pk=case.pk)
    assert resolved.resolved_at is not None
    services.set_status(agent, case.pk, Status.OPEN)
    reopened = Case.objects.get(pk=case.pk)
    assert (reopened.status, reopened.resolved_at, reopened.version) == (Status.OPEN, None, 5)

    moves = [
        (e.data["from"], e.data["to"], e.public)
        for e in CaseEvent.objects.filter(case=case, kind=EventKind.STATUS).order_by("id")
    ]
    assert moves[1:] == [
        ("open", "in_progress", True),
        ("in_progress", "resolved", True),
        ("resolved", "open", True),
    ]
    sent = mail_to_customer(case)[mail_before:]
    assert len(sent) == 3
    assert all(m.to == [CUSTOMER] for m in sent)
    assert case.tracking_number in sent[1].subject


def test_closing_keeps_the_resolution_time_and_sets_one_if_missing(agent, new_case):
    resolved_first = new_case()
    services.set_status(agent, resolved_first.pk, Status.RESOLVED)
    resolved_at = Case.objects.get(pk=resolved_first.pk).resolved_at
    services.set_status(agent, resolved_first.pk, Status.CLOSED)
    assert Case.objects.get(pk=resolved_first.pk).resolved_at == resolved_at

    closed_at_once = new_case()
    services.set_status(agent, closed_at_once.pk, Status.CLOSED)
    assert Case.objects.get(pk=closed_at_once.pk).resolved_at is not None


def test_the_same_status_again_changes_nothing(agent, new_case):
    case = new_case()
    before = state(case)
    services.set_status(agent, case.pk, Status.NEW)
    assert state(case) == before


@pytest.mark.parametrize(
    ("start", "status"),
    [
        (Status.NEW, "solved"),
        (Status.NEW, ""),
        (Status.NEW, None),
        (Status.OPEN, Status.NEW),
        (Status.RESOLVED, Status.IN_PROGRESS),
        (Status.CLOSED, Status.RESOLVED),
    ],
)
def test_an_unknown_status_or_a_move_that_is_not_allowed_changes_nothing(
    agent, new_case, start, status
):
    case = new_case()
    Case.objects.filter(pk=case.pk).update(status=start)
    before = state(case)
    with pytest.raises(ValidationFailed) as failure:
        services.set_status(agent, case.pk, status)
    assert list(failure.value.errors) == ["status"]
    assert state(case) == before


def test_a_status_change_of_a_stale_version_is_a_conflict(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    before = state(case)
    with pytest.raises(StaleVersion):
        services.set_status(agent, case.pk, Status.RESOLVED, version=1)
    assert state(case) == before


# Triage


def test_classes_other_than_feature_requests_are_internal(agent, new_case):
    case = new_case()
    mail_before = len(mail_to_customer(case))
    services.classify(agent, case.pk, Kind.DEFECT)
    case.refresh_from_db()
    assert (case.kind, case.feature_id) == (Kind.DEFECT, None)
    event = CaseEvent.objects.get(case=case, kind=EventKind.CLASSIFIED)
    assert (event.public, event.data["from"], event.data["to"]) == (False, "unclassified", "defect")
    assert len(mail_to_customer(case)) == mail_before
    assert [c.pk for c in queries.cases(agent, view="defects").items] == [case.pk]


def test_a_feature_request_leaves_the_defect_queue_for_the_feedback_list_and_the_customer_is_told(
    agent, new_case
):
    first = new_case(requester_email="kim@example.co.kr", requester_name="Kim")
    second = new_case(requester_email="lee@example.com", requester_name="Lee")
    services.classify(agent, first.pk, Kind.DEFECT)
    mail_before = len(mail_to_customer(first))

    services.classify(agent, first.pk, Kind.FEATURE_REQUEST, feature_title="  Dark   mode ")
    services.classify(agent, second.pk, Kind.FEATURE_REQUEST, feature_title="dark MODE")

    [feature] = Feature.objects.all()
    assert feature.title == "Dark mode"
    assert set(Case.objects.filter(feature=feature).values_list("pk", flat=True)) == {
        first.pk,
        second.pk,
    }
    assert queries.cases(agent, view="defects").items == []
    assert {c.pk for c in queries.cases(agent, view="features").items} == {first.pk, second.pk}
    logged = CaseEvent.objects.filter(case=first, kind=EventKind.CLASSIFIED).latest("id")
    assert (logged.public, logged.data["feature_title"]) == (True, "Dark mode")
    told = mail_to_customer(first)[mail_before:]
    assert len(told) == 1
    assert "feedback" in told[0].subject

    [summary] = queries.features(agent)
    assert (summary.feature, summary.case_count) == (feature, 2)
    assert sorted(c.email for c in summary.customers) == ["kim@example.co.kr", "lee@example.com"]


def test_a_feature_request_may_name_an_existing_feature_by_id(agent, new_case):
    feature = Feature.objects.create(title="SSO login")
    case = new_case()
    services.classify(agent, case.pk, Kind.FEATURE_REQUEST, feature_id=feature.pk)
    assert Case.objects.get(pk=case.pk).feature_id == feature.pk


def test_a_case_no_longer_a_feature_request_leaves_the_feature(agent, new_case):
    case = new_case()
    services.classify(agent, case.pk, Kind.FEATURE_REQUEST, feature_title="Dark mode")
    services.classify(agent, case.pk, Kind.QUESTION)
    case.refresh_from_db()
    assert (case.kind, case.feature_id) == (Kind.QUESTION, None)


@pytest.mark.parametrize(
    ("kind", "extra", "field"),
    [
        ("bug", {}, "kind"),
        (Kind.UNCLASSIFIED, {}, "kind"),
        (Kind.FEATURE_REQUEST, {}, "feature_title"),
        (Kind.FEATURE_REQUEST, {"feature_title": "   "}, "feature_title"),
        (Kind.FEATURE_REQUEST, {"feature_title": "x" * 201}, "feature_title"),
        (Kind.FEATURE_REQUEST, {"feature_id": 999_999}, "feature_id"),
    ],
)
def test_a_bad_classification_changes_nothing(agent, new_case, kind, extra, field):
    case = new_case()
    before = state(case)
    with pytest.raises(ValidationFailed) as failure:
        services.classify(agent, case.pk, kind, **extra)
    assert list(failure.value.errors) == [field]
    assert state(case) == before


# Replies and notes


def test_the_first_reply_is_public_mailed_and_timed_and_takes_an_unowned_case(agent, new_case):
    case = new_case()
    mail_before = len(mail_to_customer(case))

    event = services.reply(agent, case.pk, "  Could you send a screenshot?\n")

    case.refresh_from_db()
    assert (event.kind, event.public, event.body, event.author) == (
        EventKind.REPLY,
        True,
        "Could you send a screenshot?",
        agent.first_name,
    )
    assert (case.owner_id, case.status) == (agent.pk, Status.OPEN)
    assert case.first_response_at == event.at
    [sent] = mail_to_customer(case)[mail_before:]
    assert "Could you send a screenshot?" in sent.text
    assert agent.last_name not in sent.text
    assert CaseEvent.objects.get(pk=event.pk).outbound_id == sent.pk

    first_response = case.first_response_at
    services.reply(agent, case.pk, "Any news?")
    assert Case.objects.get(pk=case.pk).first_response_at == first_response


def test_a_reply_can_set_the_status_and_sends_one_mail(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    mail_before = len(mail_to_customer(case))

    event = services.reply(agent, case.pk, "Which version?", status=Status.WAITING_ON_CUSTOMER)

    case.refresh_from_db()
    assert case.status == Status.WAITING_ON_CUSTOMER
    assert timeline(case)[-2:] == [(EventKind.REPLY, True), (EventKind.STATUS, True)]
    [sent] = mail_to_customer(case)[mail_before:]
    assert sent.pk == CaseEvent.objects.get(pk=event.pk).outbound_id


def test_a_colleagues_reply_leaves_the_owner(agent, colleague, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    services.reply(colleague, case.pk, "Covering for Minji today.")
    assert Case.objects.get(pk=case.pk).owner_id == agent.pk


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ("", None, ["body"]),
        ("   \n ", None, ["body"]),
        (None, None, ["body"]),
        ("x" * (services.MAX_REPLY + 1), None, ["body"]),
        ("Fine", "done", ["status"]),
        ("", "done", ["status", "body"]),
    ],
)
def test_an_empty_or_bad_reply_changes_nothing(agent, new_case, body, status, fields):
    case = new_case()
    before = state(case)
    with pytest.raises(ValidationFailed) as failure:
        services.reply(agent, case.pk, body, status=status)
    assert sorted(failure.value.errors) == sorted(fields)
    assert state(case) == before


def test_a_reply_with_a_status_move_that_is_not_allowed_changes_nothing(agent, new_case):
    case = new_case()
    services.set_status(agent, case.pk, Status.RESOLVED)
    before = state(case)
    with pytest.raises(ValidationFailed):
        services.reply(agent, case.pk, "Still broken?", status=Status.IN_PROGRESS)
    assert state(case) == before


def test_a_note_is_internal_sends_nothing_and_keeps_the_version(agent, new_case):
    case = new_case()
    before = state(case)
    note = services.add_note(agent, case.pk, "Customer is on the old plan.")
    assert (note.kind, note.public, note.actor_id) == (EventKind.NOTE, False, agent.pk)
    after = state(case)
    assert after["case"]["version"] == before["case"]["version"]
    assert after["mail"] == before["mail"]
    with pytest.raises(ValidationFailed) as failure:
        services.add_note(agent, case.pk, " ")
    assert list(failure.value.errors) == ["body"]


# Phone calls


def test_a_logged_phone_call_opens_a_case_through_the_intake(agent):
    case = services.log_phone_call(
        agent,
        requester_email="Park@Example.com",
        requester_name="Park Jiwoo",
        subject="Cannot print invoices",
        body="Called at 10:05; the print button does nothing.",
    )
    case.refresh_from_db()
    assert (case.channel, case.requester_email, case.subject) == (
        Case.Channel.PHONE,
        "park@example.com",
        "Cannot print invoices",
    )
    assert case.tracking_number.startswith("CS-")
    call = CaseEvent.objects.get(case=case, kind=EventKind.PHONE_CALL)
    assert (call.public, call.actor_id) == (False, agent.pk)
    message = CaseEvent.objects.get(case=case, kind=EventKind.CUSTOMER_MESSAGE)
    assert message.body == "Called at 10:05; the print button does nothing."
    # The customer gets the acknowledgement with the tracking number and the status link.
    [ack] = mail_to_customer(case)
    assert case.tracking_number in ack.subject


def test_a_phone_call_from_a_known_contact_takes_their_address(agent, admin):
    account = factories.account(admin, name="Hanbit")
    contact = factories.contact(
        admin, name="Choi Yuna", email="yuna@hanbit.example", accounts=[account.pk]
    )
    case = services.log_phone_call(
        agent, requester_email="", subject="Login", body="Locked out.", contact_id=contact.pk
    )
    case.refresh_from_db()
    assert (case.requester_email, case.requester_name, case.contact_id, case.account_id) == (
        "yuna@hanbit.example",
        "Choi Yuna",
        contact.pk,
        account.pk,
    )


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"product_id": 999_999}, "product_id"),
        ({"contact_id": 999_999}, "contact_id"),
        ({"requester_email": "not an address"}, "requester_email"),
        ({"subject": "", "body": ""}, "subject"),
    ],
)
def test_a_bad_phone_call_opens_nothing(agent, given, field):
    values = {"requester_email": "park@example.com", "subject": "Printing", "body": "Help."}
    with pytest.raises(ValidationFailed) as failure:
        services.log_phone_call(agent, **{**values, **given})
    assert field in failure.value.errors
    assert not Case.objects.exists()


def test_only_those_who_may_create_cases_log_calls(sales):
    with pytest.raises(PermissionDenied):
        services.log_phone_call(sales, requester_email="a@b.example", subject="x", body="y")
    assert not Case.objects.exists()


# Merging


def attach(case: Case, event: CaseEvent, name: str = "log.txt") -> CaseAttachment:
    return CaseAttachment.objects.create(
        case=case, event=event, filename=name, content_type="text/plain", size=3, data=b"abc"
    )


def test_a_merge_keeps_both_histories_and_closes_the_duplicate(agent, new_case):
    target = new_case(subject="Export fails")
    source = new_case(subject="Export still fails")
    services.add_note(agent, source.pk, "Same as the other one.")
    source_message = CaseEvent.objects.get(case=source, kind=EventKind.CUSTOMER_MESSAGE)
    attach(source, source_message)
    source_events = timeline(source)
    target_events = timeline(target)

    merged = services.merge(agent, source.pk, target.pk)

    assert merged.pk == target.pk
    source.refresh_from_db()
    assert (source.status, source.merged_into_id) == (Status.CLOSED, target.pk)
    # The source keeps its own history, plus the note where it went.
    assert timeline(source) == [*source_events, (EventKind.MERGED, True)]
    copies = CaseEvent.objects.filter(case=target, data__merged_from=source.tracking_number)
    # The duplicate's own "received" and status entries would contradict the kept case's
    # status on the customer's page: they are copied for agents only.
    source_only = {EventKind.RECEIVED, EventKind.STATUS}
    assert sorted((e.kind, e.public) for e in copies) == sorted(
        (kind, public and kind not in source_only) for kind, public in source_events
    )
    assert len(timeline(target)) == len(target_events) + len(source_events) + 1
    copied_message = copies.get(kind=EventKind.CUSTOMER_MESSAGE)
    assert (copied_message.body, copied_message.at) == (source_message.body, source_message.at)
    assert [a.filename for a in copied_message.attachments.all()] == ["log.txt"]
    assert source_message.attachments.count() == 1
    marker = CaseEvent.objects.filter(case=target, kind=EventKind.MERGED).get(
        data__merged=source.tracking_number
    )
    assert marker.public


def test_mail_to_a_merged_cases_number_lands_in_the_target(agent, new_case, mail_in):
    target = new_case()
    source = new_case()
    services.merge(agent, source.pk, target.pk)

    landed = mail_in(f"Re: [{source.tracking_number}] Export", text="Any news?")

    assert landed.pk == target.pk
    assert CaseEvent.objects.filter(case=target, body="Any news?").exists()


def test_a_case_merged_into_the_source_before_follows_it_to_the_target(agent, new_case):
    target, source, earlier = new_case(), new_case(), new_case()
    services.merge(agent, earlier.pk, source.pk)
    services.merge(agent, source.pk, target.pk)
    assert Case.objects.get(pk=earlier.pk).merged_into_id == target.pk


def test_merge_refusals_change_nothing(agent, marketer, new_case):
    case = new_case()
    other_customer = new_case(requester_email="lee@example.com")
    merged_away = new_case()
    target = new_case()
    services.merge(agent, merged_away.pk, target.pk)
    before = [state(c) for c in (case, other_customer, merged_away, target)]

    with pytest.raises(ValidationFailed) as itself:
        services.merge(agent, case.pk, case.pk)
    with pytest.raises(ValidationFailed) as across:
        services.merge(agent, case.pk, other_customer.pk)
    with pytest.raises(ValidationFailed) as missing:
        services.merge(agent, case.pk, 999_999)
    with pytest.raises(ValidationFailed) as into_merged:
        services.merge(agent, case.pk, merged_away.pk)
    with pytest.raises(Conflict):
        services.merge(agent, merged_away.pk, case.pk)
    with pytest.raises(NotFound):
        services.merge(marketer, case.pk, target.pk)

    for failure in (itself, across, missing, into_merged):
        assert list(failure.value.errors) == ["target_id"]
    assert [state(c) for c in (case, other_customer, merged_away, target)] == before


def test_a_merged_case_takes_no_more_work(agent, new_case):
    source, target = new_case(), new_case()
    services.merge(agent, source.pk, target.pk)
    before = state(source)
    for action in (
        lambda: services.claim(agent, source.pk),
        lambda: services.set_status(agent, source.pk, Status.OPEN),
        lambda: services.reply(agent, source.pk, "Hello"),
        lambda: services.classify(agent, source.pk, Kind.DEFECT),
    ):
        with pytest.raises(Conflict) as conflict:
            action()
        assert target.tracking_number in conflict.value.detail
    assert state(source) == before


# Splitting


def test_a_split_moves_the_chosen_messages_to_a_new_case_for_the_same_customer(
    agent, new_case, mail_in
):
    case = new_case(subject="Export fails")
    services.claim(agent, case.pk)
    second = intake.customer_reply(case, body="Also: the PDF logo is blurry.", via="web")
    attach(case, second, "logo.png")
    first_message = CaseEvent.objects.filter(case=case, kind=EventKind.CUSTOMER_MESSAGE).first()

    new = services.split(agent, case.pk, [second.pk], subject="Blurry logo in PDF")

    new.refresh_from_db()
    assert new.tracking_number != case.tracking_number
    assert new.tracking_number.startswith("CS-")
    assert (new.split_from_id, new.requester_email, new.contact_id, new.owner_id) == (
        case.pk,
        case.requester_email,
        case.contact_id,
        agent.pk,
    )
    assert (new.subject, new.description, new.status) == (
        "Blurry logo in PDF",
        "Also: the PDF logo is blurry.",
        Status.OPEN,
    )
    assert new.access_key_hash and new.access_key_hash != case.access_key_hash
    second.refresh_from_db()
    assert second.case_id == new.pk
    assert CaseAttachment.objects.get(filename="logo.png").case_id == new.pk
    assert CaseEvent.objects.filter(pk=first_message.pk, case=case).exists()
    said_old = CaseEvent.objects.get(case=case, kind=EventKind.SPLIT)
    said_new = CaseEvent.objects.get(case=new, kind=EventKind.SPLIT)
    assert (said_old.public, said_old.data["into"]) == (True, new.tracking_number)
    assert (said_new.public, said_new.data["from_case"]) == (True, case.tracking_number)
    # The customer gets the new case's number and its own key.
    [ack] = mail_to_customer(new)
    assert new.tracking_number in ack.subject


def test_replies_to_a_moved_message_follow_it(agent, new_case, mail_in):
    first = mail_in("Export fails", text="The export fails.", message_id="one@example.co.kr")
    mail_in(
        f"Re: [{first.tracking_number}] Export fails",
        text="And the logo is blurry.",
        message_id="two@example.co.kr",
    )
    moved = CaseEvent.objects.get(case=first, body="And the logo is blurry.")
    new = services.split(agent, first.pk, [moved.pk], subject="Blurry logo")

    from trellis.mail import routing

    assert routing.record_for_message_ids(["two@example.co.kr"]) == new
    assert routing.record_for_message_ids(["one@example.co.kr"]) == first


@pytest.mark.parametrize(
    ("ids", "subject", "field"),
    [
        ([], "New", "event_ids"),
        (["received"], "New", "event_ids"),
        (["other"], "New", "event_ids"),
        ([999_999], "New", "event_ids"),
        (["abc"], "New", "event_ids"),
        (["message"], "  ", "subject"),
        (["message"], "x" * 301, "subject"),
    ],
)
def test_a_bad_split_changes_nothing(agent, new_case, ids, subject, field):
    case = new_case()
    other = new_case()
    named = {
        "message": CaseEvent.objects.get(case=case, kind=EventKind.CUSTOMER_MESSAGE).pk,
        "received": CaseEvent.objects.get(case=case, kind=EventKind.RECEIVED).pk,
        "other": CaseEvent.objects.get(case=other, kind=EventKind.CUSTOMER_MESSAGE).pk,
    }
    count = Case.objects.count()
    before = state(case)
    with pytest.raises(ValidationFailed) as failure:
        services.split(agent, case.pk, [named.get(i, i) for i in ids], subject=subject)
    assert list(failure.value.errors) == [field]
    assert state(case) == before
    assert Case.objects.count() == count


# Plain edits


def test_subject_and_priority_are_edited_with_a_version_check(agent, new_case):
    case = new_case()
    services.edit(agent, case.pk, {"subject": "Excel export fails", "priority": "high"}, version=1)
    case.refresh_from_db()
    assert (case.subject, case.priority, case.version) == ("Excel export fails", "high", 2)
    with pytest.raises(StaleVersion):
        services.edit(agent, case.pk, {"priority": "low"}, version=1)
    with pytest.raises(ValidationFailed) as failure:
        services.edit(agent, case.pk, {"status": "closed"}, version=2)
    assert failure.value.errors == {"status": ["Unknown field."]}


# Reads beside the writes


def test_queue_counts_for_the_navigation(agent, colleague, new_case):
    queued = new_case()
    mine = new_case()
    theirs = new_case()
    done = new_case()
    services.claim(agent, mine.pk)
    services.claim(colleague, theirs.pk)
    services.classify(agent, mine.pk, Kind.DEFECT)
    services.classify(colleague, theirs.pk, Kind.FEATURE_REQUEST, feature_title="Dark mode")
    services.set_status(agent, done.pk, Status.CLOSED)
    assert queued.owner_id is None

    assert queries.queue_counts(agent) == {
        "mine": 1,
        "queue": 1,
        "team": 2,
        "all": 3,
        "unclassified": 1,
        "defects": 1,
        "features": 1,
    }


def test_the_timeline_for_the_customer_leaves_internal_events_out(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    services.add_note(agent, case.pk, "Internal only.")
    services.reply(agent, case.pk, "Hello Kim.")
    message = CaseEvent.objects.get(case=case, kind=EventKind.CUSTOMER_MESSAGE)
    attach(case, message)
    CaseAttachment.objects.create(
        case=case,
        event=message,
        filename="agent-only.txt",
        content_type="text/plain",
        size=1,
        data=b"x",
        public=False,
    )

    everything = queries.timeline(case)
    public = queries.timeline(case, public_only=True)

    assert [e.kind for e in everything] == [
        EventKind.RECEIVED,
        EventKind.CUSTOMER_MESSAGE,
        EventKind.ASSIGNED,
        EventKind.STATUS,
        EventKind.NOTE,
        EventKind.REPLY,
    ]
    assert [e.kind for e in public] == [
        EventKind.RECEIVED,
        EventKind.CUSTOMER_MESSAGE,
        EventKind.STATUS,
        EventKind.REPLY,
    ]
    shown = next(e for e in public if e.kind == EventKind.CUSTOMER_MESSAGE)
    assert [a.filename for a in shown.attachments.all()] == ["log.txt"]


def test_the_sidebar_shows_the_customers_dealings_as_far_as_the_agent_may_see(
    agent, admin, new_case
):
    account = factories.account(admin, name="Hanbit", email="info@hanbit.example")
    contract = contracts.create_contract(
        admin,
        {
            "account_id": account.pk,
            "name": "Maintenance 2026",
            "start_date": "2026-01-01",
            "end_date": "2099-12-31",
        },
    )
    deal = factories.opportunity(admin, account_id=account.pk)
    factories.opportunity(admin, account_id=account.pk, status="won")
    earlier = new_case(requester_email="kim@hanbit.example")
    case = new_case(requester_email="kim@hanbit.example")
    new_case(requester_email="someone.else@example.com")

    shown = queries.sidebar(agent, case)

    assert (shown.account, shown.contact.email) == (account, "kim@hanbit.example")
    assert shown.contracts == [contract]
    # Support agents may not see opportunities (they are sales' business).
    assert shown.opportunities == []
    assert shown.past_cases == [earlier]
    assert queries.sidebar(admin, case).opportunities == [deal]


def test_lists_are_bounded_pages(agent, new_case):
    for _ in range(3):
        new_case()
    first = queries.cases(agent, view="all", page_size=2)
    assert (len(first.items), first.has_next) == (2, True)
    assert len(queries.cases(agent, view="all", page=2, page_size=2).items) == 1
    with pytest.raises(ValidationFailed) as failure:
        queries.cases(agent, view="everything", status="x", kind="y")
    assert sorted(failure.value.errors) == ["kind", "status", "view"]


def test_a_reply_to_a_closed_case_is_refused_until_it_is_reopened(agent, new_case):
    case = new_case()
    services.claim(agent, case.pk)
    services.set_status(agent, case.pk, Status.CLOSED)
    replies = CaseEvent.objects.filter(case=case, kind=EventKind.REPLY)

    with pytest.raises(Conflict):
        services.reply(agent, case.pk, "One more thing.")
    assert not replies.exists()

    services.reply(agent, case.pk, "Reopening: one more thing.", status=Status.OPEN)
    case.refresh_from_db()
    assert case.status == Status.OPEN
    assert replies.count() == 1
