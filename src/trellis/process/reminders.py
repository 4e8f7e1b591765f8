"""Reminders before a task is due and when it is overdue, and the daily digest.

Each open task with a due time carries ``next_reminder_at``: when the sweep next has something
to send for it ("due soon", TASKS["REMIND_BEFORE_HOURS"] before the due time, then "overdue" at
the due time). The sweep reads only rows whose ``next_reminder_at`` has come, by its index;
it locks each one (``SKIP LOCKED`` on PostgreSQL) and moves ``next_reminder_at`` on with a
conditional update in the same transaction as the reminder it queues, so two sweeps at once, or
a sweep killed half-way, never send one twice. A task that is due sooner than the "due soon"
time when it is given out gets only the overdue reminder: its holder has just been told. A
sweep that comes late sends only the reminder that is still true.

Users who chose the daily digest (``TaskMailSettings``) get their reminders in the app only, and
once a day, from TASKS["DIGEST_HOUR"] local time, one e-mail listing their overdue and open
tasks and their team's queue; the day of the last digest is claimed by a conditional update, so
there is never a second one that day.
"""

import datetime as dt
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from trellis.core import clock, sweep
from trellis.core.models import User
from trellis.mail.inbound import lock_skip_locked

from . import notify, queries
from .models import Task, TaskEvent, TaskMailSettings
from .queries import OPEN_STATUSES

BEFORE = "before"
OVERDUE = "overdue"
DIGEST_ROWS = 50


def _remind_before() -> timedelta:
    return timedelta(hours=settings.TRELLIS["TASKS"]["REMIND_BEFORE_HOURS"])


def schedule(task: Task, now: dt.datetime) -> dt.datetime | None:
    """When the next reminder for ``task`` is due, from what was sent already."""
    if task.due_at is None or task.status not in OPEN_STATUSES:
        return None
    if task.reminded_overdue_at is not None:
        return None
    before = task.due_at - _remind_before()
    if task.reminded_before_at is None and before > now:
        return before
    return task.due_at


def send_due(limit: int = 200) -> int:
    """Send the reminders that are due; returns how many were sent."""
    now = clock.now()
    due = list(
        Task.objects.filter(next_reminder_at__lte=now)
        .order_by("next_reminder_at", "pk")
        .values_list("pk", "next_reminder_at")[:limit]
    )
    sent = 0
    for pk, planned in due:
        with transaction.atomic():
            task = lock_skip_locked(Task.objects.filter(pk=pk, next_reminder_at=planned)).first()
            if task is None:
                continue  # another sweep has it, or it changed since
            kind = OVERDUE if task.due_at is not None and now >= task.due_at else BEFORE
            if kind == OVERDUE:
                task.reminded_overdue_at = now
            else:
                task.reminded_before_at = now
            following = schedule(task, now)
            claimed = Task.objects.filter(pk=pk, next_reminder_at=planned).update(
                next_reminder_at=following,
                reminded_before_at=task.reminded_before_at,
                reminded_overdue_at=task.reminded_overdue_at,
            )
            if not claimed or task.status not in OPEN_STATUSES or task.due_at is None:
                continue
            told = notify.reminder(task, kind)
            TaskEvent.objects.create(
                task=task,
                thread_id=task.thread_id,
                kind=TaskEvent.Kind.REMINDER,
                at=now,
                data={"reminder": kind, "to": told},
            )
            sent += 1
    return sent


sweep.register("task-reminders", send_due)


def send_digests(limit: int = 200) -> int:
    """Send today's digests that are due; returns how many were sent."""
    now = clock.now()
    local = timezone.localtime(now)
    if local.hour < settings.TRELLIS["TASKS"]["DIGEST_HOUR"]:
        return 0
    today = local.date()
    not_today = Q(last_digest_on__isnull=True) | Q(last_digest_on__lt=today)
    due = list(
        TaskMailSettings.objects.filter(not_today, daily_digest=True)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for user_id in due:
        with transaction.atomic():
            claimed = TaskMailSettings.objects.filter(
                not_today, pk=user_id, daily_digest=True
            ).update(last_digest_on=today)
            user = User.objects.filter(pk=user_id, is_active=True).first()
            if not claimed or user is None:
                continue
            sent += notify.digest(user, *_digest_lists(user, now)) is not None
    return sent


def _digest_lists(user: User, now: dt.datetime) -> tuple[list[Task], list[Task], list[Task]]:
    """The user's overdue tasks, their other open tasks, and their team's queue."""
    working = queries.visible_tasks(user).filter(status__in=OPEN_STATUSES)
    due_first = (F("due_at").asc(nulls_last=True), "id")
    mine = working.filter(assignee_kind=Task.Assignee.USER, owner=user).order_by(*due_first)
    overdue = list(mine.filter(due_at__lt=now)[:DIGEST_ROWS])
    others = list(mine.exclude(due_at__lt=now)[:DIGEST_ROWS])
    queue: list[Task] = []
    if user.team_id is not None:
        queue = list(
            working.filter(assignee_kind=Task.Assignee.TEAM, team_id=user.team_id).order_by(
                *due_first
            )[:DIGEST_ROWS]
        )
    return overdue, others, queue


sweep.register("task-digests", send_digests)
