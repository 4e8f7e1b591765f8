"""Team queues: a task waits unassigned until a member claims it; exactly one member gets it."""

import threading
from collections.abc import Callable
from typing import Any

import pytest

from trellis.core.errors import Conflict, PermissionDenied
from trellis.core.models import Role, User
from trellis.process import queries, services
from trellis.process.models import Notification, Task, TaskEvent

from .. import factories
from ..concurrency import OwnConnections
from .conftest import history, new_task


def test_a_queue_task_waits_for_the_team_and_a_member_claims_it(people, team):
    ana, ben, cho = people["ana"], people["ben"], people["cho"]
    task = new_task(ana, team_id=team.pk, title="Call the new lead")
    assert (task.assignee_kind, task.owner, task.team) == ("team", None, team)
    told = set(Notification.objects.filter(task=task).values_list("user__username", flat=True))
    assert told == {"ben", "cho"}
    assert [t.pk for t in queries.my_work(ben).queue.tasks] == [task.pk]

    claimed = services.claim(ben, task.pk)

    assert (claimed.assignee_kind, claimed.owner, claimed.assigned_by, claimed.version) == (
        "user",
        ben,
        ben,
        2,
    )
    event = TaskEvent.objects.get(task=task, kind="claimed")
    assert (event.data["from"]["name"], event.data["to"]["name"]) == (team.name, "Ben")
    assert services.claim(ben, task.pk).version == 2
    with pytest.raises(Conflict, match="Ben has already taken this task"):
        services.claim(cho, task.pk)
    assert queries.my_work(cho).queue.tasks == []
    assert history(task) == ["created", "claimed"]


def test_only_members_of_the_team_may_claim(people, team):
    task = new_task(people["ana"], team_id=team.pk)
    with pytest.raises(PermissionDenied):
        services.claim(people["busan"], task.pk)
    with pytest.raises(Conflict):
        services.claim(people["ana"], new_task(people["ana"], user_id=people["ben"].pk).pk)


def test_two_members_claiming_at_once_leave_exactly_one_holder(transactional_db):
    team = factories.TeamFactory(name="Support")
    first = factories.user(Role.SUPPORT, username="first", team=team)
    second = factories.user(Role.SUPPORT, username="second", team=team)
    task = new_task(first, team_id=team.pk)
    start = threading.Barrier(2, timeout=30)

    def claim_as(user: User) -> Callable[[], Any]:
        def run():
            actor = User.objects.get(pk=user.pk)
            start.wait()
            return services.claim(actor, task.pk)

        return run

    for round_ in range(3):
        Task.objects.filter(pk=task.pk).update(assignee_kind="team", owner=None)
        outcomes = OwnConnections().run(claim_as(first), claim_as(second))

        winners = [o for o in outcomes if isinstance(o, Task)]
        losers = [o for o in outcomes if isinstance(o, Conflict)]
        assert (len(winners), len(losers)) == (1, 1), outcomes
        [winner], [loser] = winners, losers
        assert str(winner.owner) in loser.detail
        stored = Task.objects.get(pk=task.pk)
        assert (stored.assignee_kind, stored.owner_id) == ("user", winner.owner_id)
        assert TaskEvent.objects.filter(task=task, kind="claimed").count() == round_ + 1
