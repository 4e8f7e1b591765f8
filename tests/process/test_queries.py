"""What people read: my work, a team's workload, the threads of a record, who is responsible."""

import pytest

from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.models import Role, RoleRight, Scope
from trellis.process import queries, services
from trellis.process.queries import Party

from .. import factories
from .conftest import PARTNER, in_hours, new_task


def titles(section) -> list[str]:
    return [task.title for task in section.tasks]


def test_my_work_shows_open_overdue_handed_on_and_the_queue(people, team, clock):
    ana, ben = people["ana"], people["ben"]
    new_task(ana, title="Due later", due_at=in_hours(50))
    new_task(ana, title="Due soon", due_at=in_hours(2))
    new_task(ana, title="No due time")
    late = new_task(ana, title="Late", due_at=in_hours(1))
    new_task(ana, title="For Ben", user_id=ben.pk)
    new_task(ana, title="For the partner", external_email=PARTNER)
    new_task(ben, title="Queued", team_id=team.pk)
    services.complete(ana, new_task(ana, title="Finished").pk)
    new_task(ben, title="Ben's own")
    clock.move_to(in_hours(1.5), tick=False)

    work = queries.my_work(ana)

    assert titles(work.open) == ["Due soon", "Due later", "No due time"]
    assert titles(work.overdue) == ["Late"]
    assert queries.is_overdue(late)
    assert titles(work.handed_on) == ["For Ben", "For the partner"]
    assert titles(work.queue) == ["Queued"]
    assert not any(s.has_more for s in (work.open, work.overdue, work.handed_on, work.queue))
    assert titles(queries.my_work(people["busan"]).queue) == []


def test_my_work_is_bounded(people, monkeypatch):
    monkeypatch.setattr(queries, "MY_WORK_ROWS", 2)
    for n in range(3):
        new_task(people["ana"], title=f"Task {n}")
    work = queries.my_work(people["ana"])
    assert (len(work.open.tasks), work.open.has_more) == (2, True)


def test_a_teams_workload_per_person(people, team, clock):
    ana, ben = people["ana"], people["ben"]
    new_task(ana, user_id=ben.pk, due_at=in_hours(1))
    new_task(ana, user_id=ben.pk, due_at=in_hours(10))
    new_task(ana, due_at=in_hours(10))
    new_task(ana, team_id=team.pk, due_at=in_hours(1))
    new_task(ana, team_id=team.pk)
    new_task(ana, user_id=people["busan"].pk)
    clock.move_to(in_hours(2), tick=False)

    load = queries.team_workload(ana, team.pk)

    assert [(m.user.username, m.open, m.overdue) for m in load.members] == [
        ("ana", 1, 0),
        ("ben", 2, 1),
        ("cho", 0, 0),
    ]
    assert (load.queue_open, load.queue_overdue) == (2, 1)
    with pytest.raises(NotFound):
        queries.team_workload(ana, 999_999)


def test_the_threads_of_a_record_in_order_and_only_for_those_who_see_it(people):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana)
    first = new_task(ana, title="First", record_type="account", record_id=account.pk)
    new_task(ana, title="Second", thread_id=first.thread_id, user_id=ben.pk)
    other = new_task(ana, title="Other thread", record_type="account", record_id=account.pk)
    new_task(ana, title="Elsewhere")

    views = queries.threads_for_record(ben, "account", account.pk)
    assert [(v.thread.pk, [t.title for t in v.tasks]) for v in views] == [
        (first.thread_id, ["First", "Second"]),
        (other.thread_id, ["Other thread"]),
    ]
    assert [t.title for t in queries.task_queryset(ben, record_type="account")] == [
        "Other thread",
        "Second",
        "First",
    ]

    # Whoever may not see the account sees neither it nor the work on it.
    with pytest.raises(NotFound):
        queries.threads_for_record(people["busan"], "account", account.pk)
    with pytest.raises(NotFound):
        queries.thread(people["busan"], first.thread_id)
    assert queries.thread(ben, first.thread_id).thread == first.thread
    with pytest.raises(ValidationFailed):
        queries.threads_for_record(ben, "spaceship", 1)


