"""The raw store and processing, called directly: what becomes of each kind of message."""

import threading
from datetime import timedelta

import pytest
import time_machine
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from trellis.core import clock, sweep
from trellis.core.errors import Conflict, NotFound, ValidationFailed
from trellis.core.models import AuditEvent, RateCounter, Role, Team
from trellis.mail import inbound, parsing, routing
from trellis.mail.models import InboundMessage, MessageLink
from trellis.mail.parsing import Unparseable

from .. import factories
from ..concurrency import OwnConnections
from .conftest import build, desk_address, store

Status = InboundMessage.Status


def team_of(message: InboundMessage) -> Team | None:
    message.refresh_from_db()
    if message.content_type_id is None:
        return None
    assert message.content_type == ContentType.objects.get_for_model(Team)
    return Team.objects.get(pk=message.object_id)


# Storing.


def test_a_stored_message_is_kept_whole_with_a_quick_summary(db):
    raw = build(
        "=?utf-8?b?7JeR7IWAIOuCtOuztOuCtOq4sCDsmKTrpZg=?=",
        sender="Kim Minji <Minji.Kim@Example.co.kr>",
        message_id="<abc.123@example.co.kr>",
    )
    message = inbound.store(
        raw, envelope_from="bounce@example.co.kr", recipients=[desk_address()], peer="10.0.0.9"
    )
    message.refresh_from_db()
    assert bytes(message.raw) == raw
    assert (message.size, message.truncated, message.status) == (len(raw), False, Status.RECEIVED)
    assert message.message_id == "abc.123@example.co.kr"
    assert message.from_address == "minji.kim@example.co.kr"
    assert message.subject == "엑셀 내보내기 오류"
    assert (message.envelope_from, message.recipients, message.peer) == (
        "bounce@example.co.kr",
        [desk_address()],
        "10.0.0.9",
    )


def test_a_message_stored_outside_a_transaction_is_committed_when_store_returns(transactional_db):
    raw = build("Committed", message_id="<committed@example.co.kr>")

    message = store(raw)

    # Another connection sees it: the 250 answer may name it.
    [seen] = OwnConnections().run(
        lambda: InboundMessage.objects.filter(pk=message.pk).values_list("message_id", flat=True)[0]
    )
    assert seen == "committed@example.co.kr"


def test_a_message_is_stored_with_what_must_be_committed_with_it_or_not_at_all(transactional_db):
    def also(message):
        Team.objects.create(name=f"Read up to {message.message_id}")
        raise RuntimeError("the mailbox's mark could not be written")

    with pytest.raises(RuntimeError):
        inbound.store(
            build("Both or nothing"), envelope_from="", recipients=[desk_address()], also=also
        )

    assert not InboundMessage.objects.exists()
    assert not Team.objects.filter(name__startswith="Read up to").exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage without headers",
        b"Subject: =?x-unknown?q?broken?=\r\nFrom: <<<>>>\r\nMessage-ID: \x00<a\x00b>\r\n\r\n",
        b"Subject: " + "한글".encode("euc-kr") + b"\r\n\r\nbody",
    ],
)
def test_storing_never_fails_on_broken_headers(db, raw):
    message = store(raw)
    message.refresh_from_db()
    assert bytes(message.raw) == raw
    assert "\x00" not in message.message_id + message.subject + message.from_address


def test_an_oversized_message_is_refused_by_default(db, mail_settings):
    mail_settings(MAX_MESSAGE_BYTES=1000, OVERSIZE="refuse")
    with pytest.raises(inbound.MessageTooLarge):
        store(build(body="x" * 2000))
    assert not InboundMessage.objects.exists()


def test_an_oversized_message_is_cut_and_flagged_in_truncate_mode(db, mail_settings):
    mail_settings(MAX_MESSAGE_BYTES=1000, OVERSIZE="truncate")
    raw = build("Long", body="x" * 2000)
    message = store(raw)
    message.refresh_from_db()
    assert bytes(message.raw) == raw[:1000]
    assert (message.size, message.truncated, message.flags) == (len(raw), True, ["truncated"])
    assert message.subject == "Long"


# Processing: what becomes of a message.


def test_mail_to_a_mailbox_becomes_part_of_the_record_its_handler_returns(db, desk):
    raw = build("Export fails", message_id="<first@example.co.kr>")
    message = inbound.process(store(raw).pk)
    assert (message.status, message.reason, message.attempts) == (Status.PROCESSED, "", 1)
    assert message.processed_at is not None
    team = team_of(message)
    assert team.name == f"Export fails #{message.pk}"
    assert routing.record_for_message_ids(["first@example.co.kr"]) == team


