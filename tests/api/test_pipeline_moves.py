"""Moving records through the API, and reading boards and a record's stages.

Every refused move (a stage of another pipeline, one that does not exist, a stale version, a
gate) answers in the problem shape and changes nothing.
"""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from trellis.core.models import AuditEvent, Role
from trellis.crm.models import Opportunity
from trellis.process.pipelines import api_board
from trellis.process.pipelines.models import Pipeline, Stage, StageChange

from .. import factories
from .conftest import assert_problem, database_state, session_client

START = dt.datetime(2026, 3, 9, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def gate(code: str, kind: str, condition: str, message: str) -> None:
    Stage.objects.filter(pipeline__code="b2b-sales", code=code).update(
        gate=kind, gate_condition=condition, gate_message=message
    )


def move_path(record, object_type: str = "opportunity") -> str:
    return f"pipelines/records/{object_type}/{record.pk}/move"


def changes_of(record) -> int:
    content_type = ContentType.objects.get_for_model(type(record))
    return StageChange.objects.filter(content_type=content_type, object_id=record.pk).count()


def everything() -> dict:
    return {**database_state(), "changes": list(StageChange.objects.order_by("pk").values())}


# Moves.


def test_a_move_answers_with_the_record_its_stage_and_the_change(api_as, sales, clock):
    deal = factories.opportunity(sales, amount=Decimal(20_000_000))
    clock.shift(dt.timedelta(days=2))
    target = stage("b2b-sales", "proposal")

    answer = api_as(sales).post(move_path(deal), {"stage_id": target.pk, "version": 1})

    assert answer.status_code == 200, answer.content
    body = answer.json()
    api_board.MoveOut.model_validate(body)
    change = StageChange.objects.latest("pk")
    assert body == {
        "id": deal.pk,
        "version": 2,
        "stage": {"id": target.pk, "code": "proposal", "name": "Proposal", "name_ko": "제안"},
        "change": {"id": change.pk, "direction": "forward", "at": "2026-03-11T00:00:00+00:00"},
        "warnings": [],
        "pending_approval": None,
    }
    deal.refresh_from_db()
    assert (deal.stage_id, deal.probability, deal.version) == (target.pk, 50, 2)
    assert (change.actor, change.amount, change.from_stage.code) == (
        sales,
        Decimal(20_000_000),
        "prospecting",
    )
    # On the record's timeline.
    entry = AuditEvent.objects.filter(object_id=deal.pk, action="updated").latest("pk")
    assert entry.changes["stage"][1] == {"id": target.pk, "label": "Proposal"}


def test_moves_go_back_too_and_to_the_same_stage_change_nothing(api_as, sales):
    deal = factories.opportunity(sales)
    client = api_as(sales)
    forward = client.post(
        move_path(deal), {"stage_id": stage("b2b-sales", "negotiation").pk, "version": 1}
    )
    back = client.post(
        move_path(deal), {"stage_id": stage("b2b-sales", "prospecting").pk, "version": 2}
    )
    assert back.json()["change"]["direction"] == "backward"
    same = client.post(
        move_path(deal), {"stage_id": stage("b2b-sales", "prospecting").pk, "version": 3}
    )
    assert forward.status_code == back.status_code == same.status_code == 200
    assert (same.json()["change"], same.json()["version"]) == (None, 3)
    assert changes_of(deal) == 3


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"stage_id": "renewal:offer", "version": 1}, "stage_id", "belongs to the pipeline"),
        ({"stage_id": "lead-qualification:new", "version": 1}, "stage_id", "No such stage."),
        ({"stage_id": "missing", "version": 1}, "stage_id", "No such stage."),
        ({"stage_id": "retired", "version": 1}, "stage_id", "No such stage."),
        ({"stage_id": "next", "version": 1}, "stage_id", ""),
        ({"stage_id": 0, "version": 1}, "stage_id", ""),
        ({"version": 1}, "stage_id", ""),
        ({"stage_id": "b2b-sales:proposal"}, "version", ""),
        ({"stage_id": "b2b-sales:proposal", "version": 0}, "version", ""),
        ({"stage_id": "b2b-sales:proposal", "version": 1, "confirm": "maybe"}, "confirm", ""),
        ({"stage_id": "b2b-sales:proposal", "version": 1, "stage": 3}, "stage", ""),
    ],
)
def test_a_bad_move_is_a_422_naming_the_input_and_changes_nothing(
    api_as, sales, body, field, message
):
    deal = factories.opportunity(sales)
    Stage.objects.filter(pipeline__code="b2b-sales", code="negotiation").update(is_active=False)
    value = body.get("stage_id")
    if value == "missing":
        body["stage_id"] = Stage.objects.order_by("-pk").first().pk + 1
    elif value == "retired":
        body["stage_id"] = stage("b2b-sales", "negotiation").pk
    elif isinstance(value, str) and ":" in value:
        body["stage_id"] = stage(*value.split(":")).pk
    before = everything()

    answer = api_as(sales).post(move_path(deal), body)

    problem = assert_problem(answer, 422, field)
    assert message in problem["errors"][0]["message"]
    assert everything() == before


