"""Deciding an approval from its e-mail: the signed Approve / Reject links and their page, and
replies through the real mail intake (stored and processed as the SMTP listener does, and once
through the listener itself)."""

import datetime as dt
import re
import smtplib
import threading

import pytest
from django.core import signing
from django.db import connection
from django.urls import reverse

from trellis.core.errors import NotFound
from trellis.core.models import User
from trellis.mail import inbound, parsing, routing
from trellis.mail.models import InboundMessage, OutboundMessage
from trellis.process import mailreplies
from trellis.process.approvals import emailed, services
from trellis.process.approvals.models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalRequest,
    Delegation,
)

from ...concurrency import OwnConnections
from ...mail import corpus
from .conftest import deal, define, fresh, kinds, step

Status = InboundMessage.Status
STRANGER = "mallory@elsewhere.example"
_LINK = re.compile(r"/approvals/link/([^/\s]+)/")


@pytest.fixture
def pending(people):
    """A deal of the seller's waiting for their manager, Bora."""
    define(people["admin"], steps=[step(timeout_hours=8)])
    opportunity = deal(people["seller"])
    return services.submit(people["seller"], "opportunity", opportunity.pk, comment="20% off")


def mail_to(user: User) -> list[OutboundMessage]:
    return [m for m in OutboundMessage.objects.order_by("id") if user.email in m.to]


def links(user: User) -> dict[str, str]:
    """The approve and reject link paths in the last approval e-mail to ``user``."""
    text = [m for m in mail_to(user) if _LINK.search(m.text)][-1].text
    approve, reject = _LINK.findall(text)
    return {
        "approve": reverse("approvals:link", args=[approve]),
        "reject": reverse("approvals:link", args=[reject]),
    }


def decide_path(path: str) -> str:
    return path + "decide/"


def decisions(request: ApprovalRequest) -> list[tuple[str, str, str]]:
    return [
        (e.kind, e.actor.username if e.actor else "", e.data.get("channel", ""))
        for e in ApprovalEvent.objects.filter(
            request=request, kind__in=["step_approved", "step_rejected"]
        ).select_related("actor")
    ]


def reply(
    request: ApprovalRequest,
    body: str,
    *,
    sender: str,
    to: str | None = None,
    raw: bytes | None = None,
    **kwargs,
) -> InboundMessage:
    address = to or routing.reply_address(request)
    raw = raw or corpus.message(
        subject="Re: 승인 요청", body=body, sender=sender, to=address, **kwargs
    )
    stored = inbound.store(raw, envelope_from=sender, recipients=[address], peer="10.0.0.7")
    return inbound.process(stored.pk)


# The e-mail.


def test_the_approver_is_asked_in_their_language_with_links_and_a_reply_address(pending, people):
    [sent] = mail_to(people["boss"])
    assert sent.reply_to == routing.reply_address(pending)
    assert sent.headers["Auto-Submitted"] == "auto-generated"
    assert f"#{pending.pk}" in sent.subject
    assert "80,000,000 KRW" in sent.text
    assert "20% off" in sent.text
    assert services.request_path(pending) in sent.text
    assert len(_LINK.findall(sent.text)) == 2
    assert "APPROVE" in sent.text and "반려" in sent.text
    # What the mail layer links to the request: a reply found by In-Reply-To reaches it.
    assert routing.record_for_message_ids([sent.message_id]) == pending


def test_the_approver_is_asked_in_their_language(people):
    people["boss"].language = "ko"
    people["boss"].save()
    define(people["admin"], steps=[step(timeout_hours=8)])
    services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    [sent] = mail_to(people["boss"])
    assert "기한: " in sent.text


