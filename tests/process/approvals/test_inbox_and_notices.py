"""The inbox reads its order and overdue marks from the assignments' own due times, kept in
step by every service that hands a step to someone; its counts stop at a cap. Approvers are
told by a task written in the transaction that asks them, or by the sweep if it is lost."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.utils.module_loading import import_string
from django_tasks_db.models import DBTaskResult

from trellis.core import sweep
from trellis.mail.models import OutboundMessage
from trellis.process.approvals import queries, services
from trellis.process.approvals.models import ApprovalAssignment, ApprovalStepRun
from trellis.process.models import Notification

from ...api.conftest import token_client
from .conftest import deal, define, fresh, step

SEOUL = ZoneInfo("Asia/Seoul")
TELL = "trellis.process.approvals.tasks.tell_approvers"


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SEOUL)


def rows(user) -> list[tuple[int, bool]]:
    return [(row.request_id, row.overdue) for row in queries.inbox(user)]


def test_order_and_overdue_marks_survive_escalation_and_reassignment(people, clock):
    p = people
    define(p["admin"], steps=[step(timeout_hours=1, escalation="manager")])
    first = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    clock.move_to(at(2026, 3, 3, 10, 30), tick=False)
    second = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assert rows(p["boss"]) == [(first.pk, False), (second.pk, False)]

    # 11:00: the first times out and goes to the boss's manager too, still due at 11:00.
    clock.move_to(at(2026, 3, 3, 11, 0), tick=False)
    assert services.fire_due_timers() == 1
    # The second is handed from the boss to the director, still due at 11:30.
    services.reassign(p["admin"], second.pk, p["boss"].pk, p["director"].pk)
    for assignment in ApprovalAssignment.objects.select_related("step_run"):
        assert assignment.due_at == assignment.step_run.due_at

    clock.move_to(at(2026, 3, 3, 11, 10), tick=False)
    assert rows(p["director"]) == [(first.pk, True), (second.pk, False)]
    assert rows(p["boss"]) == [(first.pk, True)]
    assert queries.inbox_counts(p["director"]) == {"waiting": 2, "overdue": 1}
    clock.move_to(at(2026, 3, 3, 11, 40), tick=False)
    assert rows(p["director"]) == [(first.pk, True), (second.pk, True)]

    services.approve(p["director"], first.pk)
    assert rows(p["boss"]) == []
    assert rows(p["director"]) == [(second.pk, True)]


def test_a_step_sent_back_and_a_delegate_get_the_new_due_time(people, clock):
    p = people
    define(
        p["admin"],
        steps=[
            step(timeout_hours=2),
            step(
                "Finance",
                approvers=[{"kind": "user", "user_id": p["finance"].pk}],
                timeout_hours=4,
                on_reject="back",
            ),
        ],
    )
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    services.approve(p["boss"], request.pk)
    [finance_row] = queries.inbox(p["finance"])
    assert finance_row.due_at == at(2026, 3, 3, 14, 0)

    services.set_delegation(
        p["boss"], p["director"].pk, at(2026, 3, 3, 11, 0), at(2026, 3, 5, 0, 0)
    )
    clock.move_to(at(2026, 3, 3, 13, 0), tick=False)
    services.reject(p["finance"], request.pk, comment="Check the terms")
    [row] = queries.inbox(p["director"])
    run = ApprovalStepRun.objects.get(request=request, status="pending")
    assert (run.index, run.seq, run.due_at) == (0, 3, at(2026, 3, 3, 15, 0))
    assert (row.request_id, row.due_at) == (request.pk, run.due_at)
    assert row.on_behalf_of_id == p["boss"].pk
    assert queries.inbox(p["boss"]) == []


def test_counts_stop_at_the_cap_and_say_so(people, monkeypatch):
    p = people
    define(p["admin"])
    for _n in range(3):
        services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    monkeypatch.setattr(queries, "COUNT_CAP", 2)
    assert queries.inbox_counts(p["boss"]) == {"waiting": 2, "overdue": 0}
    assert len(queries.inbox(p["boss"])) == 3

    inbox = token_client(p["boss"]).get("approvals/inbox").json()
    assert (inbox["waiting"], inbox["counts_capped_at"], len(inbox["items"])) == (2, 2, 3)
    client = Client()
    client.force_login(p["boss"])
    assert "2 or more wait for your decision" in client.get("/approvals/").content.decode()

    badge = render_to_string("approvals/_nav_item.html", {"url": "/approvals/", "count": 1000})
    assert ">999+</span>" in badge
    badge = render_to_string("approvals/_nav_item.html", {"url": "/approvals/", "count": 999})
    assert ">999</span>" in badge


@pytest.fixture
def queued(settings):
    """The task queue of production: a row per task, run by a worker."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def run_queued() -> None:
    """What a worker does with the queued approval notices, in this test's transaction."""
    for queued in DBTaskResult.objects.filter(task_path=TELL).order_by("enqueued_at"):
        arguments = queued.args_kwargs
        import_string(TELL).call(*arguments["args"], **arguments["kwargs"])
        queued.delete()


def told(user) -> tuple[int, int]:
    return (
        Notification.objects.filter(user=user).count(),
        OutboundMessage.objects.filter(to=[user.email]).count(),
    )


def test_approvers_are_told_by_a_task_written_with_the_decision(people, queued):
    p = people
    define(p["admin"], steps=[step(), step("Director", approvers=[{"kind": "managers_manager"}])])
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assert DBTaskResult.objects.filter(task_path=TELL).count() == 1
    assert told(p["boss"]) == (0, 0)

    run_queued()
    assert told(p["boss"]) == (1, 1)
    assert ApprovalAssignment.objects.get(user=p["boss"]).told_at is not None
    run = ApprovalStepRun.objects.get(request=request)
    assert services.tell_approvers(run.pk) == 0
    assert told(p["boss"]) == (1, 1)

    # Someone who has decided before the task runs is not told any more.
    services.approve(p["boss"], request.pk)
    services.approve(p["director"], request.pk)
    assert fresh(request).status == "approved"
    run_queued()
    assert told(p["director"]) == (0, 0)


def test_the_sweep_tells_approvers_whose_task_was_lost(people, clock, queued):
    p = people
    define(p["admin"])
    services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    DBTaskResult.objects.filter(task_path=TELL).delete()

    clock.move_to(at(2026, 3, 3, 10, 4), tick=False)
    assert sweep.sweep_once()["approval-notices"] == 0
    clock.move_to(at(2026, 3, 3, 10, 5), tick=False)
    assert sweep.sweep_once()["approval-notices"] == 1
    assert sweep.sweep_once()["approval-notices"] == 0
    assert told(p["boss"]) == (1, 1)


def test_a_decision_costs_a_bounded_number_of_statements(
    people, queued, django_assert_max_num_queries
):
    p = people
    approvers = [p["boss"], p["director"], p["finance"]]
    define(
        p["admin"],
        steps=[
            step(f"Step {n}", approvers=[{"kind": "user", "user_id": a.pk}])
            for n, a in enumerate(approvers, 1)
        ],
    )
    warm_up = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    for approver in approvers:
        services.approve(approver, warm_up.pk)
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    with django_assert_max_num_queries(15):
        services.approve(p["boss"], request.pk)
