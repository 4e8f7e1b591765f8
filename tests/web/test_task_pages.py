"""The pages of task threads: my work, a task and its actions, a new task, the task list, the
team view, notifications, the Tasks panel of record pages, and the external participant's page.

Every action goes through the views and must change what it says; bad input, a stale version
or a lost claim must change nothing.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from trellis.core.models import AuditEvent, Role
from trellis.mail.models import OutboundMessage
from trellis.process import external, services
from trellis.process.models import (
    ExternalLink,
    ExternalLinkUse,
    Notification,
    Task,
    TaskAttachment,
    TaskEvent,
    TaskMailSettings,
    TaskType,
    Thread,
)
from trellis.support import intake

from .. import factories
from .conftest import form_data

pytestmark = pytest.mark.django_db

# 09:00 in Seoul on a Monday.
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
PARTNER = "jisoo@partner.co.kr"
HTMX = {"HTTP_HX_REQUEST": "true"}
_TOKEN = re.compile(re.escape(external.LINK_PATH.format(token="")[:-1]) + r"([A-Za-z0-9_-]+)/")


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def people(team, clock):
    """Two sales colleagues and a support agent in one team, a read-only user, and someone
    in another team."""

    def person(role, username, first_name, **extra):
        return factories.user(
            role,
            username=username,
            first_name=first_name,
            email=f"{username}@staff.example.com",
            **extra,
        )

    return {
        "ana": person(Role.SALES, "ana", "Ana", team=team),
        "ben": person(Role.SALES, "ben", "Ben", team=team),
        "cho": person(Role.SUPPORT, "cho", "Cho", team=team),
        "viewer": person(Role.READ_ONLY, "viewer", "Vera", team=team),
        "busan": person(Role.SALES, "busan", "Dae", team=factories.TeamFactory(name="Busan")),
    }


def in_hours(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def new_task(actor, **data) -> Task:
    values = {"title": "Send the revised quote", **data}
    if not {"user_id", "team_id", "external_email"} & set(values):
        values["user_id"] = actor.pk
    return services.create_task(actor, values)


def page(task: Task) -> str:
    return reverse("process:task-detail", args=[task.pk])


def action(task: Task, name: str) -> str:
    return reverse(f"process:task-{name}", args=[task.pk])


def kinds(task: Task) -> list[str]:
    return list(
        TaskEvent.objects.filter(task=task).order_by("at", "id").values_list("kind", flat=True)
    )


def stored(task: Task) -> dict:
    """What the database holds of a task and its thread, to show nothing changed."""
    return {
        "task": Task.objects.filter(pk=task.pk).values().get(),
        "thread": Thread.objects.filter(pk=task.thread_id).values().get(),
        "tasks": Task.objects.count(),
        "events": TaskEvent.objects.count(),
        "files": TaskAttachment.objects.count(),
        "links": ExternalLink.objects.count(),
        "audit": AuditEvent.objects.filter(
            content_type=ContentType.objects.get_for_model(Task)
        ).count(),
    }


def mail_to(address: str) -> list[OutboundMessage]:
    return [m for m in OutboundMessage.objects.order_by("id") if address in m.to]


def token_for(task: Task) -> str:
    """The participant's link token in the last e-mail about the task."""
    return _TOKEN.search(mail_to(task.external_email)[-1].text).group(1)


def link_url(token: str, name: str = "link", *args) -> str:
    return reverse(f"process:{name}", args=[token, *args])


# The address of the participant's page is the one e-mails carry.


def test_the_participants_page_is_where_the_links_point():
    assert reverse("process:link", args=["abc"]) == external.LINK_PATH.format(token="abc")


# My work.


def test_my_work_shows_my_tasks_the_queue_and_what_i_handed_on(login, people, team, time_machine):
    ana, ben = people["ana"], people["ben"]
    late = new_task(ana, title="Call the customer back", due_at=in_hours(2))
    mine = new_task(ana, title="Prepare the demo", due_at=in_hours(48), priority="high")
    handed = new_task(ana, title="Check the discount", user_id=ben.pk)
    queued = new_task(ben, title="Answer the tender", team_id=team.pk)
    new_task(ben, title="Ben's own work")
    time_machine.move_to(in_hours(3), tick=False)
    response = login(ana).get(reverse("process:my-work"))

    assert response.status_code == 200
    parts = {s["key"]: [t.pk for t in s["part"].tasks] for s in response.context["sections"]}
    assert parts == {
        "overdue": [late.pk],
        "open": [mine.pk],
        "queue": [queued.pk],
        "handed_on": [handed.pk],
    }
    text = response.text
    for words in ("Call the customer back", "Prepare the demo", "Check the discount"):
        assert words in text
    assert "Ben's own work" not in text
    assert action(queued, "claim") in text
    assert action(mine, "claim") not in text
    assert "overdue" in text
    assert 'name="daily_digest"' in text


def test_the_navigation_counts_my_overdue_tasks_and_unread_notifications(
    login, people, time_machine
):
    ana, ben = people["ana"], people["ben"]
    new_task(ana, title="Late one", due_at=in_hours(1))
    new_task(ben, title="For Ana", user_id=ana.pk)
    time_machine.move_to(in_hours(2), tick=False)
    text = login(ana).get(reverse("home")).text
    assert f'href="{reverse("process:my-work")}"' in text
    assert re.search(r'class="nav-work[^"]*">My work <span class="nav-count overdue-count"', text)
    assert re.search(r'href="/notifications/">Notifications <span class="nav-count"[^>]*>1<', text)