def test_the_reminder_carries_the_links_too_and_they_decide(client, people, clock):
    define(people["admin"], steps=[step(timeout_hours=4, remind_before_hours=1)])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    first = links(people["boss"])
    clock.move_to(dt.datetime(2026, 3, 4, 3, 0, tzinfo=dt.UTC), tick=False)
    assert services.fire_due_timers() == 1
    reminder = mail_to(people["boss"])[-1]
    assert reminder.subject.startswith("Reminder:")
    assert reminder.reply_to == routing.reply_address(request)
    again = links(people["boss"])
    assert again != first and len(_LINK.findall(reminder.text)) == 2
    client.post(decide_path(again["approve"]), {"comment": ""})
    assert fresh(request).status == "approved"
    assert decisions(request) == [("step_approved", "boss", "link")]


# Links.


def test_approve_by_link_asks_first_and_records_the_approver(client, pending, people):
    path = links(people["boss"])["approve"]
    # Whoever is logged in, the link decides for the approver it was made for.
    client.force_login(people["finance"])

    page = client.get(path)
    assert page.status_code == 200
    assert page["Referrer-Policy"] == "same-origin"
    assert "no-store" in page["Cache-Control"]
    text = page.content.decode()
    assert "80,000,000 KRW" in text and "Manager" in text
    assert fresh(pending).status == "pending"

    done = client.post(decide_path(path), {"comment": "좋습니다"})
    assert done.status_code == 302
    assert fresh(pending).status == "approved"
    assert decisions(pending) == [("step_approved", "boss", "link")]
    assignment = ApprovalAssignment.objects.get(request=pending, user=people["boss"])
    assert (assignment.status, assignment.comment) == ("approved", "좋습니다")

    client.force_login(people["boss"])
    detail = client.get(reverse("approvals:request-detail", args=[pending.pk]))
    assert "by e-mail link" in detail.content.decode()


def test_reject_by_link_needs_a_comment(client, pending, people):
    path = links(people["boss"])["reject"]
    refused = client.post(decide_path(path), {"comment": "  "})
    assert refused.status_code == 422
    assert "Say why you reject it." in refused.content.decode()
    assert fresh(pending).status == "pending"

    client.post(decide_path(path), {"comment": "Margin too thin."})
    rejected = fresh(pending)
    assert rejected.status == "rejected"
    assert decisions(pending) == [("step_rejected", "boss", "link")]
    assert ApprovalAssignment.objects.get(request=pending).comment == "Margin too thin."


def test_a_used_link_says_who_decided_and_changes_nothing(client, pending, people):
    paths = links(people["boss"])
    client.post(decide_path(paths["approve"]), {"comment": ""})
    before = (kinds(pending), fresh(pending).version)

    again = client.post(decide_path(paths["approve"]), {"comment": ""})
    assert again.status_code == 409
    assert str(people["boss"]) in again.content.decode()
    other = client.post(decide_path(paths["reject"]), {"comment": "changed my mind"})
    assert other.status_code == 409
    page = client.get(paths["reject"])
    assert page.status_code == 200
    assert '<form method="post" action="/approvals/link/' not in page.content.decode()
    assert (kinds(pending), fresh(pending).version) == before


def test_a_link_of_a_step_decided_in_the_inbox_is_settled(client, pending, people):
    services.approve(people["boss"], pending.pk)
    answer = client.post(decide_path(links(people["boss"])["approve"]))
    assert answer.status_code == 409
    assert decisions(pending) == [("step_approved", "boss", "")]


@pytest.mark.parametrize(
    "change",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),
        lambda token: token.replace(token.split(":")[0], token.split(":")[0][::-1]),
        lambda token: "not-a-link",
    ],
)
def test_an_altered_link_is_refused(client, pending, people, change):
    token = _LINK.search(links(people["boss"])["approve"]).group(1)
    path = reverse("approvals:link", args=[change(token)])
    assert client.get(path).status_code == 404
    assert client.post(decide_path(path)).status_code == 404
    assert fresh(pending).status == "pending"