def test_the_own_scope_shows_only_the_tasks_one_holds(people, team):
    junior = Role.objects.create(code="junior", name="Junior")
    RoleRight.objects.create(
        role=junior, object_type="task", scope=Scope.OWN, can_create=True, can_edit=True
    )
    ana = people["ana"]
    trainee = factories.user("junior", username="trainee", team=team)
    mine = new_task(ana, user_id=trainee.pk)
    new_task(ana, title="Not mine")
    assert list(queries.task_queryset(trainee)) == [mine]


def test_who_is_responsible_for_a_record(people, team):
    ana, ben, cho = people["ana"], people["ben"], people["cho"]
    account = factories.account(ana)
    first = new_task(ana, user_id=ben.pk, record_type="account", record_id=account.pk)
    services.assign(ben, first.pk, external_email=PARTNER, external_name="박지수")
    services.comment(cho, first.pk, "I called them too.")
    services.assign(ana, first.pk, user_id=cho.pk)
    queued = new_task(cho, thread_id=first.thread_id, team_id=team.pk)

    raci = queries.responsibility(ben, "account", account.pk)

    assert raci.responsible == [
        Party("user", cho.pk, "Cho", cho.email),
        Party("team", team.pk, team.name),
    ]
    assert raci.accountable == [Party("user", ana.pk, "Ana", ana.email)]
    assert raci.consulted == [
        Party("user", ben.pk, "Ben", ben.email),
        Party("external", None, "박지수", PARTNER),
    ]
    assert raci.informed == []
    assert queued.assignee_kind == "team"


def test_notifications_are_ones_own(people):
    ana, ben = people["ana"], people["ben"]
    new_task(ana, user_id=ben.pk, title="One")
    new_task(ana, user_id=ben.pk, title="Two")
    assert [n.text for n in queries.notifications(ben)] == [
        "Ana gave you a task: Two",
        "Ana gave you a task: One",
    ]
    first = queries.notifications(ben).last()
    assert services.mark_read(ben, first.pk) == 1
    assert queries.notifications(ben, unread_only=True).count() == 1
    with pytest.raises(NotFound):
        services.mark_read(ana, first.pk)
    assert services.mark_read(ben) == 1
    assert not queries.notifications(ana).exists()


def test_a_page_of_a_task_list(people):
    for n in range(3):
        new_task(people["ana"], title=f"Task {n}")
    page = queries.tasks(people["ana"], view="mine", page=1, page_size=2)
    assert ([t.title for t in page.items], page.has_next) == (["Task 0", "Task 1"], True)


def test_tasks_of_one_person_or_one_queue_open_or_overdue(people, team, clock):
    ana, ben = people["ana"], people["ben"]
    late = new_task(ana, title="Late", due_at=in_hours(1))
    new_task(ana, title="Later", due_at=in_hours(50))
    services.complete(ana, new_task(ana, title="Done").pk)
    new_task(ana, title="Ben's", user_id=ben.pk)
    queued = new_task(ana, title="Queued", team_id=team.pk, due_at=in_hours(1))
    clock.move_to(in_hours(2), tick=False)

    def titles_of(**filters):
        return [t.title for t in queries.task_queryset(ben, **filters)]

    assert titles_of(assignee_id=ana.pk) == ["Done", "Later", "Late"]
    assert titles_of(assignee_id=ana.pk, state="open") == ["Late", "Later"]
    assert titles_of(assignee_id=ana.pk, state="overdue") == ["Late"]
    assert titles_of(queue_id=team.pk, state="overdue") == ["Queued"]
    assert titles_of(state="overdue") == ["Late", "Queued"]
    assert {late.pk, queued.pk} == {t.pk for t in queries.task_queryset(ana, state="overdue")}
    with pytest.raises(ValidationFailed) as refused:
        queries.task_queryset(ben, state="someday")
    assert list(refused.value.errors) == ["state"]


def test_the_records_of_threads_in_one_query_per_kind_and_only_those_one_sees(people):
    ana = people["ana"]
    account = factories.account(ana, name="Hanbit")
    deal = factories.opportunity(ana, name="ERP")
    about_account = new_task(ana, record_type="account", record_id=account.pk)
    about_deal = new_task(ana, record_type="opportunity", record_id=deal.pk)
    loose = new_task(ana)
    threads = [about_account.thread, about_deal.thread, loose.thread]

    assert queries.thread_records(ana, threads) == {
        about_account.thread_id: account,
        about_deal.thread_id: deal,
    }
    # Ben sees the team's accounts, but only his own deals.
    assert queries.thread_records(people["ben"], threads) == {about_account.thread_id: account}