def test_the_daily_digest_is_switched_on_and_off_on_my_work(login, people):
    client = login(people["ana"])
    response = client.post(reverse("process:digest"), {"daily_digest": "on"})
    assert response.status_code == 302
    assert TaskMailSettings.objects.get(user=people["ana"]).daily_digest
    page_ = client.get(reverse("process:my-work"))
    assert page_.context["digest_form"]["daily_digest"].value() is True
    client.post(reverse("process:digest"), {})
    assert not TaskMailSettings.objects.get(user=people["ana"]).daily_digest


def _queries_for_my_work(client) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("process:my-work"))
    assert response.status_code == 200
    return len(captured)


def test_my_work_costs_the_same_queries_for_few_and_many_tasks(login, people, team):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana)

    def some(n):
        for i in range(n):
            about = {"record_type": "account", "record_id": account.pk} if i % 2 else {}
            new_task(ana, title=f"Mine {i}", due_at=in_hours(24), **about)
            new_task(ana, title=f"Handed {i}", user_id=ben.pk, **about)
            new_task(ben, title=f"Queue {i}", team_id=team.pk, **about)

    client = login(ana)
    some(2)
    few = _queries_for_my_work(client)
    some(12)
    many = _queries_for_my_work(client)
    assert many == few


# The task list and the team view.


def test_the_task_list_has_tabs_and_filters_refreshed_by_htmx(login, people, team):
    ana = people["ana"]
    open_ = new_task(ana, title="Open one")
    waiting = new_task(ana, title="Waiting one")
    services.wait(ana, waiting.pk, note="the customer")
    client = login(ana)
    url = reverse("process:task-list")
    for view in ("mine", "overdue", "queue", "handed_on", "all"):
        assert client.get(url, {"view": view}).status_code == 200
    partial = client.get(
        url, {"view": "all", "status": "waiting"}, HTTP_HX_TARGET="task-results", **HTMX
    )
    assert partial.status_code == 200
    assert "<html" not in partial.text
    assert "Waiting one" in partial.text and "Open one" not in partial.text
    assert "HX-Target" in partial["Vary"]
    bad = client.get(url, {"view": "nonsense", "status": "bogus", "page": "-1"})
    assert bad.status_code == 200 and bad.context["view"] == "all"
    assert open_.title in bad.text


def test_the_team_view_counts_open_and_overdue_work_per_person(login, people, team, time_machine):
    ana, ben = people["ana"], people["ben"]
    new_task(ana, title="Ana late", due_at=in_hours(1))
    new_task(ana, title="Ana later", due_at=in_hours(72))
    new_task(ana, title="Ben's", user_id=ben.pk)
    new_task(ana, title="In the queue", team_id=team.pk, due_at=in_hours(1))
    time_machine.move_to(in_hours(2), tick=False)
    client = login(ben)
    response = client.get(reverse("process:team-work"))
    assert response.status_code == 200
    load = response.context["load"]
    counts = {m.user.username: (m.open, m.overdue) for m in load.members}
    assert counts["ana"] == (2, 1) and counts["ben"] == (1, 0)
    assert (load.queue_open, load.queue_overdue) == (1, 1)
    overdue_link = f"{reverse('process:task-list')}?assignee={ana.pk}&amp;state=overdue"
    assert overdue_link in response.text

    listed = client.get(reverse("process:task-list"), {"assignee": ana.pk, "state": "overdue"})
    assert [t.title for t in listed.context["page"].items] == ["Ana late"]
    assert "Tasks Ana holds" in listed.text
    queue = client.get(reverse("process:task-list"), {"queue": team.pk, "state": "open"})
    assert [t.title for t in queue.context["page"].items] == ["In the queue"]
    assert "Tasks waiting in the Seoul sales queue" in queue.text

    other = client.get(reverse("process:team-work"), {"team": people["busan"].team_id})
    assert [m.user.username for m in other.context["load"].members] == ["busan"]


def test_someone_in_no_team_picks_one(login, people, team):
    loner = factories.user(Role.SALES, username="loner", team=None)
    response = login(loner).get(reverse("process:team-work"))
    assert response.status_code == 200
    assert response.context["load"] is None
    assert "You belong to no team." in response.text


# Notifications.


def test_the_inbox_lists_the_newest_first_and_marks_them_read(login, people):
    ana, ben = people["ana"], people["ben"]
    first = new_task(ana, title="First for Ben", user_id=ben.pk)
    new_task(ana, title="Second for Ben", user_id=ben.pk)
    client = login(ben)
    response = client.get(reverse("process:notifications"))
    assert response.status_code == 200
    texts = [n.text for n in response.context["page"].items]
    assert texts == ["Ana gave you a task: Second for Ben", "Ana gave you a task: First for Ben"]
    assert response.text.count("unread-badge") == 2

    note = Notification.objects.get(task=first, user=ben)
    opened = client.post(reverse("process:notification-open", args=[note.pk]))
    assert opened.status_code == 302 and opened["Location"] == page(first)
    note.refresh_from_db()
    assert note.read_at == START

    client.post(reverse("process:notifications-read"))
    assert not Notification.objects.filter(user=ben, read_at__isnull=True).exists()
    # Someone else's notification is not found.
    assert login(ana).post(reverse("process:notification-open", args=[note.pk])).status_code == 404


# A new task.