def test_a_link_is_bound_to_its_approver_and_step(client, pending, people):
    assignment = ApprovalAssignment.objects.get(request=pending)
    token = emailed.link_token(assignment, "approve")
    payload, signature = token.split(":")
    # Another approver's id under the same signature: the signature no longer fits.
    data = signing.b64_decode(payload.encode())
    changed = data.replace(
        f'"u":{people["boss"].pk}'.encode(), f'"u":{people["finance"].pk}'.encode()
    )
    assert changed != data
    altered = signing.b64_encode(changed).decode() + ":" + signature
    assert client.post(decide_path(reverse("approvals:link", args=[altered]))).status_code == 404
    # A genuine signature that names someone who is not this step's approver finds nothing.
    other = ApprovalAssignment(
        pk=assignment.pk, user=people["finance"], step_run=assignment.step_run
    )
    with pytest.raises(NotFound):
        emailed.open_link(emailed.link_token(other, "approve"))
    assert fresh(pending).status == "pending"


def test_a_link_expires_after_the_timeout_and_the_grace(client, pending, people, clock):
    path = links(people["boss"])["approve"]
    due = pending.steps.get().due_at
    clock.move_to(due + dt.timedelta(hours=23))
    assert client.get(path).status_code == 200
    clock.move_to(due + dt.timedelta(hours=24, minutes=1))
    gone = client.get(path)
    assert gone.status_code == 410
    assert client.post(decide_path(path)).status_code == 410
    assert fresh(pending).status == "pending"


def test_a_link_without_a_due_time_expires_after_the_setting(client, people, clock, settings):
    settings.TRELLIS = {**settings.TRELLIS, "APPROVALS": {"LINK_DAYS": 2}}
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    path = links(people["boss"])["approve"]
    clock.shift(dt.timedelta(days=2, minutes=1))
    assert client.get(path).status_code == 410
    assert fresh(request).status == "pending"


def test_the_delegates_link_works_for_the_delegate(client, people):
    Delegation.objects.create(
        user=people["boss"],
        delegate=people["director"],
        starts_at=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        ends_at=dt.datetime(2026, 3, 31, tzinfo=dt.UTC),
    )
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    assert not mail_to(people["boss"])
    client.post(decide_path(links(people["director"])["approve"]))
    assert fresh(request).status == "approved"
    event = ApprovalEvent.objects.get(request=request, kind="step_approved")
    assert (event.actor, event.on_behalf_of, event.data["channel"]) == (
        people["director"],
        people["boss"],
        "link",
    )


# Replies.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("APPROVE", (True, "")),
        ("approve.\nGood deal", (True, "Good deal")),
        ("\n  Approved!  \n\nok", (True, "ok")),
        ("승인", (True, "")),
        ("반려\n단가 재확인 바랍니다.", (False, "단가 재확인 바랍니다.")),
        ("Reject:", (False, "")),
        ("approve this? not sure", (None, "approve this? not sure")),
        ("", (None, "")),
    ],
)
def test_decision_words(text, expected):
    assert emailed.read_decision(text) == expected


def test_a_comment_that_looks_like_a_header_is_kept():
    text = "REJECT\nFrom: the customer's last mail\n보고서 작성: 다음 주\n> quoted"
    assert emailed.read_decision(parsing.strip_quoted(text)) == (
        False,
        "From: the customer's last mail\n보고서 작성: 다음 주",
    )


@pytest.mark.parametrize(
    "text",
    [
        "APPROVE\nfine\n\nOn Tue, 3 Mar 2026 at 10:00, Trellis <a@example.com> wrote:\n> x",
        "APPROVE\nfine\n\n2026년 3월 3일 (화) 오전 10:00, Trellis <a@example.com>님이 작성:\n> x",
        "APPROVE\nfine\n\n-----Original Message-----\nFrom: Trellis\nSent: today\n\nAsked",
        "APPROVE\nfine\n\nFrom: Trellis <noreply@example.com>\nSent: Tuesday\nSubject: x",
        "APPROVE\n> quoted line\nfine\n-- \nBora Kim\nSales director",
        "APPROVE\nfine\n\nOn Tue, Mar 3, 2026 at 10:00 AM Trellis <\na@example.com> wrote:\n\nx",
    ],
)
def test_quoted_text_is_not_part_of_the_comment(text):
    assert emailed.read_decision(parsing.strip_quoted(text)) == (True, "fine")


