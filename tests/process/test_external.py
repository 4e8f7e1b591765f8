"""The external participant's link: read what is shared, comment, attach, complete; and links
that are expired, tampered with, revoked, or used again after the task is done."""

from datetime import timedelta

import pytest

from trellis.core.errors import Conflict, NotFound, RateLimited, ValidationFailed
from trellis.process import external, services
from trellis.process.external import LinkGone
from trellis.process.models import (
    ExternalLink,
    ExternalLinkUse,
    Notification,
    Task,
    TaskAttachment,
    TaskEvent,
    TaskType,
)

from .conftest import PARTNER, START, history, in_hours, mail_to, new_task, token_in

IP = "203.0.113.9"


@pytest.fixture
def handed_out(people):
    """Ana gives the partner a task; returns it and the token from the partner's e-mail."""

    def give(**data):
        task = new_task(
            people["ana"],
            title="Confirm the delivery date",
            external_email=PARTNER,
            external_name="박지수",
            **data,
        )
        [mail] = mail_to(PARTNER)
        return task, token_in(mail.text)

    return give


def uses() -> list[tuple[str, str, str | None]]:
    return list(ExternalLinkUse.objects.order_by("id").values_list("action", "outcome", "ip"))


def test_only_the_link_hash_is_stored_and_the_link_names_the_task(handed_out):
    task, token = handed_out()
    [link] = ExternalLink.objects.filter(task=task)
    assert link.email == PARTNER and token not in link.token_hash and len(token) >= 40
    assert link.expires_at == START + timedelta(days=30)
    access = external.open_link(token, ip=IP)
    assert (access.task, access.closed) == (task, False)


def test_the_participant_reads_only_what_is_shared_with_them(people, handed_out):
    ana = people["ana"]
    task, token = handed_out()
    services.comment(ana, task.pk, "Internal: push for the 20th.")
    services.comment(ana, task.pk, "도면을 확인해 주세요.", public=True)
    services.attach(ana, task.pk, filename="plan.pdf", content_type="application/pdf", data=b"1")
    services.attach(
        ana, task.pk, filename="drawing.pdf", content_type="application/pdf", data=b"2", public=True
    )
    other = new_task(ana, thread_id=task.thread_id, title="Internal cost check")
    services.comment(ana, other.pk, "Margin is thin.", public=True)

    seen = external.shared(external.open_link(token, ip=IP))

    assert [shared.task for shared in seen.tasks] == [task]
    [mine] = seen.tasks
    assert [(e.kind, e.body) for e in mine.events] == [
        ("commented", "도면을 확인해 주세요."),
        ("attached", ""),
    ]
    assert [a.filename for a in mine.attachments] == ["drawing.pdf"]
    drawing = mine.attachments[0]
    assert bytes(external.attachment(token, drawing.pk, ip=IP).data) == b"2"
    hidden = TaskAttachment.objects.get(filename="plan.pdf")
    with pytest.raises(NotFound):
        external.attachment(token, hidden.pk, ip=IP)
    assert uses() == [("view", "ok", IP), ("download", "ok", IP), ("download", "ok", IP)]
    # The history notes the first use only; the log has every one.
    assert history(task).count("link_used") == 1


def test_the_participant_comments_attaches_and_hands_the_next_step_back(
    people, handed_out, deliver, smtp_sink
):
    ana = people["ana"]
    task, token = handed_out()

    external.comment(token, "내일 확인하겠습니다.", ip=IP)
    external.attach(
        token, filename="납기.xlsx", content_type="application/vnd.ms-excel", data=b"xls", ip=IP
    )
    with deliver():
        done = external.complete(
            token,
            note="확인했습니다.",
            next_step={"title": "납기일 3월 20일로 계약서 수정", "due_at": in_hours(24)},
            ip=IP,
        )

    assert (done.status, done.completed_by) == ("done", None)
    following = Task.objects.get(handed_from=task)
    assert (following.owner, following.assignee_kind, following.due_at) == (
        ana,
        "user",
        in_hours(24),
    )
    assert following.created_by.username == "trellis"
    events = TaskEvent.objects.filter(task=task).order_by("id")
    assert [(e.kind, e.external_email) for e in events if e.external_email] == [
        ("link_used", PARTNER),
        ("commented", PARTNER),
        ("attached", PARTNER),
        ("completed", PARTNER),
    ]
    assert all(e.public for e in events if e.external_email and e.kind != "link_used")
    assert TaskAttachment.objects.get(task=task).uploaded_by_email == PARTNER
    assert Notification.objects.filter(
        user=ana, text="박지수 gave you a task: 납기일 3월 20일로 계약서 수정"
    ).exists()
    assert smtp_sink.wait_for(lambda m: m.recipients == [ana.email])
    assert [u[:2] for u in uses()] == [("comment", "ok"), ("attach", "ok"), ("complete", "ok")]


def test_a_next_step_from_the_participant_can_name_only_what_and_when(handed_out):
    task, token = handed_out()
    with pytest.raises(ValidationFailed) as refused:
        external.complete(token, next_step={"title": "x", "user_id": 1}, ip=IP)
    assert refused.value.errors == {"next_step.user_id": ["Unknown field."]}
    with pytest.raises(ValidationFailed) as refused:
        external.complete(token, next_step={"title": "x", "due_at": START}, ip=IP)
    assert refused.value.errors == {"next_step.due_at": ["The due time is in the past."]}
    task.refresh_from_db()
    assert task.status == "open"


