"""Tasks and threads through the services: create, hand on, reassign, status, complete, edit."""

from datetime import timedelta

import pytest
from django.contrib.contenttypes.models import ContentType

from trellis.core.errors import Conflict, NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent, Role
from trellis.mail import routing
from trellis.process import queries, services
from trellis.process.models import (
    ExternalLink,
    Notification,
    Task,
    TaskAttachment,
    TaskEvent,
    TaskType,
    Thread,
)

from .. import factories
from .conftest import PARTNER, START, history, in_hours, mail_to, new_task

Status = Task.Status


def everything() -> dict:
    return {
        "threads": list(Thread.objects.order_by("pk").values()),
        "tasks": list(Task.objects.order_by("pk").values()),
        "events": TaskEvent.objects.count(),
        "links": ExternalLink.objects.count(),
        "notifications": Notification.objects.count(),
        "files": TaskAttachment.objects.count(),
        "audit": AuditEvent.objects.filter(
            content_type=ContentType.objects.get_for_model(Task)
        ).count(),
    }


def test_a_task_about_a_record_starts_a_thread_and_the_assignee_hears_of_it(
    people, deliver, smtp_sink
):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana, name="Hanbit Soft")

    with deliver():
        task = new_task(
            ana,
            title="Check the discount",
            description="Is 12% within policy?",
            user_id=ben.pk,
            record_type="account",
            record_id=account.pk,
            due_at=in_hours(48),
            priority="high",
        )

    thread = task.thread
    assert (thread.title, thread.status, thread.record) == ("Check the discount", "open", account)
    assert (task.assignee_kind, task.owner, task.team, task.status) == (
        "user",
        ben,
        ben.team,
        "open",
    )
    assert (task.created_by, task.assigned_by, task.priority, task.version) == (ana, ana, "high", 1)
    assert history(task) == ["created"]
    [note] = Notification.objects.filter(user=ben)
    assert note.text == "Ana gave you a task: Check the discount"
    mail = smtp_sink.wait_for().message
    assert mail["To"] == ben.email and mail["Reply-To"] == routing.reply_address(task)
    assert mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_content()
    assert "Is 12% within policy?" in text and "2026-03-04 09:00" in text
    [created] = AuditEvent.objects.filter(content_type=ContentType.objects.get_for_model(Task))
    assert (created.action, created.actor, created.object_id) == ("created", ana, task.pk)


def test_giving_oneself_a_task_sends_nothing(people):
    task = new_task(people["ana"])
    assert task.owner == people["ana"]
    assert not Notification.objects.exists() and not mail_to(people["ana"].email)


@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({}, {"assignee"}),
        ({"user_id": "me", "team_id": "team"}, {"assignee"}),
        ({"external_email": "not an address"}, {"external_email"}),
        ({"external_email": "robot@trellis.localhost"}, {"external_email"}),
        ({"user_id": 999_999}, {"user_id"}),
        ({"team_id": 999_999}, {"team_id"}),
        ({"title": "", "user_id": "me"}, {"title"}),
        ({"title": "x" * 301, "user_id": "me"}, {"title"}),
        ({"priority": "asap", "user_id": "me"}, {"priority"}),
        ({"due_at": "tomorrow", "user_id": "me"}, {"due_at"}),
        ({"task_type_id": 999_999, "user_id": "me"}, {"task_type_id"}),
        ({"colour": "red", "user_id": "me"}, {"colour"}),
        ({"record_type": "spaceship", "record_id": 1, "user_id": "me"}, {"record_type"}),
        ({"record_type": "task", "record_id": 1, "user_id": "me"}, {"record_type"}),
        ({"record_type": "account", "record_id": 999_999, "user_id": "me"}, {"record_id"}),
        ({"record_id": 1, "user_id": "me"}, {"record_type"}),
        ({"thread_id": 999_999, "user_id": "me"}, {"thread_id"}),
    ],
)
def test_bad_input_is_refused_by_field_and_writes_nothing(people, team, data, fields):
    ana = people["ana"]
    data = {"title": "Call back", **data}
    for key, value in list(data.items()):
        if value == "me":
            data[key] = ana.pk
        elif value == "team":
            data[key] = team.pk
    before = everything()
    with pytest.raises(ValidationFailed) as refused:
        services.create_task(ana, data)
    assert set(refused.value.errors) == fields
    assert everything() == before


def test_a_due_time_in_the_past_is_refused_with_a_clear_answer(people, clock):
    before = everything()
    with pytest.raises(ValidationFailed) as refused:
        new_task(people["ana"], due_at=START - timedelta(minutes=1))
    assert refused.value.errors == {"due_at": ["The due time is in the past."]}
    assert everything() == before