def test_reply_approve_decides_for_the_sender(pending, people):
    body = (
        "Approve\n\nFine by me.\n\n"
        "On Tue, 3 Mar 2026, Trellis <noreply@trellis.example> wrote:\n> Approve: https://x"
    )
    message = reply(pending, body, sender="Bora <BOSS@example.com>")
    assert message.status == Status.PROCESSED
    assert message.record == pending
    assert fresh(pending).status == "approved"
    assert decisions(pending) == [("step_approved", "boss", "mail")]
    assert ApprovalAssignment.objects.get(request=pending).comment == "Fine by me."


def test_reply_found_by_in_reply_to_reaches_the_request(pending, people):
    [sent] = mail_to(people["boss"])
    to = "desk@" + routing.reply_address(pending).split("@")[1]
    message = reply(
        pending, "승인", sender=people["boss"].email, to=to, in_reply_to=sent.message_id
    )
    assert message.record == pending
    assert fresh(pending).status == "approved"


def test_reply_reject_in_korean_with_a_comment(pending, people):
    reply(pending, "반려.\n단가를 다시 확인해 주세요.", sender=people["boss"].email)
    rejected = fresh(pending)
    assert rejected.status == "rejected"
    assert decisions(pending) == [("step_rejected", "boss", "mail")]
    assert ApprovalAssignment.objects.get(request=pending).comment == "단가를 다시 확인해 주세요."


def test_reply_reject_without_a_comment_is_answered_and_changes_nothing(pending, people):
    before = (kinds(pending), fresh(pending).version)
    message = reply(pending, "REJECT\n\n> quoted request", sender=people["boss"].email)
    assert message.status == Status.PROCESSED
    assert (kinds(pending), fresh(pending).version) == before
    answer = mail_to(people["boss"])[-1]
    assert answer.in_reply_to == message.message_id
    assert answer.headers["Auto-Submitted"] == "auto-replied"
    assert answer.reply_to == routing.reply_address(pending)
    assert f"#{pending.pk}" in answer.subject
    assert "Say why you reject it." in answer.text
    assert "REJECT (or 반려) on the first line" in answer.text


def test_any_other_reply_from_an_approver_is_a_comment(pending, people):
    reply(
        pending, "Can you send me the quote first?\n\n> Approve: ...", sender=people["boss"].email
    )
    assert fresh(pending).status == "pending"
    event = ApprovalEvent.objects.get(request=pending, kind="comment")
    assert (event.actor, event.comment, event.data["channel"]) == (
        people["boss"],
        "Can you send me the quote first?",
        "mail",
    )


def test_a_stranger_is_refused_kept_and_answered_once(pending, people, deliver, smtp_sink):
    before = (kinds(pending), fresh(pending).version)
    message = reply(pending, "APPROVE", sender=f"Mallory <{STRANGER}>")
    assert message.status == Status.QUARANTINED
    assert f"{STRANGER} is not an approver" in message.reason
    assert (kinds(pending), fresh(pending).version) == before

    with deliver():
        assert mailreplies.answer_refused() == 1
    answer = smtp_sink.wait_for(lambda m: m.recipients == [STRANGER]).message
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["In-Reply-To"] == f"<{message.message_id}>"
    assert "is not an approver" in answer.get_content()
    assert mailreplies.answer_refused() == 0
    assert OutboundMessage.objects.filter(to=[STRANGER]).count() == 1


def test_a_duplicate_delivery_decides_nothing_more(pending, people):
    address = routing.reply_address(pending)
    raw = corpus.message(subject="Re", body="APPROVE", sender=people["boss"].email, to=address)
    first = reply(pending, "", sender=people["boss"].email, raw=raw)
    again = reply(pending, "", sender=people["boss"].email, raw=raw)
    assert (first.status, again.status) == (Status.PROCESSED, Status.DUPLICATE)
    assert decisions(pending) == [("step_approved", "boss", "mail")]
    assert not OutboundMessage.objects.filter(in_reply_to=again.message_id).exists()