def test_the_participant_can_say_the_thread_is_finished(people, handed_out):
    task, token = handed_out()
    with pytest.raises(ValidationFailed) as refused:
        external.complete(token, next_step={"title": "More"}, thread_finished=True, ip=IP)
    assert list(refused.value.errors) == ["thread_finished"]
    done = external.complete(token, thread_finished=True, ip=IP)
    assert (done.status, done.thread.status, done.thread.finished_by) == ("done", "finished", None)
    completed = TaskEvent.objects.get(task=task, kind="completed")
    assert (completed.external_email, completed.data["thread_finished"]) == (PARTNER, True)


def test_a_thread_with_other_open_tasks_is_not_finished_by_the_participant(people, handed_out):
    task, token = handed_out()
    new_task(people["ana"], thread_id=task.thread_id, title="Internal follow-up")
    with pytest.raises(ValidationFailed) as refused:
        external.complete(token, thread_finished=True, ip=IP)
    assert list(refused.value.errors) == ["thread_finished"]
    task.refresh_from_db()
    assert (task.status, task.thread.status) == ("open", "open")


def test_a_type_that_requires_the_next_step_asks_the_participant_too(people, handed_out):
    review = TaskType.objects.create(code="review", name="Review", requires_next_step=True)
    _task, token = handed_out(task_type_id=review.pk)
    with pytest.raises(ValidationFailed) as refused:
        external.complete(token, ip=IP)
    assert list(refused.value.errors) == ["next_step"]
    assert external.complete(token, next_step={"title": "Sign"}, ip=IP).status == "done"
    # Saying the thread is finished answers the question too.
    other = "minho@partner.co.kr"
    new_task(people["ana"], external_email=other, task_type_id=review.pk)
    [mail] = mail_to(other)
    assert external.complete(token_in(mail.text), thread_finished=True, ip=IP).status == "done"


def test_an_expired_link_is_refused_and_the_use_logged(handed_out, clock):
    task, token = handed_out()
    clock.move_to(START + timedelta(days=30, seconds=1), tick=False)
    for act in (
        lambda: external.open_link(token, ip=IP),
        lambda: external.comment(token, "hello", ip=IP),
        lambda: external.complete(token, ip=IP),
    ):
        with pytest.raises(LinkGone, match="expired"):
            act()
    assert [u[1] for u in uses()] == ["expired", "expired", "expired"]
    task.refresh_from_db()
    assert (task.status, history(task)) == ("open", ["created", "link_issued"])


def test_a_tampered_link_is_not_a_link(handed_out):
    task, token = handed_out()
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, token + "x", "", "x" * 500, None):
        with pytest.raises(NotFound):
            external.open_link(bad, ip=IP)
    with pytest.raises(NotFound):
        external.complete(tampered, ip=IP)
    assert uses() == []
    task.refresh_from_db()
    assert task.status == "open"


def test_a_revoked_link_stops_working_at_once(people, handed_out):
    task, token = handed_out()
    [link] = ExternalLink.objects.filter(task=task)
    services.revoke_link(people["ana"], link.pk)
    assert services.revoke_link(people["ana"], link.pk).revoked_at == START
    for act in (
        lambda: external.open_link(token, ip=IP),
        lambda: external.comment(token, "hello", ip=IP),
    ):
        with pytest.raises(LinkGone, match="revoked"):
            act()
    assert [u[1] for u in uses()] == ["revoked", "revoked"]
    assert history(task)[-1] == "link_revoked"

    # A new link works; the old one stays revoked.
    services.send_new_link(people["ana"], task.pk)
    fresh = token_in(mail_to(PARTNER)[-1].text)
    assert external.open_link(fresh, ip=IP).task == task
    with pytest.raises(LinkGone):
        external.open_link(token, ip=IP)


def test_a_link_used_again_after_completion_reads_but_does_not_act(handed_out):
    task, token = handed_out()
    external.complete(token, ip=IP)
    with pytest.raises(Conflict, match="closed"):
        external.complete(token, ip=IP)
    with pytest.raises(Conflict, match="closed"):
        external.comment(token, "one more thing", ip=IP)
    access = external.open_link(token, ip=IP)
    assert access.closed and external.shared(access).closed
    assert [u[:2] for u in uses()] == [
        ("complete", "ok"),
        ("complete", "closed"),
        ("comment", "closed"),
        ("view", "ok"),
    ]
    assert history(task).count("completed") == 1


def test_a_link_for_a_task_given_to_someone_else_is_revoked(people, handed_out):
    task, token = handed_out()
    services.assign(people["ana"], task.pk, user_id=people["ben"].pk)
    with pytest.raises(LinkGone):
        external.comment(token, "still mine?", ip=IP)


def test_files_from_the_participant_over_the_limit_or_forbidden_are_refused(handed_out, settings):
    settings.TRELLIS = {
        **settings.TRELLIS,
        "MAIL": {**settings.TRELLIS["MAIL"], "MAX_ATTACHMENT_BYTES": 10},
    }
    task, token = handed_out()
    for name, data in [("big.pdf", b"x" * 11), ("run.bat", b"echo")]:
        with pytest.raises(ValidationFailed) as refused:
            external.attach(
                token, filename=name, content_type="application/octet-stream", data=data, ip=IP
            )
        assert list(refused.value.errors) == ["file"]
    assert not TaskAttachment.objects.exists()
    assert history(task) == ["created", "link_issued", "link_used"]


def test_a_flood_from_one_address_is_slowed_down(handed_out, monkeypatch):
    _task, token = handed_out()
    monkeypatch.setattr(external, "PER_CLIENT", (2, 600))
    external.open_link(token, ip=IP)
    external.open_link(token, ip=IP)
    with pytest.raises(RateLimited):
        external.open_link(token, ip=IP)
    assert external.open_link(token, ip="198.51.100.1").task == _task
