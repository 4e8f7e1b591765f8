"""A thread that passes through three people, the last one outside the company: handed on by
completing with the next step, and completed by a reply in Korean to the task's e-mail."""

from trellis.mail.models import InboundMessage
from trellis.process import queries, services
from trellis.process.models import Notification, Task, TaskEvent
from trellis.process.queries import Party

from .. import factories
from .conftest import PARTNER, START, history, in_hours, new_task, reply, token_in


def test_a_thread_through_three_people_ends_with_a_korean_reply(people, deliver, smtp_sink):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana, name="한빛소프트")

    # Ana asks Ben for a quote; Ben sends it and hands the next step to the customer.
    with deliver():
        first = new_task(
            ana,
            title="Prepare the quote",
            user_id=ben.pk,
            record_type="account",
            record_id=account.pk,
            due_at=in_hours(48),
        )
        services.start(ben, first.pk)
        services.complete(
            ben,
            first.pk,
            note="Quote sent.",
            next_step={
                "title": "납기일 확인",
                "description": "견적서의 납기일을 확인해 주세요.",
                "external_email": PARTNER,
                "external_name": "박지수",
                "language": "ko",
                "due_at": in_hours(72),
            },
        )
    second = Task.objects.get(handed_from=first)
    assert (second.assignee_kind, second.external_email, second.thread_id) == (
        "external",
        PARTNER,
        first.thread_id,
    )

    # The customer's e-mail: the task, a link, and a reply address of the task.
    task_mail = smtp_sink.wait_for(lambda m: m.recipients == [PARTNER]).message
    assert "납기일 확인" in task_mail["Subject"]
    text = task_mail.get_content()
    assert "견적서의 납기일을 확인해 주세요." in text and "2026-03-05 09:00" in text
    assert token_in(text)
    reply_address = task_mail["Reply-To"]
    assert reply_address.startswith("reply+") and "납기일" not in reply_address

    # She replies in Korean, "완료" on the first line, through the real mail intake.
    with deliver():
        message = reply(
            second,
            to=reply_address,
            body="완료했습니다!\n\n납기일은 3월 20일입니다.\n\n박지수 드림",
            subject="Re: 납기일 확인",
            in_reply_to=task_mail["Message-ID"],
        )

    assert (message.status, message.record) == (InboundMessage.Status.PROCESSED, second)
    second.refresh_from_db()
    assert (second.status, second.completed_at, second.completed_by) == ("done", START, None)
    answer = TaskEvent.objects.get(task=second, kind="mail_reply")
    assert (answer.external_email, answer.public, answer.inbound) == (PARTNER, True, message)
    assert "납기일은 3월 20일입니다." in answer.body
    completed = TaskEvent.objects.get(task=second, kind="completed")
    assert (completed.external_email, completed.actor) == (PARTNER, None)
    for person in (ana, ben):
        assert Notification.objects.filter(
            user=person, task=second, text="박지수 completed the task: 납기일 확인"
        ).exists()

    # The record's timeline shows the thread in order; the matrix says who did what.
    [view] = queries.threads_for_record(ana, "account", account.pk)
    assert [t.title for t in view.tasks] == ["Prepare the quote", "납기일 확인"]
    assert [(e.task_id, e.kind) for e in queries.thread_timeline(view)] == [
        *((first.pk, kind) for kind in history(first)),
        *((second.pk, kind) for kind in history(second)),
    ]
    assert history(second) == ["created", "link_issued", "mail_reply", "completed"]
    raci = queries.responsibility(ana, "account", account.pk)
    assert raci.responsible == []
    assert raci.accountable == [Party("user", ana.pk, "Ana", ana.email)]
    assert raci.consulted == [
        Party("user", ben.pk, "Ben", ben.email),
        Party("external", None, "박지수", PARTNER),
    ]
    assert raci.informed == []