def test_a_stale_version_is_a_409_with_where_the_record_stands_now(api_as, sales, other_sales):
    deal = factories.opportunity(sales)
    client = api_as(sales)
    client.post(move_path(deal), {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1})
    before = everything()

    answer = client.post(move_path(deal), {"stage_id": stage("b2b-sales", "won").pk, "version": 1})

    problem = assert_problem(answer, 409)
    current = problem["current"]
    api_board.RecordStageOut.model_validate(current)
    assert (current["version"], current["current_stage"]["code"]) == (2, "proposal")
    assert everything() == before


def test_a_require_gate_not_met_is_a_422_with_its_message(api_as, sales):
    gate("proposal", "require", "amount >= 10000000.0", "Proposals need an amount of 10M+.")
    deal = factories.opportunity(sales, amount=Decimal(5_000_000))
    before = everything()

    answer = api_as(sales).post(
        move_path(deal),
        {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1, "confirm": True},
    )

    problem = assert_problem(answer, 422, "stage_id")
    assert problem["title"] == "Validation failed"
    assert problem["errors"][0]["message"] == "Proposals need an amount of 10M+."
    assert everything() == before


def test_a_warn_gate_asks_for_confirmation_then_moves_with_the_warning(api_as, sales):
    gate("negotiation", "warn", "expected_close_date != null", "No close date yet.")
    deal = factories.opportunity(sales)
    target = stage("b2b-sales", "negotiation").pk
    client = api_as(sales)
    before = everything()

    asked = client.post(move_path(deal), {"stage_id": target, "version": 1})

    problem = assert_problem(asked, 422, "stage_id")
    assert problem["title"] == "Confirmation needed"
    assert problem["type"] == "urn:trellis:problem:confirmation-needed"
    assert "No close date yet." in problem["detail"]
    assert everything() == before

    confirmed = client.post(move_path(deal), {"stage_id": target, "version": 1, "confirm": True})
    assert confirmed.status_code == 200
    assert confirmed.json()["warnings"] == ["No close date yet."]
    assert Opportunity.objects.get(pk=deal.pk).stage_id == target


def test_a_record_i_may_not_see_is_a_404_and_one_i_may_only_read_a_403(api_as, sales, outsider):
    deal = factories.opportunity(sales)
    target = {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1}
    assert_problem(api_as(outsider).post(move_path(deal), target), 404)
    assert_problem(api_as(sales).post(move_path(deal, "contact"), target), 404)
    assert_problem(api_as(sales).post(f"pipelines/records/opportunity/{10**6}/move", target), 404)
    reader = factories.user(Role.READ_ONLY, username="reader")
    assert_problem(api_as(reader).post(move_path(deal), target), 403)
    assert changes_of(deal) == 1


def test_anonymous_is_a_401_and_the_browser_needs_its_csrf_token(anonymous, sales):
    deal = factories.opportunity(sales)
    target = {"stage_id": stage("b2b-sales", "proposal").pk, "version": 1}
    assert_problem(anonymous.post(move_path(deal), target), 401)
    assert_problem(session_client(sales, csrf=False).post(move_path(deal), target), 403)
    assert session_client(sales).post(move_path(deal), target).status_code == 200


