"""Replies to task e-mail, through the real mail intake: comments, completion words, and the
replies a task does not take (kept in the quarantine, and the sender told why)."""

import pytest
from django.conf import settings

from trellis.mail import inbound, routing
from trellis.mail.models import InboundMessage, OutboundMessage
from trellis.process import mailreplies, queries, services
from trellis.process.models import RefusedReply, Task, TaskAttachment, TaskEvent, TaskType

from ..mail import corpus
from .conftest import PARTNER, history, mail_to, new_task, reply

Status = InboundMessage.Status
STRANGER = "someone@elsewhere.example"


@pytest.fixture
def partner_task(people):
    return new_task(people["ana"], title="납기일 확인", external_email=PARTNER, language="ko")


def task_state(task: Task) -> tuple:
    task.refresh_from_db()
    return task.status, task.version, history(task)


@pytest.mark.parametrize(
    "text",
    ["done", "Done.", "COMPLETED!", "complete", "완료", "완료했습니다.", "끝", "\n\n  완료 ~\n더"],
)
def test_completion_words(text):
    assert mailreplies.is_completion(text)


@pytest.mark.parametrize(
    "text", ["", "done with the first part", "not done", "완료 예정입니다", "> done", "끝났나요?"]
)
def test_what_is_not_a_completion_word(text):
    assert not mailreplies.is_completion(text)


def test_a_reply_without_a_completion_word_is_a_comment(partner_task):
    message = reply(partner_task, body="내일 확인해서 알려 드리겠습니다.")
    assert message.status == Status.PROCESSED
    assert task_state(partner_task)[0] == "open"
    event = TaskEvent.objects.get(task=partner_task, kind="mail_reply")
    assert (event.body, event.public, event.external_email, event.inbound) == (
        "내일 확인해서 알려 드리겠습니다.",
        True,
        PARTNER,
        message,
    )
    assert event.data["subject"] == "Re: 업무"


def test_a_reply_found_by_its_in_reply_to_header_reaches_the_task(partner_task):
    [sent] = mail_to(PARTNER)
    message = reply(
        partner_task,
        to=settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"],
        in_reply_to=sent.message_id,
        body="Done",
    )
    assert message.record == partner_task
    assert task_state(partner_task)[0] == "done"


def test_a_user_who_may_work_on_the_task_may_reply_too(people):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, user_id=ben.pk)
    reply(task, sender="Ben <BEN@staff.example.com>", body="Done.\nSent it this morning.")
    task.refresh_from_db()
    assert (task.status, task.completed_by) == ("done", ben)
    event = TaskEvent.objects.get(task=task, kind="mail_reply")
    assert (event.actor, event.public, event.external_email) == (ben, False, "")


def test_a_reply_from_a_stranger_is_kept_and_answered_once(
    people, admin, partner_task, deliver, smtp_sink
):
    before = task_state(partner_task)
    message = reply(partner_task, sender=f"Mallory <{STRANGER}>", body="완료")

    assert message.status == Status.QUARANTINED
    assert f"{STRANGER} is not a participant of the task “납기일 확인”" in message.reason
    assert task_state(partner_task) == before
    assert not mail_to(STRANGER)

    with deliver():
        assert mailreplies.answer_refused() == 1
    answer = smtp_sink.wait_for(lambda m: m.recipients == [STRANGER]).message
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["In-Reply-To"] == f"<{message.message_id}>"
    assert "is not a participant" in answer.get_content()
    assert mailreplies.answer_refused() == 0
    assert len(mail_to(STRANGER)) == 1
    assert RefusedReply.objects.get(inbound=message).answer.to == [STRANGER]
    # An answer to our answer is kept in the quarantine and not answered again.
    [ours] = mail_to(STRANGER)
    again = reply(partner_task, sender=STRANGER, to=ours.reply_to, body="Why?")
    assert again.status == Status.QUARANTINED
    assert mailreplies.answer_refused() == 0

    # An admin who finds it belongs to the task files it by hand: an internal comment.
    inbound.file_into(admin, message.pk, f"task {partner_task.pk}")
    event = TaskEvent.objects.get(task=partner_task, kind="mail_reply")
    assert (event.public, event.external_email, event.data["filed"]) == (False, STRANGER, True)
    assert task_state(partner_task)[0] == "open"