def test_a_new_task_about_a_record_starts_a_thread(login, people):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana, name="주식회사 한빛")
    client = login(ana)
    url = f"{reverse('process:task-create')}?record_type=account&record_id={account.pk}"
    form_page = client.get(url)
    assert form_page.status_code == 200
    assert "주식회사 한빛" in form_page.text
    response = client.post(
        url,
        {
            "title": "Check the discount",
            "description": "Is 12% within policy?",
            "assignee_kind": "user",
            "user": ben.pk,
            "due_at": "2026-03-04T18:00",
            "priority": "high",
        },
    )
    assert response.status_code == 302
    task = Task.objects.get()
    assert response["Location"] == page(task)
    assert (task.owner, task.priority, task.thread.record) == (ben, "high", account)
    assert task.due_at == datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # 18:00 in Seoul


def test_a_new_task_for_a_team_or_an_external_participant(login, people, team):
    client = login(people["ana"])
    url = reverse("process:task-create")
    queued = client.post(
        url, {"title": "Queue it", "assignee_kind": "team", "team": team.pk, "priority": "low"}
    )
    assert queued.status_code == 302
    outside = client.post(
        url,
        {
            "title": "Confirm the delivery",
            "assignee_kind": "external",
            "external_email": PARTNER,
            "external_name": "박지수",
            "language": "ko",
            "priority": "normal",
        },
    )
    assert outside.status_code == 302
    task = Task.objects.get(title="Confirm the delivery")
    assert (task.assignee_kind, task.external_email, task.language) == ("external", PARTNER, "ko")
    assert ExternalLink.objects.filter(task=task).count() == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"title": "", "assignee_kind": "user"}, "This field is required."),
        ({"title": "Late", "due_at": "2026-03-01T09:00"}, "The due time is in the past."),
        ({"title": "No one", "assignee_kind": "user", "user": ""}, "Choose a user."),
        (
            {"title": "Ours", "assignee_kind": "external", "external_email": "x@trellis.local"},
            "address of Trellis itself",
        ),
    ],
)
def test_a_bad_new_task_is_refused_and_nothing_is_written(login, people, settings, data, message):
    settings.MAIL_DOMAIN = "trellis.local"
    ana = people["ana"]
    values = {"assignee_kind": "user", "user": ana.pk, "priority": "normal", **data}
    response = login(ana).post(reverse("process:task-create"), values)
    assert response.status_code == 422
    assert message in response.text
    assert response.context["form"]["title"].value() == values["title"]
    assert not Task.objects.exists() and not Thread.objects.exists()


def test_a_task_about_a_record_one_may_not_see_cannot_be_started(login, people):
    deal = factories.opportunity(people["ana"])
    client = login(people["ben"])  # sales see their own deals only
    url = f"{reverse('process:task-create')}?record_type=opportunity&record_id={deal.pk}"
    assert client.get(url).status_code == 404
    assert client.post(url, {"title": "x", "assignee_kind": "user"}).status_code == 404
    bogus = f"{reverse('process:task-create')}?record_type=nonsense&record_id=1"
    assert client.get(bogus).status_code == 404
    assert not Task.objects.exists()


def test_the_next_task_of_an_open_thread(login, people):
    ana = people["ana"]
    first = new_task(ana, title="First")
    client = login(ana)
    url = f"{reverse('process:task-create')}?thread={first.thread_id}"
    assert "The next task of the thread" in client.get(url).text
    response = client.post(
        url, {"title": "Second", "assignee_kind": "user", "user": ana.pk, "priority": "normal"}
    )
    assert response.status_code == 302
    assert Task.objects.get(title="Second").thread_id == first.thread_id


def test_a_finished_thread_takes_no_new_task(login, people):
    ana = people["ana"]
    first = new_task(ana)
    services.complete(ana, first.pk, thread_finished=True)
    url = f"{reverse('process:task-create')}?thread={first.thread_id}"
    response = login(ana).post(
        url, {"title": "One more", "assignee_kind": "user", "user": ana.pk, "priority": "normal"}
    )
    assert response.status_code == 409
    assert "This thread is finished; start a new one." in response.text
    assert response.context["form"]["title"].value() == "One more"
    assert Task.objects.count() == 1


# The task page.


def test_the_task_page_shows_the_task_its_thread_and_its_actions(login, people, team):
    ana = people["ana"]
    review = TaskType.objects.create(code="review", name="Review", name_ko="검토")
    deal = factories.opportunity(ana, name="ERP 연동")
    first = new_task(
        ana,
        title="Draft the offer",
        record_type="opportunity",
        record_id=deal.pk,
        task_type_id=review.pk,
        due_at=in_hours(30),
        priority="urgent",
        description="Use the **new** price list.",
    )
    services.comment(ana, first.pk, "Remember the discount rule.")
    services.assign(ana, first.pk, team_id=team.pk, note="Whoever is free")
    services.claim(ana, first.pk)
    services.complete(ana, first.pk, next_step={"title": "Approve the offer", "user_id": ana.pk})
    second = Task.objects.get(handed_from=first)

    response = login(ana).get(page(first))
    assert response.status_code == 200
    text = response.text
    for words in (
        "Draft the offer",
        "Use the **new** price list.",
        "ERP 연동",
        reverse("crm:opportunity-detail", args=[deal.pk]),
        "Review",
        "urgent",
        "Remember the discount rule.",
        "Whoever is free",
        "Handed on:",
        "took it from",
        "Handed on with the next step.",
        "Approve the offer",
        page(second),
    ):
        assert words in text, words
    assert [step["task"] for step in response.context["steps"]] == [first, second]
    # A done task offers no more actions.
    assert action(first, "complete") not in text

    open_page = login(ana).get(page(second)).text
    for name in ("complete", "comment", "attach", "reassign", "edit", "cancel", "wait", "start"):
        assert action(second, name) in open_page, name
    assert "What is the next step?" in open_page