def test_an_assignee_who_may_not_see_the_record_is_refused(people):
    ana, cho = people["ana"], people["cho"]  # support sees no opportunities
    deal = factories.opportunity(ana)
    with pytest.raises(ValidationFailed) as refused:
        new_task(ana, user_id=cho.pk, record_type="opportunity", record_id=deal.pk)
    assert "may not see the record" in refused.value.errors["user_id"][0]
    # A free-standing task is fine.
    assert new_task(ana, user_id=cho.pk).owner == cho


def test_a_record_the_actor_may_not_see_is_no_such_record(people):
    deal = factories.opportunity(people["ana"])  # sales see their own deals only
    with pytest.raises(ValidationFailed) as refused:
        new_task(people["ben"], record_type="opportunity", record_id=deal.pk)
    assert refused.value.errors == {"record_id": ["No such record."]}


def test_many_tasks_at_once_are_what_one_task_at_a_time_would_be(people, team):
    ana, ben = people["ana"], people["ben"]
    accounts = [factories.account(ana, name=f"Account {n}") for n in range(3)]
    made = services.create_tasks(
        ana,
        [
            {"title": "Call", "user_id": ben.pk, "record_type": "account", "record_id": a.pk}
            for a in accounts[:2]
        ]
        + [
            {
                "title": "Queue",
                "team_id": team.pk,
                "record_type": "account",
                "record_id": accounts[2].pk,
                "due_at": in_hours(4),
            }
        ],
    )
    assert [(t.thread.record, t.assignee_kind, t.title) for t in made] == [
        (accounts[0], "user", "Call"),
        (accounts[1], "user", "Call"),
        (accounts[2], "team", "Queue"),
    ]
    assert len({t.thread_id for t in made}) == 3  # each the first of a thread of its own
    assert all(history(t) == ["created"] for t in made)
    # Ben hears of his two tasks, and (in the app only) of the one in his team's queue.
    assert sorted(n.text for n in Notification.objects.filter(user=ben)) == [
        "Ana gave you a task: Call",
        "Ana gave you a task: Call",
        "Ana put a task in your team's queue: Queue",
    ]
    assert len(mail_to(ben.email)) == 2
    assert (
        AuditEvent.objects.filter(
            content_type=ContentType.objects.get_for_model(Task), action="created"
        ).count()
        == 3
    )


def test_many_tasks_are_refused_as_a_whole_with_the_faults_by_position(people):
    ana, cho = people["ana"], people["cho"]
    deal = factories.opportunity(ana)
    account = factories.account(ana)
    before = everything()
    with pytest.raises(ValidationFailed) as refused:
        services.create_tasks(
            ana,
            [
                {
                    "title": "Fine",
                    "user_id": ana.pk,
                    "record_type": "account",
                    "record_id": account.pk,
                },
                {"title": "", "user_id": ana.pk, "record_type": "account", "record_id": account.pk},
                {
                    "title": "Hidden",
                    "user_id": cho.pk,
                    "record_type": "opportunity",
                    "record_id": deal.pk,
                },
                {"title": "Nowhere", "user_id": ana.pk, "record_type": "spaceship", "record_id": 1},
                {
                    "title": "Out",
                    "external_email": "x@example.com",
                    "record_type": "account",
                    "record_id": account.pk,
                },
            ],
        )
    assert set(refused.value.errors) == {
        "1.title",
        "2.user_id",
        "3.record_type",
        "4.external_email",
    }
    assert everything() == before


def test_completing_with_the_next_step_hands_the_work_on_in_the_same_thread(people, deliver):
    ana, ben, cho = people["ana"], people["ben"], people["cho"]
    with deliver():
        first = new_task(ana, title="Draft the contract", user_id=ben.pk)
        done = services.complete(
            ben,
            first.pk,
            note="Draft is in the shared folder.",
            next_step={"title": "Review the draft", "user_id": cho.pk, "due_at": in_hours(24)},
        )

    second = done.handed_to.get()
    assert (done.status, done.completed_by, done.completed_at, done.version) == (
        "done",
        ben,
        START,
        2,
    )
    assert (second.thread, second.handed_from, second.owner, second.assigned_by) == (
        first.thread,
        done,
        cho,
        ben,
    )
    assert second.due_at == in_hours(24)
    completed = TaskEvent.objects.get(task=done, kind="completed")
    assert completed.body == "Draft is in the shared folder."
    assert completed.data == {"from": "open", "thread_finished": False, "next_task": second.pk}
    assert Notification.objects.filter(user=ana, text__contains="Ben completed").exists()
    assert Notification.objects.filter(user=cho, text__contains="Ben gave you a task").exists()
    assert first.thread.status == "open"