def test_two_approve_replies_decide_once_and_the_second_is_told(pending, people, deliver):
    reply(pending, "APPROVE", sender=people["boss"].email)
    second = reply(pending, "APPROVE\nagain", sender=people["boss"].email)
    assert decisions(pending) == [("step_approved", "boss", "mail")]
    # The request is finished: the second reply is kept aside and answered once.
    assert second.status == Status.QUARANTINED
    assert "Already decided by" in second.reason
    assert mailreplies.answer_refused() == 1
    answer = mail_to(people["boss"])[-1]
    assert answer.in_reply_to == second.message_id


def test_a_second_approve_on_a_running_step_is_answered_at_once(people):
    define(
        people["admin"],
        steps=[
            step(
                "Both",
                rule="all",
                approvers=[
                    {"kind": "manager"},
                    {"kind": "user", "user_id": people["finance"].pk},
                ],
            )
        ],
    )
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    reply(request, "approve", sender=people["boss"].email)
    second = reply(request, "approve", sender=people["boss"].email)
    assert second.status == Status.PROCESSED
    assert decisions(request) == [("step_approved", "boss", "mail")]
    assert fresh(request).status == "pending"
    answer = mail_to(people["boss"])[-1]
    assert answer.in_reply_to == second.message_id
    assert "Already decided by" in answer.text


def test_a_reply_to_a_finished_request_is_refused_and_answered(pending, people):
    services.recall(people["seller"], pending.pk)
    before = (kinds(pending), fresh(pending).version)
    message = reply(pending, "APPROVE", sender=people["boss"].email)
    assert message.status == Status.QUARANTINED
    assert "recalled" in message.reason
    assert (kinds(pending), fresh(pending).version) == before
    assert mailreplies.answer_refused() == 1
    assert "recalled" in mail_to(people["boss"])[-1].text


def test_an_admin_files_a_refused_reply_as_a_comment(pending, people):
    message = reply(pending, "Looks fine to me", sender=STRANGER)
    inbound.file_into(people["admin"], message.pk, f"approval {pending.pk}")
    event = ApprovalEvent.objects.get(request=pending, kind="comment")
    assert (event.actor, event.data["filed"], event.data["from"]) == (None, True, STRANGER)
    assert fresh(pending).status == "pending"


def test_approve_through_the_smtp_listener(transactional_db, intake_server, people):
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    address = routing.reply_address(request)
    raw = corpus.message(
        subject="Re", body="승인합니다\n확인했습니다.", sender=people["boss"].email, to=address
    )
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        assert client.sendmail(people["boss"].email, [address], raw) == {}
    assert intake_server.wait_until_idle()
    assert fresh(request).status == "approved"
    assert decisions(request) == [("step_approved", "boss", "mail")]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks between connections need PostgreSQL"
)
def test_a_link_used_twice_and_a_reply_at_once_decide_once(transactional_db, people):
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    token = _LINK.search(links(people["boss"])["approve"]).group(1)
    address = routing.reply_address(request)
    raw = corpus.message(subject="Re", body="APPROVE", sender=people["boss"].email, to=address)
    stored = inbound.store(raw, envelope_from=people["boss"].email, recipients=[address])
    start = threading.Barrier(3, timeout=30)

    def by_link():
        link = emailed.open_link(token)
        start.wait()
        return emailed.decide(link, "")

    def by_reply():
        start.wait()
        return inbound.process(stored.pk)

    outcomes = OwnConnections().run(by_link, by_link, by_reply)
    assert fresh(request).status == "approved"
    assert len(decisions(request)) == 1
    # Whichever came first decided; the others were told it was decided already: the link's
    # page, or the reply kept aside (the request was finished) or answered at once.
    link_refused = sum(isinstance(o, emailed.AlreadyDecided) for o in outcomes)
    message = InboundMessage.objects.get(pk=stored.pk)
    answered = OutboundMessage.objects.filter(in_reply_to=message.message_id).exists()
    reply_refused = message.status == Status.QUARANTINED or answered
    assert link_refused + reply_refused == 2, outcomes