def test_a_message_is_processed_once(db, desk):
    message = store(build())
    inbound.process(message.pk)
    again = inbound.process(message.pk)
    assert again.status == Status.PROCESSED
    assert desk.mails == [message.pk]
    assert again.attempts == 1


def test_the_same_message_id_twice_is_a_duplicate_linked_to_the_same_record(db, desk):
    raw = build(message_id="<twice@example.co.kr>")
    first = inbound.process(store(raw).pk)
    second = inbound.process(store(raw).pk)
    assert second.status == Status.DUPLICATE
    assert str(first.pk) in second.reason
    assert team_of(second) == team_of(first)
    assert desk.mails == [first.pk]
    assert Team.objects.filter(name__startswith="Export fails").count() == 1


def test_messages_without_a_message_id_are_never_duplicates(db, desk):
    raw = build().replace(b"Message-ID:", b"X-Old-ID:")
    first = inbound.process(store(raw).pk)
    second = inbound.process(store(raw).pk)
    assert (first.status, second.status) == (Status.PROCESSED, Status.PROCESSED)


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Precedence": "bulk"},
    ],
)
def test_automated_mail_is_ignored_and_never_reaches_a_handler(db, desk, headers):
    message = inbound.process(store(build("Out of office", headers=headers)).pk)
    assert message.status == Status.IGNORED
    assert message.reason
    assert desk.mails == []
    assert team_of(message) is None