def test_a_type_that_requires_the_next_step_asks_for_it(people):
    ana, ben = people["ana"], people["ben"]
    review = TaskType.objects.create(
        code="review", name="Review", name_ko="검토", requires_next_step=True
    )
    task = new_task(ana, user_id=ben.pk, task_type_id=review.pk)
    before = everything()

    with pytest.raises(ValidationFailed) as refused:
        services.complete(ben, task.pk)
    assert list(refused.value.errors) == ["next_step"]
    with pytest.raises(ValidationFailed) as refused:
        services.complete(
            ben, task.pk, thread_finished=True, next_step={"title": "More", "user_id": ana.pk}
        )
    assert list(refused.value.errors) == ["thread_finished"]
    with pytest.raises(ValidationFailed) as refused:
        services.complete(
            ben, task.pk, next_step={"title": "More", "user_id": ana.pk, "due_at": START}
        )
    assert refused.value.errors == {"next_step.due_at": ["The due time is in the past."]}
    assert everything() == before

    services.complete(ben, task.pk, thread_finished=True)
    task.refresh_from_db()
    assert (task.status, task.thread.status, task.thread.finished_by) == ("done", "finished", ben)
    with pytest.raises(Conflict):
        new_task(ana, thread_id=task.thread_id)


def test_a_thread_is_not_finished_while_other_tasks_of_it_are_open(people):
    ana, ben = people["ana"], people["ben"]
    first = new_task(ana, user_id=ben.pk)
    new_task(ana, thread_id=first.thread_id, title="In parallel")
    with pytest.raises(ValidationFailed) as refused:
        services.complete(ben, first.pk, thread_finished=True)
    assert refused.value.errors == {
        "thread_finished": ["1 other task of this thread is still open."]
    }


def test_reassignment_keeps_the_history_of_who_held_the_task(people, team):
    ana, ben, cho = people["ana"], people["ben"], people["cho"]
    task = new_task(ana, user_id=ben.pk)
    services.start(ben, task.pk)

    services.assign(ben, task.pk, user_id=cho.pk, note="You know this customer.")
    services.assign(cho, task.pk, team_id=team.pk)
    services.assign(ana, task.pk, external_email=" Jisoo@Partner.co.kr ", external_name="Jisoo")
    task.refresh_from_db()

    assert (task.assignee_kind, task.owner, task.external_email, task.status) == (
        "external",
        None,
        PARTNER,
        "open",
    )
    hand_offs = TaskEvent.objects.filter(task=task, kind="assigned").order_by("id")
    chain = [
        (e.data["from"]["name"], e.data["to"]["name"] or e.data["to"]["email"]) for e in hand_offs
    ]
    assert chain == [("Ben", "Cho"), ("Cho", team.name), (team.name, "Jisoo")]
    assert hand_offs[0].body == "You know this customer."
    assert hand_offs[0].data["status"] == ["in_progress", "open"]
    assert history(task)[-1] == "link_issued"

    # Away from the participant: their link stops working.
    services.assign(ana, task.pk, user_id=ana.pk)
    [link] = ExternalLink.objects.filter(task=task)
    assert link.revoked_at == START
    assert history(task)[-2:] == ["link_revoked", "assigned"]


def test_giving_a_task_to_whom_it_is_already_given_changes_nothing(people):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, user_id=ben.pk)
    assert services.assign(ana, task.pk, user_id=ben.pk).version == 1
    assert history(task) == ["created"]


def test_status_moves_and_their_limits(people, team):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, user_id=ben.pk)
    assert services.start(ben, task.pk).status == Status.IN_PROGRESS
    assert services.wait(ben, task.pk, note="Waiting on legal.").status == Status.WAITING
    assert services.set_status(ben, task.pk, Status.OPEN).status == Status.OPEN
    with pytest.raises(ValidationFailed) as refused:
        services.set_status(ben, task.pk, Status.DONE)
    assert list(refused.value.errors) == ["status"]
    assert services.cancel(ben, task.pk, note="Customer withdrew.").status == Status.CANCELLED
    with pytest.raises(Conflict):
        services.start(ben, task.pk)
    with pytest.raises(Conflict):
        services.complete(ben, task.pk)
    statuses = TaskEvent.objects.filter(task=task, kind="status").order_by("id")
    assert [(e.data["from"], e.data["to"], e.body) for e in statuses] == [
        ("open", "in_progress", ""),
        ("in_progress", "waiting", "Waiting on legal."),
        ("waiting", "open", ""),
        ("open", "cancelled", "Customer withdrew."),
    ]

    queued = new_task(ana, team_id=team.pk)
    with pytest.raises(Conflict, match="claim it first"):
        services.start(ben, queued.pk)
    with pytest.raises(Conflict, match="claim it first"):
        services.complete(ben, queued.pk)