def test_the_task_page_speaks_korean(login, people):
    ana = people["ana"]
    task = new_task(ana)
    client = login(ana)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ko"
    for url in (
        page(task),
        reverse("process:my-work"),
        reverse("process:task-list"),
        reverse("process:task-create"),
        reverse("process:team-work"),
        reverse("process:notifications"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert '<html lang="ko">' in response.text


def test_an_invisible_task_is_not_found_and_nothing_happens(login, people):
    ana, ben = people["ana"], people["ben"]
    deal = factories.opportunity(ana)
    task = new_task(ana, record_type="opportunity", record_id=deal.pk)
    attachment = services.attach(
        ana, task.pk, filename="a.txt", content_type="text/plain", data=b"x"
    )
    before = stored(task)
    client = login(ben)
    assert client.get(page(task)).status_code == 404
    url = reverse("process:task-attachment", args=[task.pk, attachment.pk])
    assert client.get(url).status_code == 404
    for name, data in [
        ("claim", {}),
        ("start", {"version": task.version}),
        ("comment", {"body": "hi"}),
        ("complete", {"outcome": "finished", "version": task.version}),
        ("send-link", {}),
    ]:
        assert client.post(action(task, name), data).status_code == 404, name
    assert client.get(reverse("process:task-detail", args=[999_999])).status_code == 404
    assert stored(task) == before


def test_read_only_users_see_the_task_but_cannot_act(login, people):
    ana, viewer = people["ana"], people["viewer"]
    task = new_task(ana)
    before = stored(task)
    client = login(viewer)
    response = client.get(page(task))
    assert response.status_code == 200
    assert action(task, "complete") not in response.text
    assert action(task, "comment") not in response.text
    assert client.post(action(task, "comment"), {"body": "hi"}).status_code == 403
    assert client.post(action(task, "start"), {"version": task.version}).status_code == 403
    assert client.post(action(task, "claim")).status_code == 403
    assert client.get(reverse("process:task-create")).status_code == 403
    assert stored(task) == before
    assert (
        f'href="{reverse("process:task-create")}"'
        not in client.get(reverse("process:my-work")).text
    )


# Actions.


def test_start_wait_and_cancel(login, people):
    ana = people["ana"]
    task = new_task(ana)
    client = login(ana)
    assert client.post(action(task, "start"), {"version": 1}).status_code == 302
    assert (
        client.post(action(task, "wait"), {"note": "the customer", "version": 2}).status_code == 302
    )
    task.refresh_from_db()
    assert task.status == "waiting"
    waited = TaskEvent.objects.filter(task=task, kind="status").last()
    assert (waited.body, waited.data) == ("the customer", {"from": "in_progress", "to": "waiting"})
    response = client.post(action(task, "cancel"), {"note": "no longer needed", "version": 3})
    assert response.status_code == 302
    task.refresh_from_db()
    assert task.status == "cancelled"
    assert "no longer needed" in client.get(page(task)).text


def test_a_stale_action_is_a_conflict_that_shows_the_task_as_it_is(login, people):
    ana = people["ana"]
    task = new_task(ana)
    services.start(ana, task.pk, version=1)  # meanwhile, in another tab
    before = stored(task)
    client = login(ana)
    response = client.post(action(task, "cancel"), {"note": "not needed", "version": 1})
    assert response.status_code == 409
    assert "Someone else changed this task after you opened it." in response.text
    form = response.context["cancel_form"]
    assert form["note"].value() == "not needed"
    assert form["version"].value() == "2"
    assert response.context["task"].status == "in_progress"
    assert stored(task) == before


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("start", {}),
        ("wait", {"note": "the customer"}),
        ("cancel", {"note": "not needed"}),
        ("reassign", {"assignee_kind": "team", "note": "over to you"}),
        ("edit", {"title": "Send the final quote", "priority": "high"}),
        ("complete", {"outcome": "finished", "note": "all done"}),
    ],
)
def test_every_versioned_action_refuses_a_stale_or_missing_version(login, people, team, name, data):
    ana = people["ana"]
    task = new_task(ana)
    services.edit(ana, task.pk, {"priority": "low"}, version=1)  # meanwhile, in another tab
    data = {**data, "team": team.pk} if name == "reassign" else data
    before = stored(task)
    client = login(ana)
    stale = client.post(action(task, name), {**data, "version": 1})
    assert stale.status_code == 409
    assert "Someone else changed this task after you opened it." in stale.text
    assert stale.context[f"{name}_form"]["version"].value() == "2"
    missing = client.post(action(task, name), data)
    assert missing.status_code == 422
    assert stored(task) == before


def test_reassign_to_a_colleague_and_to_an_external_participant(login, people):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana)
    client = login(ana)
    response = client.post(
        action(task, "reassign"),
        {"assignee_kind": "user", "user": ben.pk, "note": "You know them", "version": 1},
    )
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.owner, task.version) == (ben, 2)
    handoff = TaskEvent.objects.get(task=task, kind="assigned")
    assert (handoff.body, handoff.data["from"]["name"], handoff.data["to"]["name"]) == (
        "You know them",
        "Ana",
        "Ben",
    )
    response = client.post(
        action(task, "reassign"),
        {
            "assignee_kind": "external",
            "external_email": PARTNER,
            "external_name": "박지수",
            "version": 2,
        },
    )
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.assignee_kind, task.external_email) == ("external", PARTNER)
    assert token_for(task)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"assignee_kind": "user", "user": ""}, "Choose a user."),
        ({"assignee_kind": "team", "team": ""}, "Choose a team."),
        ({"assignee_kind": "external", "external_email": "nope"}, "Enter a valid email address."),
        ({"assignee_kind": "user", "user": "999999"}, "Select a valid choice."),
    ],
)
def test_a_bad_reassignment_keeps_the_form_and_changes_nothing(login, people, data, message):
    ana = people["ana"]
    task = new_task(ana)
    before = stored(task)
    response = login(ana).post(
        action(task, "reassign"), {"note": "Over to you", "version": 1, **data}
    )
    assert response.status_code == 422
    assert message in response.text
    assert response.context["reassign_form"]["note"].value() == "Over to you"
    assert stored(task) == before