def test_a_bounce_is_ignored(db, desk):
    raw = (
        b"From: MAILER-DAEMON@example.co.kr\r\nTo: desk@x\r\nSubject: Undelivered Mail\r\n"
        b"Message-ID: <bounce-1@example.co.kr>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; example.co.kr\r\n\r\nFinal-Recipient: rfc822; x@y\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    )
    message = inbound.process(store(raw, sender="").pk)
    assert message.status == Status.IGNORED
    assert message.reason.startswith("bounce")
    assert desk.mails == []


def test_a_sender_over_the_rate_limit_is_ignored(db, desk, mail_settings):
    mail_settings(SENDER_LIMIT=3, SENDER_WINDOW_SECONDS=600)
    statuses = [
        inbound.process(store(build(f"Loop {n}", sender="loop@example.com")).pk).status
        for n in range(5)
    ]
    assert statuses == [Status.PROCESSED] * 3 + [Status.IGNORED] * 2
    ignored = InboundMessage.objects.filter(status=Status.IGNORED).first()
    assert ignored.reason.startswith("Rate limit") and "loop@example.com" in ignored.reason
    # Someone else is not affected.
    assert inbound.process(store(build("Other")).pk).status == Status.PROCESSED
    assert RateCounter.objects.filter(key="mail-sender:loop@example.com").get().hits == 5


def test_the_rate_limit_window_passes(db, desk, mail_settings):
    mail_settings(SENDER_LIMIT=1, SENDER_WINDOW_SECONDS=600)
    with time_machine.travel(clock.now(), tick=False) as traveller:
        assert inbound.process(store(build("A", sender="s@example.com")).pk).status == "processed"
        assert inbound.process(store(build("B", sender="s@example.com")).pk).status == "ignored"
        traveller.shift(timedelta(seconds=601))
        assert inbound.process(store(build("C", sender="s@example.com")).pk).status == "processed"


def test_mail_for_an_address_without_a_mailbox_is_quarantined(db, desk):
    address = f"nobody@{routing.settings.MAIL_DOMAIN}"
    message = inbound.process(store(build(to=address), to=[address]).pk)
    assert message.status == Status.QUARANTINED
    assert message.reason == f"No mailbox for {address}."
    assert message.attempts == 1


def test_an_unparseable_message_is_quarantined_with_the_reason(db, desk, monkeypatch):
    def refuse(raw):
        raise Unparseable("no headers at all")

    monkeypatch.setattr(parsing, "parse", refuse)
    message = inbound.process(store(build()).pk)
    assert message.status == Status.QUARANTINED
    assert message.reason == "Unparseable: no headers at all"
    assert desk.mails == []


def test_a_crashing_parser_quarantines_instead_of_crashing(db, desk, monkeypatch):
    def crash(raw):
        raise RecursionError("deeply nested")

    monkeypatch.setattr(parsing, "parse", crash)
    message = inbound.process(store(build()).pk)
    assert message.status == Status.QUARANTINED
    assert "RecursionError: deeply nested" in message.reason


def test_a_failing_handler_leaves_nothing_half_written(db, desk):
    desk.fail_with = RuntimeError("the handler broke")
    message = inbound.process(store(build("Half")).pk)
    assert desk.mails == [message.pk]  # it ran, wrote its team, then failed
    assert message.status == Status.QUARANTINED
    assert message.reason == "The handler failed: RuntimeError: the handler broke"
    assert message.attempts == 1
    assert not Team.objects.filter(name__startswith="Half").exists()
    assert not MessageLink.objects.filter(message_id=message.message_id).exists()
    message.refresh_from_db()
    assert message.content_type_id is None


def test_a_handler_refusing_with_field_errors_is_quarantined_with_them(db, desk):
    desk.fail_with = ValidationFailed({"from": ["A sender address is needed."]})
    message = inbound.process(store(build()).pk)
    assert message.status == Status.QUARANTINED
    assert "from: A sender address is needed." in message.reason


# Routing.


def test_a_reply_to_a_records_reply_address_goes_to_its_reply_handler(db, desk):
    team = Team.objects.create(name="Seoul")
    address = routing.reply_address(team)
    message = inbound.process(store(build("Re: hello", to=address), to=[address]).pk)
    assert message.status == Status.PROCESSED
    assert team_of(message) == team
    assert desk.replies == [(team.pk, message.pk)]
    assert desk.mails == []


def test_a_forged_reply_address_reaches_no_record(db, desk):
    team = Team.objects.create(name="Seoul")
    forged = routing.reply_address(team).replace("+", "+9", 1)
    message = inbound.process(store(build(to=forged), to=[forged]).pk)
    assert message.status == Status.QUARANTINED
    assert desk.replies == []


@pytest.mark.parametrize("header", ["In-Reply-To", "References"])
def test_a_reply_finds_its_record_by_the_message_ids_it_answers(db, desk, header):
    team = Team.objects.create(name="Busan")
    routing.link_message("sent-1@trellis.test", team)
    ids = (
        "<sent-1@trellis.test>"
        if header == "In-Reply-To"
        else "<unknown@x> <sent-1@trellis.test> <other@y>"
    )
    raw = build("Re: your case", message_id="<reply-1@example.co.kr>", headers={header: ids})
    message = inbound.process(store(raw).pk)
    assert message.status == Status.PROCESSED
    assert team_of(message) == team
    assert desk.replies == [(team.pk, message.pk)]
    # The reply's own Message-ID now leads to the record too.
    assert routing.record_for_message_ids(["reply-1@example.co.kr"]) == team


def test_a_record_type_without_a_reply_handler_is_quarantined(db, desk):
    user = factories.user(Role.SALES, username="someone")
    routing.link_message("to-a-user@trellis.test", user)
    raw = build(headers={"In-Reply-To": "<to-a-user@trellis.test>"})
    message = inbound.process(store(raw).pk)
    assert message.status == Status.QUARANTINED
    assert message.reason == "No handler for replies to a user."


# Left behind.


def test_the_sweeper_processes_messages_left_received(db, desk):
    with time_machine.travel(clock.now(), tick=False) as traveller:
        message = store(build())
        sweep.sweep_once()
        message.refresh_from_db()
        assert message.status == Status.RECEIVED  # the listener's own threads come first
        traveller.shift(inbound.LEFT_BEHIND_AFTER + timedelta(seconds=1))
        assert sweep.sweep_once()["mail-inbound"] == 1
        message.refresh_from_db()
        assert message.status == Status.PROCESSED


def test_process_pending_takes_only_received_messages(db, desk):
    done = inbound.process(store(build("Done")).pk)
    waiting = [store(build(f"Waiting {n}")) for n in range(3)]
    assert inbound.process_pending(limit=2) == 2
    assert inbound.process_pending() == 1
    assert inbound.process_pending() == 0
    statuses = set(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == {Status.PROCESSED}
    assert sorted(desk.mails) == sorted([done.pk, *(m.pk for m in waiting)])


def test_processing_a_missing_message_is_not_found(db):
    with pytest.raises(NotFound):
        inbound.process(10**9)


@pytest.mark.django_db(transaction=True)
def test_many_processors_at_once_handle_a_message_once(desk):
    message = store(build())
    start = threading.Barrier(6)

    def processor():
        start.wait()
        try:
            inbound.process(message.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=processor) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    message.refresh_from_db()
    assert message.status == Status.PROCESSED
    assert desk.mails == [message.pk]
    assert Team.objects.filter(name__startswith="Export fails").count() == 1


@pytest.mark.django_db(transaction=True)
def test_copies_of_one_message_processed_at_once_make_one_record(desk):
    raw = build(message_id="<copies@example.co.kr>")
    copies = [store(raw) for _ in range(5)]
    start = threading.Barrier(len(copies))

    def processor(pk):
        start.wait()
        try:
            inbound.process(pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=processor, args=(m.pk,)) for m in copies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(InboundMessage.objects.values_list("status", flat=True))
    assert statuses == [Status.DUPLICATE] * 4 + [Status.PROCESSED]
    assert len(desk.mails) == 1
    assert len({m.object_id for m in InboundMessage.objects.all()}) == 1


# What admins do.


def quarantined(raw: bytes | None = None, address: str = "") -> InboundMessage:
    address = address or f"lost@{routing.settings.MAIL_DOMAIN}"
    message = inbound.process(store(raw or build(to=address), to=[address]).pk)
    assert message.status == Status.QUARANTINED
    return message


def audit_of(message: InboundMessage) -> list[AuditEvent]:
    content_type = ContentType.objects.get_for_model(InboundMessage)
    return list(AuditEvent.objects.filter(content_type=content_type, object_id=message.pk))


@pytest.mark.parametrize("operation", ["rerun", "dismiss", "file_into", "get"])
def test_only_admins_may_touch_the_quarantine_and_others_learn_nothing(
    db, desk, sales, manager, operation
):
    message = quarantined()
    arguments = {"rerun": (), "get": (), "dismiss": ("spam",), "file_into": ("TEAM-1",)}
    for user in (sales, manager):
        with pytest.raises(NotFound):
            getattr(inbound, operation)(user, message.pk, *arguments[operation])
        with pytest.raises(NotFound):
            getattr(inbound, operation)(user, 10**9, *arguments[operation])
    message.refresh_from_db()
    assert message.status == Status.QUARANTINED
    assert audit_of(message) == []
    with pytest.raises(NotFound):
        inbound.messages_for(sales)


def test_a_superuser_without_the_admin_role_is_a_mail_admin(db, desk):
    root = factories.user(Role.SALES, username="root", is_superuser=True)
    assert inbound.get(root, quarantined().pk)


def test_a_batch_of_mail_to_a_mailbox_goes_to_the_batch_form_registered_with_it(db, desk):
    address = f"batch-desk@{routing.settings.MAIL_DOMAIN}"
    taken: list[list[str]] = []

    def handle_one(message, parsed):
        return desk.handle_mail(message, parsed)

    def handle_together(pairs):
        taken.append([parsed.subject for _message, parsed in pairs])
        return [desk.handle_mail(message, parsed) for message, parsed in pairs]

    routing.register_mailbox(address, handle_one, many=handle_together)
    try:
        ids = [store(build(f"Question {n}"), to=[address]).pk for n in range(3)]
        inbound.process_batch(ids)
    finally:
        routing.unregister_mailbox(address)
    assert taken == [["Question 0", "Question 1", "Question 2"]]
    assert routing.mailbox_batch(handle_one) is None
    messages = InboundMessage.objects.filter(pk__in=ids)
    assert {m.status for m in messages} == {Status.PROCESSED}
    assert all(team_of(m) is not None for m in messages)


def test_rerun_processes_a_quarantined_message_again(db, desk, admin):
    address = f"new-desk@{routing.settings.MAIL_DOMAIN}"
    message = quarantined(address=address)
    routing.register_mailbox(address, desk.handle_mail)
    try:
        message = inbound.rerun(admin, message.pk)
    finally:
        routing.unregister_mailbox(address.lower())
    assert (message.status, message.attempts) == (Status.PROCESSED, 2)
    assert team_of(message) is not None
    [event] = audit_of(message)
    assert event.actor == admin
    assert event.changes == {"status": ["quarantined", "processed"]}


def test_rerun_after_the_parser_learned_to_read_the_message(db, desk, admin, monkeypatch):
    working_parse = parsing.parse

    def refuse(raw):
        raise Unparseable("cannot read it yet")

    monkeypatch.setattr(parsing, "parse", refuse)
    message = inbound.process(store(build("Later")).pk)
    assert message.status == Status.QUARANTINED
    monkeypatch.setattr(parsing, "parse", working_parse)
    message = inbound.rerun(admin, message.pk)
    assert message.status == Status.PROCESSED
    assert desk.mails == [message.pk]


def test_a_rerun_that_fails_again_stays_quarantined_with_one_more_attempt(db, desk, admin):
    message = quarantined()
    message = inbound.rerun(admin, message.pk)
    assert (message.status, message.attempts) == (Status.QUARANTINED, 2)


def test_only_quarantined_or_ignored_messages_are_rerun(db, desk, admin):
    processed = inbound.process(store(build()).pk)
    with pytest.raises(Conflict):
        inbound.rerun(admin, processed.pk)
    assert desk.mails == [processed.pk]


def test_rerun_is_not_stopped_by_the_rate_limit(db, desk, admin, mail_settings):
    mail_settings(SENDER_LIMIT=1)
    inbound.process(store(build("One", sender="busy@example.com")).pk)
    ignored = inbound.process(store(build("Two", sender="busy@example.com")).pk)
    assert ignored.status == Status.IGNORED
    assert inbound.rerun(admin, ignored.pk).status == Status.PROCESSED


def test_dismiss_keeps_the_message_as_ignored_with_the_reason(db, desk, admin):
    message = quarantined()
    message = inbound.dismiss(admin, message.pk, "  spam\r\nfrom a bot ")
    assert message.status == Status.IGNORED
    assert message.reason == f"Dismissed by {admin}: spam from a bot"
    assert InboundMessage.objects.filter(pk=message.pk).exists()
    [event] = audit_of(message)
    assert event.changes == {"status": ["quarantined", "ignored"]}


def test_dismiss_needs_a_reason_and_a_quarantined_message(db, desk, admin):
    message = quarantined()
    with pytest.raises(ValidationFailed) as refused:
        inbound.dismiss(admin, message.pk, " ")
    assert set(refused.value.errors) == {"reason"}
    processed = inbound.process(store(build()).pk)
    with pytest.raises(Conflict):
        inbound.dismiss(admin, processed.pk, "no")
    message.refresh_from_db()
    assert message.status == Status.QUARANTINED


def test_file_into_hands_the_message_to_the_records_reply_handler(db, desk, admin):
    team = Team.objects.create(name="Daegu")
    lost = f"lost@{routing.settings.MAIL_DOMAIN}"
    message = quarantined(build("Lost reply", message_id="<lost@example.co.kr>", to=lost))
    message = inbound.file_into(admin, message.pk, f" team-{team.pk} ")
    assert message.status == Status.FILED
    assert team_of(message) == team
    assert desk.replies == [(team.pk, message.pk)]
    assert routing.record_for_message_ids(["lost@example.co.kr"]) == team
    [event] = audit_of(message)
    assert event.changes == {"status": ["quarantined", "filed"]}
    assert event.summary == "Filed the message into Daegu"


def test_an_unparseable_message_can_be_filed_by_hand(db, desk, admin, monkeypatch):
    def refuse(raw):
        raise Unparseable("no headers")

    monkeypatch.setattr(parsing, "parse", refuse)
    team = Team.objects.create(name="Gwangju")
    message = inbound.process(store(b"\x00\x01 not a message at all").pk)
    assert message.status == Status.QUARANTINED
    assert inbound.file_into(admin, message.pk, f"TEAM-{team.pk}").status == Status.FILED
    assert desk.replies == [(team.pk, message.pk)]


def test_file_into_an_unknown_reference_changes_nothing(db, desk, admin):
    message = quarantined()
    for reference in ("", "CS-2026-000001", "TEAM-999999"):
        with pytest.raises(ValidationFailed) as refused:
            inbound.file_into(admin, message.pk, reference)
        assert set(refused.value.errors) == {"reference"}
    message.refresh_from_db()
    assert message.status == Status.QUARANTINED
    assert audit_of(message) == []


def test_file_into_a_record_that_refuses_the_message_changes_nothing(db, desk, admin):
    team = Team.objects.create(name="Ulsan")
    message = quarantined()
    desk.fail_with = RuntimeError("closed")
    with pytest.raises(Conflict) as refused:
        inbound.file_into(admin, message.pk, f"TEAM-{team.pk}")
    assert "closed" in str(refused.value.detail)
    message.refresh_from_db()
    assert message.status == Status.QUARANTINED
    assert not Team.objects.filter(name__startswith="Re ").exists()
    assert audit_of(message) == []


def test_a_failing_reference_resolver_is_skipped(db, desk, admin):
    def broken(reference):
        raise ValueError("bad")

    inbound.register_reference_resolver(broken)
    try:
        team = Team.objects.create(name="Jeju")
        assert inbound.resolve_reference(f"TEAM-{team.pk}") == team
        assert inbound.resolve_reference("nothing") is None
    finally:
        inbound.unregister_reference_resolver(broken)