def test_a_stale_version_is_refused_and_changes_nothing(people):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, user_id=ben.pk)
    services.edit(ana, task.pk, {"priority": "urgent"}, version=1)
    before = everything()
    with pytest.raises(StaleVersion) as stale:
        services.edit(ben, task.pk, {"title": "Mine"}, version=1)
    assert stale.value.current.priority == "urgent"
    with pytest.raises(StaleVersion):
        services.start(ben, task.pk, version=1)
    assert everything() == before
    with pytest.raises(ValidationFailed):
        services.edit(ben, task.pk, {"title": "Mine"}, version=None)


def test_editing_the_due_time_plans_the_reminders_anew(people):
    ana = people["ana"]
    task = new_task(ana, due_at=in_hours(72))
    assert task.next_reminder_at == in_hours(48)
    task = services.edit(ana, task.pk, {"due_at": in_hours(10)}, version=1)
    assert (task.next_reminder_at, task.version) == (in_hours(10), 2)
    with pytest.raises(ValidationFailed) as refused:
        services.edit(ana, task.pk, {"due_at": START - timedelta(hours=1)}, version=2)
    assert refused.value.errors == {"due_at": ["The due time is in the past."]}
    assert services.edit(ana, task.pk, {"due_at": None}, version=2).next_reminder_at is None


def test_who_may_do_what(people):
    ana = people["ana"]
    reader = factories.user(Role.READ_ONLY, username="reader", team=ana.team)
    task = new_task(ana)
    assert queries.task(reader, task.pk) == task
    with pytest.raises(PermissionDenied):
        services.start(reader, task.pk)
    with pytest.raises(PermissionDenied):
        new_task(reader)

    # A task about a record someone may not see is missing to them, as the record is.
    deal = factories.opportunity(ana)
    hidden = new_task(ana, record_type="opportunity", record_id=deal.pk)
    for action in (
        lambda: queries.task(people["ben"], hidden.pk),
        lambda: services.start(people["ben"], hidden.pk),
        lambda: services.comment(people["ben"], hidden.pk, "Hi"),
    ):
        with pytest.raises(NotFound):
            action()
    assert hidden not in queries.task_queryset(people["ben"])
    assert task in queries.task_queryset(people["ben"])


def test_files_over_the_limit_or_of_a_forbidden_type_are_refused(people, settings):
    settings.TRELLIS = {
        **settings.TRELLIS,
        "MAIL": {**settings.TRELLIS["MAIL"], "MAX_ATTACHMENT_BYTES": 1000},
    }
    ana = people["ana"]
    task = new_task(ana)
    before = everything()
    for name, content_type, data, message in [
        ("big.pdf", "application/pdf", b"x" * 1001, "The file is larger than 1000\xa0bytes."),
        ("setup.exe", "application/octet-stream", b"MZ", "Files of this type are not accepted."),
        ("invoice.pdf", "application/x-msdownload", b"MZ", "Files of this type are not accepted."),
        ("empty.txt", "text/plain", b"", "Choose a file."),
    ]:
        with pytest.raises(ValidationFailed) as refused:
            services.attach(ana, task.pk, filename=name, content_type=content_type, data=data)
        assert refused.value.errors == {"file": [message]}
    assert everything() == before

    kept = services.attach(
        ana, task.pk, filename="../../견적서 v2.pdf", content_type="application/pdf", data=b"%PDF"
    )
    assert (kept.filename, kept.size, kept.allowed, bytes(kept.data)) == (
        "견적서 v2.pdf",
        4,
        True,
        b"%PDF",
    )
    assert history(task)[-1] == "attached"


def test_a_shared_comment_is_mailed_to_the_participant(people, deliver, smtp_sink):
    ana = people["ana"]
    with deliver():
        task = new_task(ana, external_email=PARTNER, language="ko")
    smtp_sink.clear()
    with deliver():
        services.comment(ana, task.pk, "Internal: they are slow.")
        services.comment(ana, task.pk, "도면을 첨부했습니다.", public=True)

    mail = smtp_sink.wait_for().message
    assert len(smtp_sink.messages) == 1
    assert mail["To"] == PARTNER and "도면을 첨부했습니다." in mail.get_content()
    assert "Internal" not in mail.get_content()
    comments = TaskEvent.objects.filter(task=task, kind="commented").order_by("id")
    assert [(c.public, c.outbound_id is not None) for c in comments] == [
        (False, False),
        (True, True),
    ]
