"""Reminders before the due time and when overdue, and the daily digest, across a moved clock:
each is sent once, to the people who hold the task, by the app and by e-mail."""

import threading
from datetime import timedelta

from trellis.core import sweep
from trellis.core.models import Role
from trellis.process import reminders, services
from trellis.process.models import Notification, TaskEvent, TaskMailSettings

from .. import factories
from ..concurrency import OwnConnections
from .conftest import PARTNER, START, in_hours, new_task


def reminded(task) -> list[str]:
    return [
        e.data["reminder"]
        for e in TaskEvent.objects.filter(task=task, kind="reminder").order_by("id")
    ]


def notes(user) -> list[str]:
    return list(
        Notification.objects.filter(user=user).order_by("id").values_list("text", flat=True)
    )


def test_a_user_is_reminded_before_the_due_time_and_when_overdue_once_each(
    people, clock, deliver, smtp_sink
):
    ana, ben = people["ana"], people["ben"]
    with deliver():
        task = new_task(ana, title="Send the contract", user_id=ben.pk, due_at=in_hours(48))
    Notification.objects.all().delete()
    smtp_sink.clear()

    clock.move_to(in_hours(23), tick=False)
    assert reminders.send_due() == 0

    clock.move_to(in_hours(24), tick=False)
    with deliver():
        assert reminders.send_due() == 1
        assert reminders.send_due() == 0
    assert notes(ben) == ["Due soon: Send the contract (2026-03-04 09:00)"]
    mail = smtp_sink.wait_for(lambda m: m.recipients == [ben.email]).message
    assert mail["Subject"] == "Due soon: Send the contract (2026-03-04 09:00)"
    assert "is due at 2026-03-04 09:00" in mail.get_content()

    clock.move_to(in_hours(48) + timedelta(minutes=1), tick=False)
    with deliver():
        assert sweep.sweep_once()["task-reminders"] == 1
    clock.move_to(in_hours(96), tick=False)
    assert reminders.send_due() == 0

    assert reminded(task) == ["before", "overdue"]
    assert notes(ben)[-1] == "Overdue: Send the contract"
    assert [m.message["Subject"] for m in smtp_sink.messages if m.recipients == [ben.email]] == [
        "Due soon: Send the contract (2026-03-04 09:00)",
        "Overdue: Send the contract",
    ]
    assert notes(ana) == []


def test_a_task_due_sooner_than_the_reminder_time_gets_only_the_overdue_one(people, clock):
    task = new_task(people["ana"], due_at=in_hours(10))
    assert task.next_reminder_at == in_hours(10)
    clock.move_to(in_hours(10), tick=False)
    assert reminders.send_due() == 1
    assert reminded(task) == ["overdue"]


def test_a_late_sweep_sends_only_what_is_still_true(people, clock):
    task = new_task(people["ana"], due_at=in_hours(48))
    clock.move_to(in_hours(50), tick=False)
    assert reminders.send_due() == 1
    assert reminders.send_due() == 0
    assert reminded(task) == ["overdue"]


def test_done_and_cancelled_tasks_are_not_reminded(people, clock):
    ana = people["ana"]
    done = new_task(ana, due_at=in_hours(30))
    cancelled = new_task(ana, due_at=in_hours(30))
    services.complete(ana, done.pk)
    services.cancel(ana, cancelled.pk)
    clock.move_to(in_hours(40), tick=False)
    assert reminders.send_due() == 0


def test_a_new_holder_is_reminded_again(people, clock):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, user_id=ben.pk, due_at=in_hours(48))
    clock.move_to(in_hours(30), tick=False)
    assert reminders.send_due() == 1
    services.assign(ana, task.pk, user_id=ana.pk)
    clock.move_to(in_hours(49), tick=False)
    assert reminders.send_due() == 1
    task.refresh_from_db()
    assert reminded(task) == ["before", "overdue"]
    assert [n for n in notes(ana) if n.startswith(("Due", "Overdue"))] == [
        "Overdue: Send the revised quote"
    ]


def test_an_external_participant_is_reminded_by_mail(people, clock, deliver, smtp_sink):
    with deliver():
        new_task(people["ana"], title="Sign", external_email=PARTNER, due_at=in_hours(48))
    clock.move_to(in_hours(24), tick=False)
    with deliver():
        assert reminders.send_due() == 1
    mail = smtp_sink.wait_for(lambda m: m.message["Subject"].startswith("Due soon")).message
    assert mail["To"] == PARTNER
    assert "reply to this e-mail" in mail.get_content()


def test_a_queue_task_reminds_every_member_of_the_team(people, team, clock):
    task = new_task(people["ana"], team_id=team.pk, title="Call back", due_at=in_hours(5))
    clock.move_to(in_hours(5), tick=False)
    assert reminders.send_due() == 1
    told = Notification.objects.filter(task=task, text="Overdue: Call back")
    assert set(told.values_list("user__username", flat=True)) == {"ana", "ben", "cho"}


def test_two_sweeps_at_once_send_a_reminder_once(transactional_db, time_machine):
    time_machine.move_to(START, tick=False)
    owner = factories.user(Role.SALES, username="owner", team=factories.TeamFactory(name="T"))
    tasks = [new_task(owner, title=f"Task {n}", due_at=in_hours(30)) for n in range(5)]
    time_machine.move_to(in_hours(6), tick=False)
    start = threading.Barrier(2, timeout=30)

    def sweep_now():
        start.wait()
        return reminders.send_due()

    outcomes = OwnConnections().run(sweep_now, sweep_now)

    assert sum(outcomes) == 5, outcomes
    for task in tasks:
        assert reminded(task) == ["before"]


def test_the_daily_digest_comes_once_a_day_instead_of_mail_per_task(
    people, team, clock, deliver, smtp_sink
):
    ana, ben = people["ana"], people["ben"]
    services.set_daily_digest(ben, True)
    with deliver():
        late = new_task(ana, title="Late one", user_id=ben.pk, due_at=in_hours(1))
        new_task(ana, title="Later one", user_id=ben.pk, due_at=in_hours(72))
        new_task(ana, title="In the queue", team_id=team.pk)
    assert not [m for m in smtp_sink.messages if m.recipients == [ben.email]]
    assert "Ana gave you a task: Late one" in notes(ben)

    clock.move_to(in_hours(2), tick=False)  # 11:00 in Seoul
    with deliver():
        assert reminders.send_due() == 1  # the overdue one: in the app only
        assert reminders.send_digests() == 1
        assert reminders.send_digests() == 0
    assert reminded(late) == ["overdue"]
    [digest] = [m.message for m in smtp_sink.messages if m.recipients == [ben.email]]
    assert digest["Subject"] == "Your tasks for 2026-03-02"
    text = digest.get_content()
    assert text.index("Late one") < text.index("Later one") < text.index("In the queue")

    clock.move_to(START + timedelta(hours=22), tick=False)  # 07:00 the next morning
    assert reminders.send_digests() == 0
    clock.move_to(START + timedelta(hours=23), tick=False)  # 08:00
    assert reminders.send_digests() == 1
    assert TaskMailSettings.objects.get(user=ben).last_digest_on.isoformat() == "2026-03-03"


def test_no_digest_is_sent_when_there_is_nothing_to_do(people, clock):
    services.set_daily_digest(people["ben"], True)
    assert reminders.send_digests() == 0
    assert TaskMailSettings.objects.get(user=people["ben"]).last_digest_on is not None