def test_a_task_is_not_given_to_someone_who_may_not_see_its_record(login, people):
    ana, cho = people["ana"], people["cho"]
    deal = factories.opportunity(ana)  # support may see no deals
    task = new_task(ana, record_type="opportunity", record_id=deal.pk)
    before = stored(task)
    response = login(ana).post(
        action(task, "reassign"), {"assignee_kind": "user", "user": cho.pk, "version": 1}
    )
    assert response.status_code == 422
    assert "may not see the record this thread is about" in response.text
    assert stored(task) == before


def test_comments_internal_and_shared_with_the_participant(login, people):
    ana = people["ana"]
    task = new_task(ana, external_email=PARTNER)
    client = login(ana)
    assert 'name="public"' in client.get(page(task)).text
    client.post(action(task, "comment"), {"body": "Internal: push for the 20th."})
    response = client.post(
        action(task, "comment"), {"body": "도면을 확인해 주세요.", "public": "on"}
    )
    assert response.status_code == 302
    internal, shared = TaskEvent.objects.filter(task=task, kind="commented").order_by("id")
    assert (internal.public, shared.public) == (False, True)
    assert response["Location"] == f"{page(task)}#event-{shared.pk}"
    mails = mail_to(PARTNER)
    assert "도면을 확인해 주세요." in mails[-1].text
    assert not any("push for the 20th" in m.text for m in mails)


def test_an_empty_comment_is_refused(login, people):
    ana = people["ana"]
    task = new_task(ana)
    before = stored(task)
    response = login(ana).post(action(task, "comment"), {"body": "   "})
    assert response.status_code == 422
    assert "This field is required." in response.text or "Write a comment." in response.text
    assert stored(task) == before


def test_attach_a_file_and_download_it(login, people):
    ana = people["ana"]
    task = new_task(ana)
    client = login(ana)
    upload = _file("견적서.pdf", b"%PDF-1.4 quote")
    response = client.post(action(task, "attach"), {"file": upload})
    assert response.status_code == 302
    attachment = TaskAttachment.objects.get(task=task)
    assert attachment.filename == "견적서.pdf"
    url = reverse("process:task-attachment", args=[task.pk, attachment.pk])
    assert url in client.get(page(task)).text
    download = client.get(url)
    assert download.status_code == 200
    assert b"".join(download.streaming_content if download.streaming else [download.content]) == (
        b"%PDF-1.4 quote"
    )
    assert download["Content-Type"] == "application/octet-stream"
    assert "attachment" in download["Content-Disposition"]
    assert download["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("big.pdf", b"x" * 11, "The file is larger than 10\xa0bytes."),
        ("run.bat", b"echo", "Files of this type are not accepted."),
    ],
)
def test_a_file_over_the_limit_or_of_a_forbidden_type_is_refused(
    login, people, settings, name, data, message
):
    settings.TRELLIS = {
        **settings.TRELLIS,
        "MAIL": {**settings.TRELLIS["MAIL"], "MAX_ATTACHMENT_BYTES": 10},
    }
    ana = people["ana"]
    task = new_task(ana)
    before = stored(task)
    response = login(ana).post(action(task, "attach"), {"file": _file(name, data)})
    assert response.status_code == 422
    assert message in response.text
    assert stored(task) == before