def test_an_account_enters_onboarding_by_a_move(api_as, sales):
    account = factories.account(sales)
    kickoff = stage("onboarding", "kickoff")
    answer = api_as(sales).post(
        move_path(account, "account"), {"stage_id": kickoff.pk, "version": 1}
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["change"]["direction"] == "entered"
    entry = AuditEvent.objects.filter(object_id=account.pk, action="updated").latest("pk")
    assert entry.changes["stage"] == [None, {"id": kickoff.pk, "label": "Kick-off"}]


# The board.


def test_the_board_lists_columns_with_counts_sums_and_cards(api_as, sales, outsider, clock):
    factories.opportunity(sales, name="Hanbit ERP", amount=Decimal(30_000_000))
    clock.shift(dt.timedelta(days=31))
    factories.opportunity(sales, name="Acme", amount=Decimal("99.99"), currency="USD")
    factories.opportunity(outsider, name="Busan deal")
    pipeline = Pipeline.objects.get(code="b2b-sales")

    answer = api_as(sales).get(f"pipelines/{pipeline.pk}/board")

    assert answer.status_code == 200, answer.content
    body = answer.json()
    api_board.BoardOut.model_validate(body)
    assert body["pipeline"]["code"] == "b2b-sales"
    assert body["filters"] == {"owner": "all", "team": None}
    prospecting = body["columns"][0]
    assert prospecting["stage"]["code"] == "prospecting"
    assert prospecting["count"] == 2
    assert prospecting["sums"] == [
        {"currency": "KRW", "amount": "30000000"},
        {"currency": "USD", "amount": "99.99"},
    ]
    acme, hanbit = prospecting["cards"]
    assert (acme["name"], acme["amount"], acme["over_dwell_limit"]) == ("Acme", "99.99", False)
    assert (hanbit["name"], hanbit["days_in_stage"], hanbit["over_dwell_limit"]) == (
        "Hanbit ERP",
        31,
        True,
    )
    assert hanbit["owner_name"] == sales.first_name
    assert [c["stage"]["code"] for c in body["columns"]][-2:] == ["won", "lost"]


def test_the_board_filters_and_pages_a_column(api_as, manager, sales, clock):
    for n in range(5):
        factories.opportunity(sales, name=f"Deal {n}")
        clock.shift(dt.timedelta(minutes=1))
    factories.opportunity(manager, name="Manager's")
    pipeline = Pipeline.objects.get(code="b2b-sales")
    client = api_as(manager)

    mine = client.get(f"pipelines/{pipeline.pk}/board", owner="mine").json()
    assert [c["name"] for c in mine["columns"][0]["cards"]] == ["Manager's"]
    theirs = client.get(f"pipelines/{pipeline.pk}/board", owner=sales.pk, per_stage=2).json()
    first = theirs["columns"][0]
    assert ([c["name"] for c in first["cards"]], first["has_more"]) == (["Deal 4", "Deal 3"], True)

    stage_id = first["stage"]["id"]
    rest = client.get(
        f"pipelines/{pipeline.pk}/board/stages/{stage_id}", owner=sales.pk, offset=2, limit=2
    )
    assert rest.status_code == 200
    api_board.ColumnOut.model_validate(rest.json())
    assert [c["name"] for c in rest.json()["cards"]] == ["Deal 2", "Deal 1"]
    assert (rest.json()["offset"], rest.json()["has_more"]) == (2, True)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"owner": "nobody"}, "owner"),
        ({"team": "x"}, "team"),
        ({"per_stage": 0}, "per_stage"),
        ({"per_stage": 101}, "per_stage"),
        ({"stage": 3}, "stage"),
    ],
)
def test_a_bad_board_query_is_a_422_naming_it(api_as, sales, params, field):
    pipeline = Pipeline.objects.get(code="b2b-sales")
    assert_problem(api_as(sales).get(f"pipelines/{pipeline.pk}/board", **params), 422, field)


def test_a_board_of_a_kind_i_may_not_see_is_a_404(api_as, db):
    agent = factories.user(Role.SUPPORT, username="agent")
    pipeline = Pipeline.objects.get(code="b2b-sales")
    assert_problem(api_as(agent).get(f"pipelines/{pipeline.pk}/board"), 404)
    stage_id = stage("b2b-sales", "won").pk
    assert_problem(api_as(agent).get(f"pipelines/{pipeline.pk}/board/stages/{stage_id}"), 404)
    other = stage("renewal", "due").pk
    lead_admin = factories.user(Role.ADMIN, username="boss")
    assert_problem(api_as(lead_admin).get(f"pipelines/{pipeline.pk}/board/stages/{other}"), 404)


def test_the_board_costs_the_same_queries_for_few_cards_and_many(api_as, manager, sales):
    pipeline = Pipeline.objects.get(code="b2b-sales")
    client = api_as(manager)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(f"pipelines/{pipeline.pk}/board").status_code == 200
        return len(captured)

    factories.opportunity(sales)
    queries()  # the token's first use is noted once
    few = queries()
    for n in range(30):
        factories.opportunity(sales if n % 2 else manager)
    assert queries() == few


# A record's stages.


def test_a_records_stages_show_the_current_one_and_the_history(api_as, sales, manager, clock):
    deal = factories.opportunity(sales)
    clock.shift(dt.timedelta(days=4))
    api_as(sales).post(
        move_path(deal), {"stage_id": stage("b2b-sales", "needs-analysis").pk, "version": 1}
    )
    clock.shift(dt.timedelta(hours=2))

    answer = api_as(manager).get(f"pipelines/records/opportunity/{deal.pk}/stages")

    assert answer.status_code == 200, answer.content
    body = answer.json()
    api_board.RecordStageOut.model_validate(body)
    assert body["current_stage"]["code"] == "needs-analysis"
    assert (body["seconds_in_stage"], body["days_in_stage"]) == (7200, 0)
    assert body["expected_activities"] == ["Needs-analysis meeting held"]
    assert [s["code"] for s in body["stages"] if s["current"]] == ["needs-analysis"]
    assert [
        (h["stage"]["code"], h["seconds"], h["direction"], h["actor_id"], h["left_at"] is None)
        for h in body["history"]
    ] == [
        ("prospecting", 4 * 86400, "entered", sales.pk, False),
        ("needs-analysis", 7200, "forward", sales.pk, True),
    ]


def test_the_stages_of_a_record_i_may_not_see_are_a_404(api_as, sales, outsider):
    deal = factories.opportunity(sales)
    assert_problem(api_as(outsider).get(f"pipelines/records/opportunity/{deal.pk}/stages"), 404)
    assert_problem(api_as(sales).get(f"pipelines/records/order/{deal.pk}/stages"), 404)


def test_an_account_in_no_pipeline_has_no_stages_yet(api_as, sales):
    account = factories.account(sales)
    body = api_as(sales).get(f"pipelines/records/account/{account.pk}/stages").json()
    assert (body["pipeline"], body["current_stage"], body["stages"], body["history"]) == (
        None,
        None,
        [],
        [],
    )