def test_a_reply_to_a_closed_task_is_kept_and_answered(people, partner_task, deliver, smtp_sink):
    services.cancel(people["ana"], partner_task.pk, note="Not needed any more.")
    before = task_state(partner_task)
    message = reply(partner_task, body="완료했습니다")
    assert message.status == Status.QUARANTINED
    assert "is cancelled and takes no more replies" in message.reason
    assert task_state(partner_task) == before
    with deliver():
        mailreplies.answer_refused()
    text = smtp_sink.wait_for(lambda m: m.recipients == [PARTNER]).message.get_content()
    assert "is cancelled and takes no more replies" in text


def test_a_reply_to_a_task_that_does_not_exist_is_kept_and_answered(db, deliver, smtp_sink):
    missing = routing.reply_address(Task(pk=987_654))
    message = reply(Task(pk=987_654), sender=STRANGER, to=missing, body="done")
    assert message.status == Status.QUARANTINED
    with deliver():
        assert mailreplies.answer_refused() == 1
    text = smtp_sink.wait_for(lambda m: m.recipients == [STRANGER]).message.get_content()
    assert "There is no task with the address you wrote to." in text

    # A made-up address is not ours to answer.
    forged = missing.replace(missing.split("-")[-1].split("@")[0], "0" * 20)
    reply(Task(pk=987_654), sender="other@elsewhere.example", to=forged, body="done")
    assert mailreplies.answer_refused() == 0


def test_automated_mail_is_never_answered(partner_task):
    raw = corpus.auto_reply()
    stored = inbound.store(raw, envelope_from="", recipients=[routing.reply_address(partner_task)])
    assert inbound.process(stored.pk).status == Status.IGNORED
    assert mailreplies.answer_refused() == 0


def test_done_on_a_task_that_needs_the_next_step_keeps_the_comment_and_says_why(
    people, deliver, smtp_sink
):
    review = TaskType.objects.create(code="review", name="Review", requires_next_step=True)
    with deliver():
        task = new_task(people["ana"], external_email=PARTNER, task_type_id=review.pk)
    smtp_sink.clear()
    with deliver():
        message = reply(task, body="done\nLooks good.")
    assert message.status == Status.PROCESSED
    assert task_state(task)[0] == "open"
    assert TaskEvent.objects.get(task=task, kind="mail_reply").body == "done\nLooks good."
    answer = smtp_sink.wait_for(lambda m: m.recipients == [PARTNER]).message
    assert "not completed yet" in answer["Subject"]
    assert "What is the next step?" in answer.get_content()
    assert answer["Reply-To"] == routing.reply_address(task)


def test_files_by_mail_are_kept_but_a_forbidden_one_is_never_served(people, partner_task):
    files = [
        corpus.File("납기표.pdf", b"%PDF-1.4", "application/pdf"),
        corpus.File("invoice.exe", b"MZ", "application/octet-stream"),
    ]
    reply(partner_task, body="첨부합니다.", attachments=files)
    kept = {a.filename: a for a in TaskAttachment.objects.filter(task=partner_task)}
    assert set(kept) == {"납기표.pdf", "invoice.exe"}
    assert (kept["납기표.pdf"].allowed, bytes(kept["납기표.pdf"].data)) == (True, b"%PDF-1.4")
    assert (kept["invoice.exe"].allowed, bytes(kept["invoice.exe"].data)) == (False, b"")
    task = queries.task(people["ana"], partner_task.pk)
    assert queries.attachment(task, kept["납기표.pdf"].pk) == kept["납기표.pdf"]
    with pytest.raises(Exception, match="no such file"):
        queries.attachment(task, kept["invoice.exe"].pk)


def test_answers_to_one_sender_are_limited(partner_task, monkeypatch):
    monkeypatch.setattr(mailreplies, "_ANSWERS_PER_SENDER", (2, 3600))
    for n in range(4):
        reply(partner_task, sender=STRANGER, body=f"spam {n}", subject=f"Offer {n}")
    assert mailreplies.answer_refused() == 2
    assert OutboundMessage.objects.filter(to=[STRANGER]).count() == 2
    assert RefusedReply.objects.count() == 4