def _file(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def test_claim_from_the_queue_and_a_lost_race_names_who_has_it(login, people, team):
    ana, ben, cho = people["ana"], people["ben"], people["cho"]
    task = new_task(ana, team_id=team.pk)
    assert 'action="{}"'.format(action(task, "claim")) in login(ben).get(page(task)).text
    response = login(ben).post(action(task, "claim"))
    assert response.status_code == 302 and response["Location"] == page(task)
    task.refresh_from_db()
    assert (task.assignee_kind, task.owner) == ("user", ben)
    before = stored(task)
    lost = login(cho).post(action(task, "claim"))
    assert lost.status_code == 409
    assert "Ben has already taken this task." in lost.text
    assert stored(task) == before


def test_complete_with_the_next_step_for_a_colleague(login, people):
    ana, ben = people["ana"], people["ben"]
    task = new_task(ana, title="Draft the offer")
    response = login(ana).post(
        action(task, "complete"),
        {
            "outcome": "next",
            "next_title": "Approve the offer",
            "next_description": "Within policy?",
            "next_assignee_kind": "user",
            "next_user": ben.pk,
            "next_due_at": "2026-03-03T18:00",
            "next_priority": "high",
            "note": "Draft attached.",
            "version": 1,
        },
    )
    assert response.status_code == 302
    task.refresh_from_db()
    following = Task.objects.get(handed_from=task)
    assert (task.status, following.owner, following.priority, following.thread_id) == (
        "done",
        ben,
        "high",
        task.thread_id,
    )
    assert following.due_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    assert Notification.objects.filter(user=ben, task=following).exists()
    assert "Approve the offer" in login(ana).get(response["Location"]).text


def test_complete_with_the_next_step_for_an_external_participant(login, people):
    ana = people["ana"]
    task = new_task(ana)
    response = login(ana).post(
        action(task, "complete"),
        {
            "outcome": "next",
            "next_title": "Confirm the delivery date",
            "next_assignee_kind": "external",
            "next_external_email": PARTNER,
            "next_external_name": "박지수",
            "next_language": "ko",
            "next_priority": "normal",
            "version": 1,
        },
    )
    assert response.status_code == 302
    following = Task.objects.get(handed_from=task)
    assert (following.external_email, following.language) == (PARTNER, "ko")
    assert external.open_link(token_for(following)).task == following


def test_complete_saying_the_thread_is_finished(login, people):
    ana = people["ana"]
    task = new_task(ana)
    response = login(ana).post(action(task, "complete"), {"outcome": "finished", "version": 1})
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.status, task.thread.status) == ("done", "finished")
    assert "thread finished" in login(ana).get(page(task)).text


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"outcome": "none"}, "outcome", "Select a valid choice."),
        ({"outcome": "next", "next_title": ""}, "next_title", "Say what is to be done next."),
        (
            {
                "outcome": "next",
                "next_title": "Too late",
                "next_assignee_kind": "user",
                "next_due_at": "2026-03-01T10:00",
            },
            "next_due_at",
            "The due time is in the past.",
        ),
        (
            {"outcome": "next", "next_title": "Whom?", "next_assignee_kind": "team"},
            "next_team",
            "Choose a team.",
        ),
    ],
)
def test_a_completion_without_a_valid_next_step_changes_nothing(
    login, people, data, field, message
):
    """The task's type asks for the next step, so "no next step" is not offered."""
    ana = people["ana"]
    review = TaskType.objects.create(code="review", name="Review", requires_next_step=True)
    task = new_task(ana, task_type_id=review.pk)
    before = stored(task)
    values = {"next_user": ana.pk, "next_priority": "normal", "version": 1, **data}
    response = login(ana).post(action(task, "complete"), values)
    assert response.status_code == 422
    form = response.context["complete_form"]
    assert message in " ".join(form.errors[field])
    assert message in response.text
    assert stored(task) == before


def test_a_type_that_requires_the_next_step_does_not_offer_nothing_more(login, people):
    ana = people["ana"]
    review = TaskType.objects.create(code="review", name="Review", requires_next_step=True)
    required = new_task(ana, task_type_id=review.pk)
    free = new_task(ana)
    client = login(ana)
    offered = client.get(page(required)).context["complete_form"].fields["outcome"].choices
    assert [value for value, _label in offered] == ["next", "finished"]
    offered = client.get(page(free)).context["complete_form"].fields["outcome"].choices
    assert [value for value, _label in offered] == ["next", "finished", "none"]


def test_a_thread_with_open_tasks_is_not_finished(login, people):
    ana = people["ana"]
    task = new_task(ana)
    new_task(ana, thread_id=task.thread_id, title="Still open")
    before = stored(task)
    response = login(ana).post(action(task, "complete"), {"outcome": "finished", "version": 1})
    assert response.status_code == 422
    assert "1 other task of this thread is still open." in response.text
    assert stored(task) == before


def test_a_stale_completion_is_a_conflict(login, people):
    ana = people["ana"]
    task = new_task(ana)
    services.edit(ana, task.pk, {"priority": "high"}, version=1)
    before = stored(task)
    response = login(ana).post(
        action(task, "complete"),
        {
            "outcome": "next",
            "next_title": "Next",
            "next_assignee_kind": "user",
            "next_user": ana.pk,
            "next_priority": "normal",
            "version": 1,
        },
    )
    assert response.status_code == 409
    assert response.context["complete_form"]["next_title"].value() == "Next"
    assert stored(task) == before


def test_a_queue_task_is_claimed_before_it_is_completed(login, people, team):
    ana = people["ana"]
    task = new_task(ana, team_id=team.pk)
    text = login(ana).get(page(task)).text
    assert "claim it to work on it" in text
    assert action(task, "complete") not in text
    before = stored(task)
    response = login(ana).post(action(task, "complete"), {"outcome": "finished", "version": 1})
    assert response.status_code == 409
    assert "claim it first" in response.text
    assert stored(task) == before


def test_edit_an_overdue_task_without_touching_its_due_time(login, people, time_machine):
    ana = people["ana"]
    task = new_task(ana, due_at=in_hours(1))
    time_machine.move_to(in_hours(5), tick=False)
    client = login(ana)
    form = client.get(page(task)).context["edit_form"]
    response = client.post(action(task, "edit"), form_data(form, title="Send the final quote"))
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.title, task.due_at, task.version) == ("Send the final quote", in_hours(1), 2)
    moved = client.post(
        action(task, "edit"), form_data(form, due_at="2026-03-01T08:00", version="2")
    )
    assert moved.status_code == 422
    assert "The due time is in the past." in moved.text


def test_links_are_listed_revoked_and_sent_again(login, people):
    ana = people["ana"]
    task = new_task(ana, external_email=PARTNER)
    token = token_for(task)
    external.open_link(token, ip="203.0.113.9")
    client = login(ana)
    text = client.get(page(task)).text
    [link] = ExternalLink.objects.filter(task=task)
    assert PARTNER in text and "last used" in text and "1 use" in text
    revoke = reverse("process:link-revoke", args=[link.pk])
    assert revoke in text
    response = client.post(revoke)
    assert response.status_code == 302 and response["Location"] == f"{page(task)}#links"
    link.refresh_from_db()
    assert link.revoked_at == START
    assert "revoked" in client.get(page(task)).text

    assert client.post(action(task, "send-link")).status_code == 302
    assert ExternalLink.objects.filter(task=task, revoked_at__isnull=True).count() == 1
    assert external.open_link(token_for(task)).task == task


