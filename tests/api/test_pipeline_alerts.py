"""The alert endpoints: rules read by everyone who sees the records and changed by admins,
alerts listed within the caller's visibility, refusals in the problem shape with nothing
changed, and 409 with the current rules."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories
from trellis.crm import services as crm
from trellis.process.pipelines import alerts
from trellis.process.pipelines import api_alerts as api
from trellis.process.pipelines.models import AlertRule, Pipeline

from .conftest import assert_problem

START = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def sales_pipeline(db) -> Pipeline:
    return Pipeline.objects.get(code="b2b-sales")


def rule_state(pipeline: Pipeline) -> list[dict]:
    return list(AlertRule.objects.filter(pipeline=pipeline).order_by("pk").values())


@pytest.fixture
def alerted(sales, other_sales, time_machine, django_capture_on_commit_callbacks):
    """Two deals of ``sales`` and one of ``other_sales``, each past its close date, and one of
    ``sales`` whose amount dropped by half."""
    time_machine.move_to(START, tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        mine = [
            factories.opportunity(sales, name=f"Mine {n}", expected_close_date=dt.date(2026, 3, 3))
            for n in range(2)
        ]
        theirs = factories.opportunity(
            other_sales, name="Theirs", expected_close_date=dt.date(2026, 3, 3)
        )
        dropped = factories.opportunity(sales, name="Dropped", amount=Decimal(2_000_000))
        crm.update(sales, "opportunity", dropped.pk, {"amount": "1000000"}, version=1)
    time_machine.move_to(START + dt.timedelta(days=1, hours=16), tick=False)  # 01:00, 4 March
    alerts.plan_all()
    alerts.sweep()
    return {"mine": mine, "theirs": theirs, "dropped": dropped}


def test_everyone_who_sees_the_records_reads_the_rules(sales, api_as, sales_pipeline):
    answer = api_as(sales).get(f"pipelines/{sales_pipeline.pk}/alert-rules")
    assert answer.status_code == 200, answer.content
    body = api.AlertRulesOut.model_validate(answer.json()).model_dump()
    assert body["pipeline_id"] == sales_pipeline.pk
    rules = {rule["kind"]: rule for rule in body["rules"]}
    assert list(rules) == list(AlertRule.Kind.values)
    assert rules["stalled"] | {"help": "", "label": ""} == {
        "kind": "stalled",
        "label": "",
        "help": "",
        "unit": "days",
        "threshold": 14,
        "threshold_min": 1,
        "threshold_max": 365,
        "is_active": True,
        "notify_owner": True,
        "notify_manager": False,
        "email_digest": True,
        "version": 1,
    }
    lead_pipeline = Pipeline.objects.get(code="lead-qualification")
    answer = api_as(sales).get(f"pipelines/{lead_pipeline.pk}/alert-rules")
    kinds = [rule["kind"] for rule in answer.json()["rules"]]
    assert "amount_dropped" not in kinds and "past_close" not in kinds
    unsaved = next(r for r in answer.json()["rules"] if r["kind"] == "moved_backward")
    assert (unsaved["version"], unsaved["is_active"]) == (None, False)


def test_an_admin_changes_rules_and_a_stale_version_is_409_with_the_current(
    admin, api_as, sales_pipeline
):
    client = api_as(admin)
    rules = {
        r["kind"]: r
        for r in client.get(f"pipelines/{sales_pipeline.pk}/alert-rules").json()["rules"]
    }
    answer = client.put(
        f"pipelines/{sales_pipeline.pk}/alert-rules",
        {
            "rules": [
                {"kind": "stalled", "threshold": 21, "version": rules["stalled"]["version"]},
                {
                    "kind": "moved_backward",
                    "notify_manager": True,
                    "is_active": False,
                    "version": rules["moved_backward"]["version"],
                },
            ]
        },
    )
    assert answer.status_code == 200, answer.content
    changed = {r["kind"]: r for r in answer.json()["rules"]}
    assert (changed["stalled"]["threshold"], changed["stalled"]["version"]) == (21, 2)
    assert (
        changed["moved_backward"]["is_active"],
        changed["moved_backward"]["notify_manager"],
    ) == (
        False,
        True,
    )
    assert changed["past_close"] == rules["past_close"]

    before = rule_state(sales_pipeline)
    stale = client.put(
        f"pipelines/{sales_pipeline.pk}/alert-rules",
        {"rules": [{"kind": "stalled", "threshold": 30, "version": 1}]},
    )
    body = assert_problem(stale, 409)
    current = {r["kind"]: r for r in body["current"]["rules"]}
    assert current["stalled"]["threshold"] == 21
    assert rule_state(sales_pipeline) == before


def test_a_kind_never_saved_is_created_by_put(admin, api_as):
    pipeline = Pipeline.objects.get(code="lead-qualification")
    answer = api_as(admin).put(
        f"pipelines/{pipeline.pk}/alert-rules", {"rules": [{"kind": "moved_backward"}]}
    )
    assert answer.status_code == 200, answer.content
    rule = AlertRule.objects.get(pipeline=pipeline, kind="moved_backward")
    assert (rule.is_active, rule.threshold, rule.version) == (True, 1, 1)


@pytest.mark.parametrize(
    "rules, fields",
    [
        ([{"kind": "stalled", "threshold": -1, "version": 1}], ["rules.0.threshold"]),
        ([{"kind": "stalled", "threshold": 366, "version": 1}], ["rules.0.threshold"]),
        ([{"kind": "sometimes", "threshold": 3}], ["rules.0.kind"]),
        ([{"kind": "stalled", "threshold": 3}], ["rules.0.version"]),
        ([{"kind": "stalled", "version": 1, "colour": "red"}], ["rules.0.colour"]),
        ([{"kind": "stalled", "is_active": "maybe", "version": 1}], ["rules.0.is_active"]),
        (
            [{"kind": "stalled", "version": 1}, {"kind": "stalled", "version": 1}],
            ["rules.1.kind"],
        ),
    ],
)
def test_bad_rules_are_422_naming_the_field_and_change_nothing(
    admin, api_as, sales_pipeline, rules, fields
):
    before = rule_state(sales_pipeline)
    answer = api_as(admin).put(f"pipelines/{sales_pipeline.pk}/alert-rules", {"rules": rules})
    assert_problem(answer, 422, *fields)
    assert rule_state(sales_pipeline) == before


def test_a_kind_the_records_cannot_have_is_422(admin, api_as):
    pipeline = Pipeline.objects.get(code="onboarding")
    answer = api_as(admin).put(
        f"pipelines/{pipeline.pk}/alert-rules", {"rules": [{"kind": "amount_dropped"}]}
    )
    body = assert_problem(answer, 422, "rules.0.kind")
    assert "no field this kind of alert needs" in body["errors"][0]["message"]


def test_only_admins_change_rules_and_hidden_pipelines_are_404(
    sales, anonymous, api_as, sales_pipeline, team
):
    before = rule_state(sales_pipeline)
    path = f"pipelines/{sales_pipeline.pk}/alert-rules"
    body = {"rules": [{"kind": "stalled", "threshold": 3, "version": 1}]}
    assert_problem(api_as(sales).put(path, body), 403)
    assert_problem(anonymous.put(path, body), 401)
    assert_problem(anonymous.get(path), 401)
    support = factories.user("support", team=team)
    assert_problem(api_as(support).get(path), 404)
    assert_problem(api_as(support).get(f"pipelines/{sales_pipeline.pk}/alerts"), 404)
    assert_problem(api_as(sales).get("pipelines/999999/alert-rules"), 404)
    assert rule_state(sales_pipeline) == before


def test_alerts_are_listed_within_the_callers_visibility(
    sales, other_sales, manager, api_as, sales_pipeline, alerted
):
    path = f"pipelines/{sales_pipeline.pk}/alerts"
    mine = api_as(sales).get(path)
    assert mine.status_code == 200, mine.content
    page = api.AlertPage.model_validate(mine.json()).model_dump()
    names = sorted({item["record_name"] for item in page["items"]})
    assert names == ["Dropped", "Mine 0", "Mine 1"]
    past = [i for i in page["items"] if i["kind"] == "past_close"]
    assert len(past) == 2
    assert past[0]["text"] == "past its expected close date, 2026-03-03"
    assert past[0]["record_type"] == "opportunity"
    assert past[0]["owner_name"] == str(sales)
    assert past[0]["cleared_at"] is None
    fired = [item["fired_at"] for item in page["items"]]
    assert fired == sorted(fired, reverse=True)

    every = api_as(manager).get(path, kind="past_close").json()["items"]
    assert sorted(i["record_name"] for i in every) == ["Mine 0", "Mine 1", "Theirs"]
    theirs = api_as(manager).get(path, kind="past_close", owner_id=other_sales.pk).json()
    assert [i["record_name"] for i in theirs["items"]] == ["Theirs"]
    dropped = api_as(sales).get(path, kind="amount_dropped").json()["items"]
    assert [(i["record_name"], i["details"]["percent"]) for i in dropped] == [("Dropped", 50)]

    assert api_as(sales).get(path, state="cleared").json()["items"] == []
    paged = api_as(manager).get(path, page_size=2).json()
    assert (len(paged["items"]), paged["has_next"]) == (2, True)


def test_my_alerts_are_the_open_ones_on_my_records(sales, other_sales, api_as, alerted):
    answer = api_as(other_sales).get("alerts/mine")
    assert answer.status_code == 200, answer.content
    items = answer.json()["items"]
    assert {i["record_name"] for i in items} == {"Theirs"}
    kinds = {i["kind"] for i in api_as(sales).get("alerts/mine").json()["items"]}
    assert "amount_dropped" in kinds and "past_close" in kinds


@pytest.mark.parametrize(
    "params, field",
    [
        ({"kind": "sometimes"}, "kind"),
        ({"state": "closed"}, "state"),
        ({"owner_id": "me"}, "owner_id"),
        ({"colour": "red"}, "colour"),
        ({"page_size": 1000}, "page_size"),
    ],
)
def test_bad_filters_are_422(sales, api_as, sales_pipeline, params, field):
    answer = api_as(sales).get(f"pipelines/{sales_pipeline.pk}/alerts", **params)
    assert_problem(answer, 422, field)


def test_a_page_of_alerts_costs_the_same_few_queries_whatever_its_size(
    manager, api_as, sales_pipeline, alerted, sales, django_capture_on_commit_callbacks
):
    client = api_as(manager)
    path = f"pipelines/{sales_pipeline.pk}/alerts"
    client.get(path)
    with CaptureQueriesContext(connection) as small:
        client.get(path, page_size=1)
    with CaptureQueriesContext(connection) as big:
        assert len(client.get(path, page_size=50).json()["items"]) >= 4
    assert len(big.captured_queries) == len(small.captured_queries)
