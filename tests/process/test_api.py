"""The task endpoints: answers that follow the schema, the services' rules as HTTP answers
(401, 403, 404, 409, 422 as problem details), and lists whose cost does not grow with the page."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from trellis.core.models import Role
from trellis.process import api
from trellis.process.models import ExternalLink, Task, TaskType

from .. import factories
from ..api.conftest import Api, assert_problem, token_client
from .conftest import PARTNER, START, in_hours, new_task


def iso(at) -> str:
    return at.isoformat()


@pytest.fixture
def ana(people):
    return token_client(people["ana"])


def test_create_read_and_list_tasks(people, ana):
    account = factories.account(people["ana"], name="Hanbit")
    created = ana.post(
        "tasks/",
        {
            "title": "Prepare the quote",
            "user_id": people["ben"].pk,
            "record_type": "account",
            "record_id": account.pk,
            "due_at": iso(in_hours(24)),
            "priority": "high",
        },
    )
    assert created.status_code == 201, created.content
    body = api.TaskOut.model_validate(created.json()).model_dump()
    assert body | {"id": 0, "thread_id": 0, "assigned_at": None, "created_at": None} == body | {
        "id": 0,
        "thread_id": 0,
        "assigned_at": None,
        "created_at": None,
        "thread_title": "Prepare the quote",
        "record_type": "account",
        "record_id": account.pk,
        "assignee_kind": "user",
        "assignee_id": people["ben"].pk,
        "assignee_name": "Ben",
        "status": "open",
        "priority": "high",
        "overdue": False,
        "version": 1,
    }
    assert ana.get(f"tasks/{body['id']}").json() == created.json()

    listed = ana.get("tasks/", view="handed_on").json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert ana.get("tasks/", record_type="account", record_id=account.pk).json()["items"]
    assert_problem(ana.get("tasks/", view="everything"), 422, "view")
    assert_problem(ana.get("tasks/", colour="red"), 422, "colour")


def test_a_page_of_tasks_costs_the_same_queries_whatever_its_size(people, ana):
    def cost() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert ana.get("tasks/").status_code == 200
        return len(queries)

    account = factories.account(people["ana"])
    new_task(people["ana"], record_type="account", record_id=account.pk)
    cost()  # the token and the record types are looked up once, then remembered
    small = cost()
    for n in range(10):
        new_task(people["ana"], title=f"Task {n}", record_type="account", record_id=account.pk)
        new_task(people["ana"], title=f"Free {n}", external_email=PARTNER)
    assert cost() == small


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"title": "x"}, ["assignee"]),
        ({"title": "x", "user_id": 1, "due_at": "2020-01-01T00:00:00+09:00"}, ["due_at"]),
        ({"title": "x", "user_id": 1, "due_at": "2026-04-01T00:00:00"}, ["due_at"]),
        ({"title": "", "user_id": 1}, ["title"]),
        ({"title": "x", "user_id": 1, "colour": "red"}, ["colour"]),
        ({"title": "x", "external_email": "nope"}, ["external_email"]),
        ({"title": "x", "user_id": 1, "record_type": "spaceship", "record_id": 1}, ["record_type"]),
    ],
)
def test_bad_input_is_422_naming_the_field(people, ana, body, fields):
    if body.get("user_id") == 1:
        body["user_id"] = people["ana"].pk
    assert_problem(ana.post("tasks/", body), 422, *fields)
    assert not Task.objects.exists()


def test_the_actions_of_a_task(people, team, ana):
    ben = token_client(people["ben"])
    task = new_task(people["ana"], team_id=team.pk, due_at=in_hours(48))
    path = f"tasks/{task.pk}"

    assert ben.post(f"{path}/claim").json()["assignee_id"] == people["ben"].pk
    assert_problem(token_client(people["cho"]).post(f"{path}/claim"), 409)
    assert ben.post(f"{path}/start", {}).json()["status"] == "in_progress"
    waiting = ben.post(f"{path}/wait", {"note": "On legal", "version": 3}).json()
    assert (waiting["status"], waiting["version"]) == ("waiting", 4)
    stale = assert_problem(ben.post(f"{path}/start", {"version": 3}), 409)
    assert stale["current"]["status"] == "waiting"
    edited = ben.patch(path, {"priority": "urgent", "version": 4}).json()
    assert (edited["priority"], edited["title"], edited["version"]) == ("urgent", task.title, 5)
    assert_problem(ben.patch(path, {"priority": "urgent"}), 422, "version")

    comment = ben.post(f"{path}/comments", {"body": "Called them."})
    assert comment.status_code == 201
    assert api.TaskEventOut.model_validate(comment.json()).body == "Called them."

    done = ben.post(
        f"{path}/complete",
        {
            "note": "Sent.",
            "next_step": {
                "title": "Check the answer",
                "user_id": people["ana"].pk,
                "due_at": iso(in_hours(30)),
            },
        },
    )
    assert done.status_code == 200, done.content
    result = api.TaskCompletedOut.model_validate(done.json())
    assert (result.task.status, result.next_task.handed_from_id) == ("done", task.pk)
    assert result.next_task.thread_id == task.thread_id
    assert_problem(ben.post(f"{path}/cancel", {}), 409)

    events = ben.get(f"{path}/events").json()["items"]
    assert [e["kind"] for e in events] == [
        "created",
        "claimed",
        "status",
        "status",
        "edited",
        "commented",
        "completed",
    ]
    api.TaskEventPage.model_validate(ben.get(f"{path}/events").json())

    following = result.next_task.id
    reassigned = ana.post(
        f"tasks/{following}/reassign", {"external_email": PARTNER, "note": "Ask them."}
    ).json()
    assert (reassigned["assignee_kind"], reassigned["external_email"]) == ("external", PARTNER)
    [link] = ana.get(f"tasks/{following}/links").json()
    assert (link["email"], link["active"], link["uses"]) == (PARTNER, True, 0)
    revoked = ana.post(f"task-links/{link['id']}/revoke").json()
    assert (revoked["active"], revoked["revoked_at"]) == (False, iso(START))
    fresh = ana.post(f"tasks/{following}/links")
    assert fresh.status_code == 201 and fresh.json()["active"]
    assert ExternalLink.objects.filter(task_id=following).count() == 2
    cancelled = ana.post(f"tasks/{following}/cancel", {"note": "Not needed."}).json()
    assert cancelled["status"] == "cancelled"


def test_completing_a_type_that_requires_the_next_step(people, ana):
    review = TaskType.objects.create(
        code="review", name="Review", name_ko="검토", requires_next_step=True
    )
    task = new_task(people["ana"], task_type_id=review.pk)
    assert_problem(ana.post(f"tasks/{task.pk}/complete", {}), 422, "next_step")
    past = {"title": "x", "user_id": people["ana"].pk, "due_at": iso(START - timedelta(hours=1))}
    assert_problem(
        ana.post(f"tasks/{task.pk}/complete", {"next_step": past}), 422, "next_step.due_at"
    )
    finished = ana.post(f"tasks/{task.pk}/complete", {"thread_finished": True}).json()
    assert (finished["task"]["status"], finished["next_task"]) == ("done", None)
    assert ana.get(f"threads/{task.thread_id}").json()["status"] == "finished"
    types = ana.get("task-types/").json()
    assert types == [
        {
            "id": review.pk,
            "code": "review",
            "name": "Review",
            "name_ko": "검토",
            "requires_next_step": True,
        }
    ]


def test_threads_responsibility_my_work_and_workload(people, team, ana):
    account = factories.account(people["ana"])
    first = new_task(
        people["ana"], user_id=people["ben"].pk, record_type="account", record_id=account.pk
    )
    new_task(people["ana"], thread_id=first.thread_id, team_id=team.pk)

    [thread] = ana.get(f"records/account/{account.pk}/threads").json()
    assert [t["id"] for t in api.ThreadOut.model_validate(thread).model_dump()["tasks"]] == [
        first.pk,
        first.pk + 1,
    ]
    raci = api.ResponsibilityOut.model_validate(
        ana.get(f"records/account/{account.pk}/responsibility").json()
    )
    assert [p.name for p in raci.responsible] == ["Ben", team.name]
    assert [p.name for p in raci.accountable] == ["Ana"]
    work = api.MyWorkOut.model_validate(token_client(people["ben"]).get("my-work").json())
    assert ([t.id for t in work.open.items], len(work.queue.items)) == ([first.pk], 1)
    load = api.TeamWorkloadOut.model_validate(ana.get(f"teams/{team.pk}/workload").json())
    assert [(m.name, m.open) for m in load.members] == [("Ana", 0), ("Ben", 1), ("Cho", 0)]
    assert load.queue_open == 1
    assert_problem(ana.get("records/spaceship/1/threads"), 422)
    assert_problem(token_client(people["busan"]).get(f"records/account/{account.pk}/threads"), 404)


def test_notifications(people, ana):
    ben = token_client(people["ben"])
    new_task(people["ana"], user_id=people["ben"].pk, title="One")
    page = api.NotificationPage.model_validate(ben.get("notifications/", unread="true").json())
    [note] = page.items
    assert note.text == "Ana gave you a task: One"
    assert_problem(ana.post(f"notifications/{note.id}/read"), 404)
    assert ben.post(f"notifications/{note.id}/read").json() == {"marked": 1}
    assert ben.post("notifications/read").json() == {"marked": 0}
    assert ben.get("notifications/", unread="true").json()["items"] == []


def test_who_may_call_what(people, ana):
    deal = factories.opportunity(people["ana"])
    hidden = new_task(people["ana"], record_type="opportunity", record_id=deal.pk)
    ben = token_client(people["ben"])
    for method, path, body in [
        ("get", f"tasks/{hidden.pk}", None),
        ("post", f"tasks/{hidden.pk}/start", {}),
        ("post", f"tasks/{hidden.pk}/comments", {"body": "hi"}),
        ("get", f"tasks/{hidden.pk}/events", None),
        ("get", f"records/opportunity/{deal.pk}/responsibility", None),
        ("get", "tasks/999999", None),
    ]:
        answer = (
            getattr(ben, method)(path, body) if body is not None else getattr(ben, method)(path)
        )
        assert_problem(answer, 404)

    reader = token_client(
        factories.user(Role.READ_ONLY, username="reader", team=people["ana"].team)
    )
    mine = new_task(people["ana"])
    assert reader.get(f"tasks/{mine.pk}").status_code == 200
    assert_problem(reader.post(f"tasks/{mine.pk}/start", {}), 403)
    assert_problem(reader.post("tasks/", {"title": "x", "user_id": people["ana"].pk}), 403)

    anonymous = Api(Client())
    for method, path in [("get", "tasks/"), ("post", "tasks/"), ("get", "my-work")]:
        answer = getattr(anonymous, method)(path)
        assert_problem(answer, 401)


def test_tasks_of_a_person_or_a_queue_and_overdue_ones(people, team, ana, clock):
    late = new_task(people["ana"], title="Late", due_at=in_hours(1))
    new_task(people["ana"], title="Later", due_at=in_hours(50))
    queued = new_task(people["ana"], title="Queued", team_id=team.pk)
    clock.move_to(in_hours(2), tick=False)

    def ids(**params):
        answer = ana.get("tasks/", **params)
        assert answer.status_code == 200, answer.content
        return [item.id for item in api.TaskPage.model_validate(answer.json()).items]

    assert ids(assignee_id=people["ana"].pk, state="overdue") == [late.pk]
    assert ids(assignee_id=people["ana"].pk, state="open") == [late.pk, late.pk + 1]
    assert ids(queue_id=team.pk) == [queued.pk]
    assert_problem(ana.get("tasks/", state="someday"), 422)


def test_the_daily_digest_is_chosen_through_the_api(people, ana):
    assert ana.get("my-work/mail").json() == {"daily_digest": False}
    assert ana.put("my-work/mail", {"daily_digest": True}).json() == {"daily_digest": True}
    assert ana.get("my-work/mail").json() == {"daily_digest": True}
    assert token_client(people["ben"]).get("my-work/mail").json() == {"daily_digest": False}
    assert_problem(ana.put("my-work/mail", {"daily_digest": "sometimes"}), 422)
    assert_problem(Api(Client()).get("my-work/mail"), 401)