def test_a_new_link_only_for_an_external_participant(login, people):
    ana = people["ana"]
    task = new_task(ana)
    response = login(ana).post(action(task, "send-link"))
    assert response.status_code == 409
    assert "This task has no external participant." in response.text
    assert not ExternalLink.objects.exists()


# The Tasks panel on record pages.


def test_a_record_page_shows_its_threads_and_who_is_responsible(login, people):
    ana, ben = people["ana"], people["ben"]
    account = factories.account(ana, name="주식회사 한빛")
    first = new_task(ana, title="Check credit", record_type="account", record_id=account.pk)
    services.complete(ana, first.pk, next_step={"title": "Send the contract", "user_id": ben.pk})
    response = login(ana).get(reverse("crm:account-detail", args=[account.pk]))
    assert response.status_code == 200
    text = response.text
    panel = text[text.index('id="tasks"') :]
    for words in (
        "Check credit",
        "Send the contract",
        "Who is responsible",
        "Responsible",
        "Accountable",
        f"{reverse('process:task-create')}?record_type=account&amp;record_id={account.pk}",
    ):
        assert words in panel, words
    assert panel.index("Check credit") < panel.index("Send the contract")
    raci = dict((str(label), [p.name for p in parties]) for label, _m, parties in _matrix(response))
    assert raci["Responsible"] == ["Ben"]
    assert raci["Accountable"] == ["Ana"]


def _matrix(response):
    for context in response.context:
        if "matrix" in context:
            return context["matrix"]
    raise AssertionError("no Tasks panel")


def test_the_support_case_page_shows_the_tasks_panel(login, people):
    cho = people["cho"]
    case, _key = intake.open_case(
        channel="email",
        subject="VPN 접속 오류",
        body="접속이 안 됩니다.",
        requester_email="minji@hanbit.example",
        requester_name="김민지",
    )
    new_task(cho, title="Ask the network team", record_type="case", record_id=case.pk)
    response = login(cho).get(reverse("support:case-detail", args=[case.pk]))
    assert response.status_code == 200
    assert "Ask the network team" in response.text
    assert f"record_type=case&amp;record_id={case.pk}" in response.text


def test_the_panel_shows_only_tasks_one_may_see(login, people):
    ana = people["ana"]
    account = factories.account(ana)
    new_task(ana, title="Visible work", record_type="account", record_id=account.pk)
    marketer = factories.user(Role.MARKETING, username="marketer")
    # Marketing sees accounts and tasks: the panel is there; read-only users are not offered
    # "Add a task".
    text = login(people["viewer"]).get(reverse("crm:account-detail", args=[account.pk])).text
    assert "Visible work" in text
    assert reverse("process:task-create") not in text
    assert (
        "Visible work" in login(marketer).get(reverse("crm:account-detail", args=[account.pk])).text
    )


# The external participant's page.


@pytest.fixture
def handed_out(people):
    """Ana gives the partner a task; returns it and the token from the partner's e-mail."""

    def give(**data):
        task = new_task(
            people["ana"],
            title="Confirm the delivery date",
            description="For order 2026-0042.",
            external_email=PARTNER,
            external_name="박지수",
            **data,
        )
        return task, token_for(task)

    return give


def test_the_participant_reads_only_what_is_shared_with_them(client, people, handed_out):
    ana = people["ana"]
    task, token = handed_out()
    services.comment(ana, task.pk, "Internal: push for the 20th.")
    services.comment(ana, task.pk, "도면을 확인해 주세요.", public=True)
    services.attach(ana, task.pk, filename="plan.pdf", content_type="application/pdf", data=b"1")
    drawing = services.attach(
        ana, task.pk, filename="drawing.pdf", content_type="application/pdf", data=b"2", public=True
    )
    response = client.get(link_url(token))
    assert response.status_code == 200
    text = response.text
    for words in (
        "Confirm the delivery date",
        "For order 2026-0042.",
        "도면을 확인해 주세요.",
        "drawing.pdf",
    ):
        assert words in text, words
    for hidden in ("push for the 20th", "plan.pdf"):
        assert hidden not in text
    assert response["Cache-Control"] == "private, no-store"
    assert response["Referrer-Policy"] == "same-origin"
    download = client.get(link_url(token, "link-attachment", drawing.pk))
    assert download.status_code == 200 and download.content == b"2"
    hidden = TaskAttachment.objects.get(filename="plan.pdf")
    assert client.get(link_url(token, "link-attachment", hidden.pk)).status_code == 404
    uses = list(ExternalLinkUse.objects.order_by("id").values_list("action", "outcome"))
    assert uses == [("view", "ok"), ("download", "ok"), ("download", "ok")]


def test_the_participant_comments_attaches_and_finishes_the_thread(client, people, handed_out):
    ana = people["ana"]
    task, token = handed_out()
    response = client.post(link_url(token, "link-comment"), {"body": "내일 확인하겠습니다."})
    assert response.status_code == 302 and response["Location"] == link_url(token)
    assert "Your comment was added." in client.get(link_url(token)).text
    response = client.post(link_url(token, "link-attach"), {"file": _file("납기.xlsx", b"xls")})
    assert response.status_code == 302
    response = client.post(
        link_url(token, "link-complete"), {"outcome": "finished", "note": "확인했습니다."}
    )
    assert response.status_code == 302
    task.refresh_from_db()
    assert (task.status, task.completed_by, task.thread.status) == ("done", None, "finished")
    events = [
        (e.kind, e.external_email)
        for e in TaskEvent.objects.filter(task=task).order_by("id")
        if e.external_email
    ]
    assert events == [
        ("link_used", PARTNER),
        ("commented", PARTNER),
        ("attached", PARTNER),
        ("completed", PARTNER),
    ]
    # Ana sees it all on the task's page.
    text = login_as(client, ana).get(page(task)).text
    for words in ("내일 확인하겠습니다.", "납기.xlsx", "확인했습니다.", "The thread is finished."):
        assert words in text, words


