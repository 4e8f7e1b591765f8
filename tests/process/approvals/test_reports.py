"""The approvals report on a known history made through the services: every figure, for people
who see all of it, part of it, or none of it; the alert threshold; bad periods."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from trellis.core.errors import NotFound
from trellis.core.models import AuditEvent, Role
from trellis.process.approvals import reports, services
from trellis.process.approvals.api_reports import ReportOut
from trellis.process.approvals.models import ApprovalProcess, ApprovalStepRun

from ... import factories
from ...api.conftest import assert_problem, token_client
from .conftest import deal, step

SEOUL = ZoneInfo("Asia/Seoul")
MARCH = {"start": "2026-03-01", "end": "2026-03-31"}


def at(month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=SEOUL)


@pytest.fixture
def history(people, clock):
    """Seven requests of a two-step process (manager, then finance):

    R6  27 Feb  approved (outside March)
    R1  3 Mar   manager 1 h, finance 2 h: approved
    R2  4 Mar   manager 2 h, finance rejects after 6 h
    R3  5 Mar   manager times out at 14:00, escalates to the director, who approves at 15:00
                (5 h); waits for finance; an override asked there and refused
    R4  6 Mar   an unlock asked and granted at the manager step, then recalled
    R5  9 Mar   waits for the manager past its due time; a cancel asked, not decided
    R7  10 Mar  by another seller, outside the boss's team: manager 4 h, finance 1 h
    """
    p = people
    admin, seller, boss, finance = p["admin"], p["seller"], p["boss"], p["finance"]
    other = factories.user(Role.SALES, username="other", manager=finance)
    process = services.save_process(
        admin,
        {
            "object_type": "opportunity",
            "code": "big-deal",
            "name": "Big deal approval",
            "entry_condition": "amount > 50000000.0",
            "steps": [
                step("Manager", timeout_hours=4, escalation="manager"),
                {"name": "Finance", "approvers": [{"kind": "user", "user_id": finance.pk}]},
            ],
        },
    )

    def submit(who, when):
        clock.move_to(when, tick=False)
        return services.submit(who, "opportunity", deal(who).pk)

    def then(when, action, *args, **kwargs):
        clock.move_to(when, tick=False)
        return action(*args, **kwargs)

    r6 = submit(seller, at(2, 27, 10))
    then(at(2, 27, 11), services.approve, boss, r6.pk)
    then(at(2, 27, 12), services.approve, finance, r6.pk)

    r1 = submit(seller, at(3, 3, 10))
    then(at(3, 3, 11), services.approve, boss, r1.pk)
    then(at(3, 3, 13), services.approve, finance, r1.pk)

    r2 = submit(seller, at(3, 4, 10))
    then(at(3, 4, 12), services.approve, boss, r2.pk)
    then(at(3, 4, 18), services.reject, finance, r2.pk, comment="Margin too thin")

    r3 = submit(seller, at(3, 5, 10))
    assert ApprovalStepRun.objects.get(request=r3).due_at == at(3, 5, 14)
    assert then(at(3, 5, 14), services.fire_due_timers) == 1
    then(at(3, 5, 15), services.approve, p["director"], r3.pk)
    override = then(at(3, 5, 16), services.request_exception, seller, r3.pk, "override", "Urgent")
    then(at(3, 5, 17), services.decide_exception, admin, override.pk, grant=False, note="No")

    r4 = submit(seller, at(3, 6, 10))
    unlock = then(at(3, 6, 10, 10), services.request_exception, seller, r4.pk, "unlock", "Typo")
    then(at(3, 6, 10, 20), services.decide_exception, admin, unlock.pk, grant=True)
    then(at(3, 6, 10, 30), services.recall, seller, r4.pk)

    r5 = submit(seller, at(3, 9, 10))
    then(at(3, 9, 11), services.request_exception, seller, r5.pk, "cancel", "Lost interest")

    r7 = submit(other, at(3, 10, 10))
    then(at(3, 10, 14), services.approve, finance, r7.pk)
    then(at(3, 10, 15), services.approve, finance, r7.pk)

    clock.move_to(at(3, 20, 12), tick=False)
    return {"process": process, "other": other, "requests": [r1, r2, r3, r4, r5, r6, r7]}


def march(user, process, granularity="month"):
    return reports.report(user, process, reports.period(MARCH["start"], MARCH["end"], granularity))


def figures(step: reports.StepReport) -> dict:
    return {
        "requests": step.requests,
        "runs": step.runs,
        "skipped": step.skipped,
        "decided": step.decided,
        "median": step.median_hours,
        "p90": step.p90_hours,
        "waiting": step.waiting,
        "timed_out": step.timed_out,
        "escalated": step.escalated,
        "exceptions": step.exception_count,
        "rate": step.exception_rate,
        "flagged": step.flagged,
    }


def kinds(rows: list[reports.KindCount]) -> dict:
    return {row.kind: (row.count, row.rate) for row in rows}


def test_every_figure_for_someone_who_sees_everything(people, history):
    process = history["process"]
    services.set_exception_alert(people["admin"], process.pk, 30)
    report = march(people["admin"], ApprovalProcess.objects.get(pk=process.pk))

    assert report.requests == 6
    assert {s.status: s.count for s in report.statuses} == {
        "pending": 2,
        "approved": 2,
        "rejected": 1,
        "recalled": 1,
        "cancelled": 0,
    }
    assert (report.exception_count, report.exception_rate) == (3, 50.0)
    assert kinds(report.exceptions) == {
        "override": (1, 16.7),
        "unlock": (1, 16.7),
        "cancel": (1, 16.7),
        "clone": (0, 0.0),
        "change_terms": (0, 0.0),
    }
    manager, finance = report.steps
    assert (manager.name, finance.name) == ("Manager", "Finance")
    # Decided manager steps took 1, 2, 5 (escalated) and 4 hours.
    assert figures(manager) == {
        "requests": 6,
        "runs": 6,
        "skipped": 0,
        "decided": 4,
        "median": 3.0,
        "p90": 4.7,
        "waiting": 1,
        "timed_out": 2,
        "escalated": 1,
        "exceptions": 2,
        "rate": 33.3,
        "flagged": True,
    }
    assert kinds(manager.exceptions)["unlock"] == (1, 16.7)
    assert kinds(manager.exceptions)["cancel"] == (1, 16.7)
    # Finance took 2, 6 and 1 hours; one request waits for it.
    assert figures(finance) == {
        "requests": 4,
        "runs": 4,
        "skipped": 0,
        "decided": 3,
        "median": 2.0,
        "p90": 5.2,
        "waiting": 1,
        "timed_out": 0,
        "escalated": 0,
        "exceptions": 1,
        "rate": 25.0,
        "flagged": False,
    }
    assert kinds(finance.exceptions)["override"] == (1, 25.0)
    assert [s.name for s in report.flagged] == ["Manager"]


def test_a_manager_counts_only_the_requests_on_records_they_see(
    people, history, django_assert_max_num_queries
):
    process = history["process"]
    services.set_exception_alert(people["admin"], process.pk, 30)
    process = ApprovalProcess.objects.get(pk=process.pk)
    for who in ("boss", "seller"):
        # Aggregates only: the number of queries does not grow with the requests.
        with django_assert_max_num_queries(10):
            report = march(people[who], process)
        assert report.requests == 5, who
        assert (report.exception_count, report.exception_rate) == (3, 60.0)
        manager, finance = report.steps
        assert (manager.requests, manager.decided, manager.median_hours, manager.p90_hours) == (
            5,
            3,
            2.0,
            4.4,
        )
        assert (finance.requests, finance.decided, finance.median_hours, finance.p90_hours) == (
            3,
            2,
            4.0,
            5.6,
        )
        assert (manager.exception_rate, finance.exception_rate) == (40.0, 33.3)
        assert [s.flagged for s in report.steps] == [True, True]

    # The finance manager sees only the other seller's deal.
    report = march(people["finance"], process)
    assert report.requests == 1
    assert [(s.requests, s.decided, s.median_hours) for s in report.steps] == [
        (1, 1, 4.0),
        (1, 1, 1.0),
    ]
    assert report.exception_rate == 0.0


def test_who_may_open_the_report(people, history):
    process = history["process"]
    support = factories.user(Role.SUPPORT, username="helpdesk")
    with pytest.raises(NotFound):
        reports.report_process(support, process.pk)
    for bad in ("x", 0, 10**30, process.pk + 100):
        with pytest.raises(NotFound):
            reports.report_process(people["admin"], bad)
    assert reports.report_process(people["seller"], str(process.pk)) == process
    assert list(reports.reportable(support)) == []
    assert list(reports.reportable(people["seller"])) == [process]

    browser = Client()
    browser.force_login(support)
    assert browser.get(f"/approvals/processes/{process.pk}/report/").status_code == 404
    assert browser.get("/approvals/reports/").status_code == 200
    assert token_client(support).get(f"approval-processes/{process.pk}/report").status_code == 404


def test_the_period_buckets_and_the_default_period(people, history):
    process = history["process"]
    report = march(people["admin"], process, "week")
    assert [(b.label, b.requests, b.exceptions) for b in report.buckets] == [
        ("2026-W09", 0, 0),
        ("2026-W10", 4, 2),
        ("2026-W11", 2, 1),
        ("2026-W12", 0, 0),
        ("2026-W13", 0, 0),
        ("2026-W14", 0, 0),
    ]
    # This month and the two before it: February's request counts too.
    default = reports.report(people["admin"], process, reports.period())
    assert default.period.first_day == dt.date(2026, 1, 1)
    assert default.requests == 7
    assert [b.requests for b in default.buckets] == [0, 1, 6]
    empty = reports.report(people["admin"], process, reports.period("2025-01-01", "2025-01-31"))
    assert empty.requests == 0 and empty.exception_rate is None
    assert [(s.requests, s.median_hours, s.exception_rate) for s in empty.steps] == [
        (0, None, None),
        (0, None, None),
    ]


def test_the_threshold_is_a_setting_that_publishes_no_version(people, history):
    process = history["process"]
    admin = token_client(people["admin"])
    url = f"approval-processes/{process.pk}/exception-alert"
    assert_problem(admin.put(url, {"exception_alert_pct": 1001}), 422, "exception_alert_pct")
    assert_problem(admin.put(url, {"exception_alert_pct": -1}), 422, "exception_alert_pct")
    assert_problem(admin.put(url, {"pct": 5}), 422)
    assert token_client(people["boss"]).put(url, {"exception_alert_pct": 5}).status_code == 403
    assert ApprovalProcess.objects.get(pk=process.pk).exception_alert_pct is None

    answer = admin.put(url, {"exception_alert_pct": 40})
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"process_id": process.pk, "exception_alert_pct": 40}
    saved = ApprovalProcess.objects.get(pk=process.pk)
    assert (saved.exception_alert_pct, saved.version, saved.versions.count()) == (40, 1, 1)
    assert AuditEvent.objects.filter(
        object_id=process.pk, changes__exception_alert_pct=[None, 40]
    ).exists()
    assert [s.flagged for s in march(people["admin"], saved).steps] == [False, False]
    assert admin.put(url, {"exception_alert_pct": None}).json()["exception_alert_pct"] is None


def test_the_api_answers_what_the_schema_says(people, history):
    process = history["process"]
    services.set_exception_alert(people["admin"], process.pk, 30)
    boss = token_client(people["boss"])
    answer = boss.get(f"approval-processes/{process.pk}/report", **MARCH, granularity="week")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    ReportOut.model_validate(body)
    assert body["period"] == {"start": "2026-03-01", "end": "2026-03-31", "granularity": "week"}
    assert (body["requests"], body["exception_alert_pct"]) == (5, 30)
    manager = body["steps"][0]
    assert (manager["position"], manager["name"], manager["p90_hours"]) == (1, "Manager", 4.4)
    assert manager["flagged"] is True
    assert {k["kind"]: k["count"] for k in manager["exceptions"]}["unlock"] == 1

    url = f"approval-processes/{process.pk}/report"
    assert_problem(boss.get(url, start="2026-03-31", end="2026-03-01"), 422, "end")
    assert_problem(boss.get(url, granularity="day"), 422, "granularity")
    assert_problem(boss.get(url, start="yesterday"), 422, "start")
    assert_problem(boss.get(url, stat="2026-03-01"), 422, "stat")
    assert boss.get("approval-processes/999999/report").status_code == 404


def test_the_page_draws_the_charts_and_flags_the_step(people, history):
    process = history["process"]
    services.set_exception_alert(people["admin"], process.pk, 30)
    browser = Client()
    browser.force_login(people["boss"])
    url = f"/approvals/processes/{process.pk}/report/"
    page = browser.get(url, MARCH)
    assert page.status_code == 200
    text = page.content.decode()
    assert "may need redesign" in text
    assert text.count('class="report-bars"') == 2
    assert "4.4" in text
    # A seller who is not an administrator sees no alert form.
    assert 'name="exception_alert_pct"' not in text
    assert browser.post(url, {"exception_alert_pct": "5"}).status_code == 403

    bad = browser.get(url, {"start": "2026-03-31", "end": "2026-03-01"})
    assert bad.status_code == 422
    assert "The end of the period comes before its start." in bad.content.decode()

    browser.force_login(people["admin"])
    listed = browser.get("/approvals/reports/").content.decode()
    assert url in listed
    assert url in browser.get("/approvals/processes/").content.decode()
    refused = browser.post(url + "?start=2026-03-01", {"exception_alert_pct": "lots"})
    assert refused.status_code == 422
    assert "Give a whole percentage" in refused.content.decode()
    saved = browser.post(url + "?start=2026-03-01", {"exception_alert_pct": "20"})
    assert saved.status_code == 302 and saved["Location"] == url + "?start=2026-03-01"
    assert ApprovalProcess.objects.get(pk=process.pk).exception_alert_pct == 20
