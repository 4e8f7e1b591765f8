"""Outgoing mail: queued, sent by a task to a real SMTP server, retried, never sent twice."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.contenttypes.models import ContentType

from trellis.core import clock, sweep
from trellis.core.errors import Conflict, NotFound, ValidationFailed
from trellis.core.models import AuditEvent, Team
from trellis.mail import inbound, outbound, routing
from trellis.mail.models import InboundMessage, MessageLink, OutboundMessage

from .conftest import build, store

Status = OutboundMessage.Status


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """``queue(...)`` as a service would call it, with the commit (and so the task) run."""

    def queue_and_commit(**kwargs) -> OutboundMessage:
        with django_capture_on_commit_callbacks(execute=True):
            message = outbound.queue(**kwargs)
        message.refresh_from_db()
        return message

    return queue_and_commit


def header_names(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    return [line.split(":", 1)[0].lower() for line in head.split("\r\n") if line[:1] not in " \t"]


def test_a_queued_message_is_sent_with_its_threading_headers(db, smtp_sink, queue):
    team = Team.objects.create(name="Seoul")
    message = queue(
        to=["Kim Minji <minji@example.co.kr>"],
        subject="Your case CS-2026-000001",
        text="We are on it.",
        html="<p>We are on it.</p>",
        record=team,
        in_reply_to="<question-1@example.co.kr>",
        references=["<start@example.co.kr>"],
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert (message.status, message.attempts) == (Status.SENT, 1)
    assert message.sent_at is not None
    received = smtp_sink.wait_for()
    email = received.message
    assert received.recipients == ["minji@example.co.kr"]
    assert email["Subject"] == "Your case CS-2026-000001"
    assert email["From"] == settings.DEFAULT_FROM_EMAIL
    assert email["Message-ID"] == f"<{message.message_id}>"
    assert message.message_id.endswith("@" + settings.MAIL_DOMAIN)
    assert email["Reply-To"] == routing.reply_address(team)
    assert email["In-Reply-To"] == "<question-1@example.co.kr>"
    assert email["References"] == "<start@example.co.kr> <question-1@example.co.kr>"
    assert email["Auto-Submitted"] == "auto-replied"
    assert email.get_body(("plain",)).get_content().strip() == "We are on it."
    assert email.get_body(("html",)).get_content().strip() == "<p>We are on it.</p>"
    assert (message.content_type, message.object_id) == (
        ContentType.objects.get_for_model(Team),
        team.pk,
    )


def test_a_reply_to_a_sent_message_finds_the_record(db, smtp_sink, queue, desk):
    team = Team.objects.create(name="Busan")
    message = queue(to="kim@example.co.kr", subject="Hello", text="Hi", record=team)
    sent = smtp_sink.wait_for().message
    assert MessageLink.objects.get(message_id=message.message_id).object_id == team.pk
    reply = build("Re: Hello", in_reply_to=sent["Message-ID"])
    processed = inbound.process(store(reply).pk)
    assert (processed.status, processed.object_id) == (InboundMessage.Status.PROCESSED, team.pk)
    assert desk.replies == [(team.pk, processed.pk)]


def test_header_injection_in_a_subject_never_makes_a_header(db, smtp_sink, queue):
    message = queue(
        to="kim@example.co.kr",
        subject="Hello\r\nBcc: victim@example.org\r\n\r\nInjected body",
        text="Real body",
    )
    assert message.subject == "Hello Bcc: victim@example.org Injected body"
    received = smtp_sink.wait_for()
    assert received.recipients == ["kim@example.co.kr"]
    names = header_names(received.raw)
    assert "bcc" not in names
    assert names.count("subject") == 1
    assert received.message["Subject"] == "Hello Bcc: victim@example.org Injected body"
    assert received.message.get_content().strip() == "Real body"


def test_a_long_subject_is_cut(db):
    message = outbound.queue(to="kim@example.co.kr", subject="가" * 400, text="x")
    assert message.subject == "가" * 300


@pytest.mark.parametrize(
    ("kwargs", "fields"),
    [
        ({"to": []}, {"to"}),
        ({"to": "not an address"}, {"to"}),
        ({"to": ["kim@example.co.kr", "kim@example.co.kr\r\nBcc: x@y.z"]}, {"to"}),
        ({"to": "kim@example.co.kr", "reply_to": "nobody"}, {"reply_to"}),
        ({"to": "kim@example.co.kr", "from_address": "a@b\nc"}, {"from_address"}),
        ({"to": "kim@example.co.kr", "headers": {"X-Tag": "a\r\nBcc: x@y.z"}}, {"headers"}),
        ({"to": "kim@example.co.kr", "headers": {"Bcc": "x@y.z"}}, {"headers"}),
        ({"to": "kim@example.co.kr", "headers": {"Bad Name:": "x"}}, {"headers"}),
        ({"to": ["x"], "reply_to": "y"}, {"to", "reply_to"}),
    ],
)
def test_bad_addresses_and_headers_are_refused_and_nothing_is_written(db, kwargs, fields):
    with pytest.raises(ValidationFailed) as refused:
        outbound.queue(subject="Hi", text="x", **kwargs)
    assert set(refused.value.errors) == fields
    assert not OutboundMessage.objects.exists()


def test_the_message_is_sent_only_after_the_callers_transaction_commits(
    db, smtp_sink, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        message = outbound.queue(to="kim@example.co.kr", subject="Later", text="x")
    assert smtp_sink.messages == []
    assert len(callbacks) == 1
    callbacks[0]()
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Later")
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_a_message_is_never_sent_twice(db, smtp_sink, queue):
    message = queue(to="kim@example.co.kr", subject="Once", text="x")
    outbound.send(message.pk)
    with time_machine.travel(clock.now() + timedelta(hours=1), tick=False):
        sweep.sweep_once()
        outbound.send(message.pk)
    smtp_sink.wait_for()
    assert len(smtp_sink.messages) == 1


def test_a_claimed_message_is_left_to_its_sender(db, smtp_sink):
    message = outbound.queue(to="kim@example.co.kr", subject="Claimed", text="x")
    assert outbound._claim(message.pk) is not None
    # Another task, or the sweep, finds it claimed and leaves it alone.
    assert outbound.send(message.pk).status == Status.QUEUED
    with time_machine.travel(clock.now() + outbound.LOST_TASK_AFTER, tick=False):
        assert outbound.send_due() == 0
    assert smtp_sink.messages == []
    # If that sender died, the lease runs out and the sweep sends it.
    with time_machine.travel(clock.now() + outbound.LEASE + timedelta(seconds=1), tick=False):
        assert outbound.send_due() == 1
    assert len(smtp_sink.messages) == 1


def test_a_failed_send_is_retried_after_a_pause(db, smtp_sink, queue):
    smtp_sink.stop()
    start = clock.now()
    with time_machine.travel(start, tick=False) as traveller:
        message = queue(to="kim@example.co.kr", subject="Retry me", text="x")
        assert (message.status, message.attempts) == (Status.QUEUED, 1)
        assert message.last_error.startswith("ConnectionRefusedError")
        assert message.next_attempt_at == start + timedelta(minutes=1)

        smtp_sink.start()
        assert outbound.send_due() == 0  # not due yet
        assert smtp_sink.messages == []
        traveller.shift(timedelta(minutes=1))
        assert sweep.sweep_once()["mail-outbound"] == 1
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Retry me")
    message.refresh_from_db()
    assert (message.status, message.attempts) == (Status.SENT, 2)


def test_pauses_grow_and_the_message_fails_after_the_last_attempt(
    db, smtp_sink, queue, mail_settings
):
    mail_settings(SEND_ATTEMPTS=4)
    smtp_sink.stop()
    start = clock.now()
    pauses = []
    with time_machine.travel(start, tick=False) as traveller:
        message = queue(to="kim@example.co.kr", subject="Doomed", text="x")
        while message.status == Status.QUEUED:
            pauses.append(message.next_attempt_at - clock.now())
            traveller.move_to(message.next_attempt_at)
            sweep.sweep_once()
            message.refresh_from_db()
    assert pauses == [timedelta(minutes=m) for m in (1, 5, 30)]
    assert (message.status, message.attempts, message.next_attempt_at) == (Status.FAILED, 4, None)
    assert message.last_error


def test_a_permanent_refusal_fails_at_once(db, smtp_sink, queue):
    smtp_sink.reject_with = "554 5.7.1 Message refused"
    message = queue(to="kim@example.co.kr", subject="Refused", text="x")
    assert (message.status, message.attempts) == (Status.FAILED, 1)
    assert "554" in message.last_error


def test_a_queued_message_whose_task_was_lost_is_sent_by_the_sweep(db, smtp_sink):
    start = clock.now()
    with time_machine.travel(start, tick=False) as traveller:
        message = outbound.queue(to="kim@example.co.kr", subject="Lost task", text="x")
        # No commit callback ran: no task was enqueued.
        sweep.sweep_once()
        assert smtp_sink.messages == []
        traveller.shift(outbound.LOST_TASK_AFTER)
        sweep.sweep_once()
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Lost task")
    message.refresh_from_db()
    assert message.status == Status.SENT


def test_only_admins_retry_and_others_learn_nothing(
    db, smtp_sink, queue, admin, sales, manager, mail_settings, django_capture_on_commit_callbacks
):
    mail_settings(SEND_ATTEMPTS=1)
    smtp_sink.stop()
    message = queue(to="kim@example.co.kr", subject="Again", text="x")
    assert message.status == Status.FAILED
    smtp_sink.start()
    with django_capture_on_commit_callbacks(execute=True):
        for user in (sales, manager):
            with pytest.raises(NotFound):
                outbound.retry(user, message.pk)
            with pytest.raises(NotFound):
                outbound.page_of(user, "failed")
        with pytest.raises(NotFound):
            outbound.retry(admin, 10**9)
    assert smtp_sink.messages == []
    message.refresh_from_db()
    assert message.status == Status.FAILED


def test_retry_sends_again_once_committed(
    db, smtp_sink, queue, admin, mail_settings, django_capture_on_commit_callbacks
):
    mail_settings(SEND_ATTEMPTS=1)
    smtp_sink.stop()
    message = queue(to="kim@example.co.kr", subject="Again", text="x")
    assert message.status == Status.FAILED
    smtp_sink.start()
    with django_capture_on_commit_callbacks(execute=True):
        outbound.retry(admin, message.pk)
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Again")
    message.refresh_from_db()
    assert (message.status, message.attempts) == (Status.SENT, 1)
    event = AuditEvent.objects.get(
        content_type=ContentType.objects.get_for_model(OutboundMessage), object_id=message.pk
    )
    assert (event.actor, event.changes) == (admin, {"status": ["failed", "queued"]})
    with pytest.raises(Conflict):
        outbound.retry(admin, message.pk)