def login_as(client, user):
    client.force_login(user)
    return client


def test_the_participants_next_step_goes_back_to_who_gave_them_the_task(client, people, handed_out):
    ana = people["ana"]
    task, token = handed_out()
    response = client.post(
        link_url(token, "link-complete"),
        {
            "outcome": "next",
            "next_title": "납기일 3월 20일로 계약서 수정",
            "next_due_at": "2026-03-05T10:00",
        },
    )
    assert response.status_code == 302
    following = Task.objects.get(handed_from=task)
    assert (following.owner, following.due_at) == (ana, datetime(2026, 3, 5, 1, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"outcome": "next", "next_title": ""}, "Say what is to be done next."),
        (
            {"outcome": "next", "next_title": "x", "next_due_at": "2026-03-01T10:00"},
            "The due time is in the past.",
        ),
        ({"outcome": "maybe"}, "Select a valid choice."),
    ],
)
def test_a_bad_completion_by_the_participant_changes_nothing(client, handed_out, data, message):
    task, token = handed_out()
    before = stored(task)
    response = client.post(link_url(token, "link-complete"), data)
    assert response.status_code == 422
    assert message in response.text
    after = stored(task)
    assert after["task"] == before["task"] and after["tasks"] == before["tasks"]


def test_a_file_from_the_participant_over_the_limit_is_refused(client, handed_out, settings):
    settings.TRELLIS = {
        **settings.TRELLIS,
        "MAIL": {**settings.TRELLIS["MAIL"], "MAX_ATTACHMENT_BYTES": 10},
    }
    _task, token = handed_out()
    response = client.post(link_url(token, "link-attach"), {"file": _file("big.pdf", b"x" * 11)})
    assert response.status_code == 422
    assert "The file is larger than" in response.text
    response = client.post(link_url(token, "link-attach"), {"file": _file("run.exe", b"MZ")})
    assert response.status_code == 422
    assert "Files of this type are not accepted." in response.text
    assert not TaskAttachment.objects.exists()


def test_an_expired_link_gets_a_clear_page(client, handed_out, time_machine):
    task, token = handed_out()
    time_machine.move_to(START + timedelta(days=30, seconds=1), tick=False)
    response = client.get(link_url(token))
    assert response.status_code == 410
    assert "This link has expired." in response.text
    assert client.post(link_url(token, "link-comment"), {"body": "hi"}).status_code == 410
    task.refresh_from_db()
    assert task.status == "open"
    assert list(ExternalLinkUse.objects.values_list("outcome", flat=True)) == [
        "expired",
        "expired",
    ]


def test_a_revoked_link_gets_a_clear_page(client, people, handed_out):
    task, token = handed_out()
    [link] = ExternalLink.objects.filter(task=task)
    services.revoke_link(people["ana"], link.pk)
    response = client.get(link_url(token))
    assert response.status_code == 410
    assert "This link was revoked." in response.text
    response = client.post(link_url(token, "link-complete"), {"outcome": "finished"})
    assert response.status_code == 410
    task.refresh_from_db()
    assert task.status == "open"


def test_a_tampered_link_and_no_link_get_the_same_page(client, handed_out):
    task, token = handed_out()
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    answers = [client.get(link_url(bad)) for bad in (tampered, "x" * 43, "short")]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text[a.text.index("<main") :] for a in answers}) == 1
    assert "This link is not valid." in answers[0].text
    assert (
        client.post(link_url(tampered, "link-complete"), {"outcome": "finished"}).status_code == 404
    )
    task.refresh_from_db()
    assert task.status == "open"
    assert not ExternalLinkUse.objects.exists()


def test_a_link_used_after_completion_reads_but_does_not_act(client, handed_out):
    task, token = handed_out()
    client.post(link_url(token, "link-complete"), {"outcome": "none"})
    task.refresh_from_db()
    assert task.status == "done"
    response = client.get(link_url(token))
    assert response.status_code == 200
    assert "This task is done." in response.text
    assert link_url(token, "link-complete") not in response.text
    again = client.post(link_url(token, "link-comment"), {"body": "one more thing"})
    assert again.status_code == 409
    assert "This task is already closed." in again.text
    assert TaskEvent.objects.filter(task=task, kind="commented").count() == 0


def test_the_participants_page_speaks_the_tasks_language(client, handed_out):
    _task, token = handed_out(language="ko")
    korean = client.get(link_url(token)).text
    assert '<html lang="ko">' in korean
    assert 'name="language" value="ko"' in korean
    # The answer to a form comes in the language of the page it was on.
    refused = client.post(link_url(token, "link-comment"), {"body": "", "language": "ko"})
    assert refused.status_code == 422
    assert '<html lang="ko">' in refused.text
    # The language switch wins over the task's language.
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    assert '<html lang="en">' in client.get(link_url(token)).text


def test_a_flood_of_link_requests_is_slowed_down(client, handed_out, monkeypatch):
    _task, token = handed_out()
    monkeypatch.setattr(external, "PER_CLIENT", (2, 600))
    assert client.get(link_url(token)).status_code == 200
    assert client.get(link_url(token)).status_code == 200
    refused = client.get(link_url(token))
    assert refused.status_code == 429
    assert refused["Retry-After"] == "600"
