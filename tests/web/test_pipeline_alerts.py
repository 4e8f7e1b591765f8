"""The alert pages: a pipeline's rules (read by everyone who sees its records, edited by admins,
with errors next to their fields) and its alerts (within visibility, filtered, paged); and an
alert reaching the owner's notifications inbox."""

import datetime as dt

import pytest
from django.urls import reverse

from tests import factories
from trellis.process.models import Notification
from trellis.process.pipelines import alerts
from trellis.process.pipelines.models import AlertRule, Pipeline

from .conftest import form_data

START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def pipeline(db) -> Pipeline:
    return Pipeline.objects.get(code="b2b-sales")


def rules_url(pipeline: Pipeline) -> str:
    return reverse("pipelines:alert-rules", args=[pipeline.pk])


def alerts_url(pipeline: Pipeline) -> str:
    return reverse("pipelines:alerts", args=[pipeline.pk])


def posted(page, **changes) -> dict:
    data = {}
    for form in page.context["rule_forms"]:
        data.update(form_data(form))
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_an_admin_edits_the_rules(admin, login, pipeline):
    client = login(admin)
    page = client.get(rules_url(pipeline))
    assert page.status_code == 200
    assert "stalled (no activity)" in page.content.decode()
    saved = client.post(
        rules_url(pipeline),
        posted(page, **{"stalled-threshold": "21", "past_close-is_active": None}),
    )
    assert saved.status_code == 302
    assert saved["Location"] == rules_url(pipeline)
    stalled = AlertRule.objects.get(pipeline=pipeline, kind="stalled")
    assert (stalled.threshold, stalled.version) == (21, 2)
    assert not AlertRule.objects.get(pipeline=pipeline, kind="past_close").is_active
    assert AlertRule.objects.get(pipeline=pipeline, kind="over_dwell").version == 1
    assert "The alert rules were saved." in client.get(rules_url(pipeline)).content.decode()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("stalled-threshold", "-1", "Give a whole number from 1 to 365."),
        ("amount_dropped-threshold", "100", "Give a whole number from 0 to 99."),
        ("stalled-threshold", "many", "Enter a whole number."),
    ],
)
def test_bad_thresholds_show_next_to_their_field_and_change_nothing(
    admin, login, pipeline, field, value, message
):
    client = login(admin)
    page = client.get(rules_url(pipeline))
    answer = client.post(rules_url(pipeline), posted(page, **{field: value}))
    assert answer.status_code == 422
    kind = field.split("-")[0]
    [form] = [f for f in answer.context["rule_forms"] if f.rule.kind == kind]
    assert form.errors["threshold"] == [message]
    assert message in answer.content.decode()
    assert not AlertRule.objects.filter(pipeline=pipeline, version__gt=1).exists()


def test_a_stale_version_keeps_the_input_and_saves_when_sent_again(admin, login, pipeline):
    client = login(admin)
    page = client.get(rules_url(pipeline))
    rule = AlertRule.objects.get(pipeline=pipeline, kind="stalled")
    alerts.save_rules(admin, pipeline.pk, [{"kind": "stalled", "threshold": 5, "version": 1}])
    answer = client.post(rules_url(pipeline), posted(page, **{"stalled-threshold": "30"}))
    assert answer.status_code == 409
    assert "Someone else changed these alert rules" in answer.content.decode()
    [form] = [f for f in answer.context["rule_forms"] if f.rule.kind == "stalled"]
    assert form["threshold"].value() == "30"
    rule.refresh_from_db()
    assert rule.threshold == 5
    again = client.post(rules_url(pipeline), posted(answer))
    assert again.status_code == 302
    rule.refresh_from_db()
    assert (rule.threshold, rule.version) == (30, 3)


def test_others_read_the_rules_and_may_not_change_them(sales, login, pipeline, team):
    client = login(sales)
    page = client.get(rules_url(pipeline))
    assert page.status_code == 200
    assert "alert-rules-form" not in page.content.decode()
    assert "Days without a logged activity" in page.content.decode()
    assert client.post(rules_url(pipeline), {"stalled-threshold": "1"}).status_code == 403
    assert AlertRule.objects.get(pipeline=pipeline, kind="stalled").threshold == 14
    support = factories.user("support", team=team)
    assert login(support).get(rules_url(pipeline)).status_code == 404
    assert login(support).get(alerts_url(pipeline)).status_code == 404
    assert login(sales).get(reverse("pipelines:alerts", args=[999999])).status_code == 404


def test_the_alerts_page_lists_what_the_user_may_see_filtered_and_paged(
    sales, other_sales, manager, login, pipeline, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(START, tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        mine = factories.opportunity(
            sales, name="Hanbit ERP", expected_close_date=dt.date(2026, 3, 3)
        )
        factories.opportunity(
            other_sales, name="Not yours", expected_close_date=dt.date(2026, 3, 3)
        )
    time_machine.move_to(START + dt.timedelta(days=3), tick=False)
    alerts.plan_all()
    assert alerts.sweep() == 4  # past the close date; no next step planned

    page = login(sales).get(alerts_url(pipeline))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Hanbit ERP" in text and "Not yours" not in text
    assert "Past its expected close date, 2026-03-03" in text
    assert reverse("crm:opportunity-detail", args=[mine.pk]) in text

    client = login(manager)
    both = client.get(alerts_url(pipeline), {"kind": "past_close"})
    assert sorted(r.record_name for r in both.context["rows"]) == ["Hanbit ERP", "Not yours"]
    only = client.get(alerts_url(pipeline), {"kind": "past_close", "owner": str(other_sales.pk)})
    assert [r.record_name for r in only.context["rows"]] == ["Not yours"]
    paged = client.get(alerts_url(pipeline), {"page": "2"})
    assert paged.status_code == 200
    bad = client.get(alerts_url(pipeline), {"kind": "sometimes"})
    assert bad.status_code == 422
    assert bad.context["filters"].errors["kind"]
    assert bad.context["rows"] == []

    # The owner's inbox has the alert, with a link to the deal.
    note = Notification.objects.filter(user=sales, text__contains="past its expected").get()
    assert note.link == reverse("crm:opportunity-detail", args=[mine.pk])
    inbox = login(sales).get(reverse("process:notifications"))
    assert "Hanbit ERP: past its expected close date, 2026-03-03" in inbox.content.decode()


def test_the_alert_pages_need_a_login(client, pipeline):
    for url in (rules_url(pipeline), alerts_url(pipeline)):
        answer = client.get(url)
        assert answer.status_code == 302
        assert "login" in answer["Location"]
