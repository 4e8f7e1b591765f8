"""Pipelines: defining them, and moving records through their stages by judgement."""

import datetime as dt
from decimal import Decimal

import pytest
import time_machine
from django.contrib.contenttypes.models import ContentType

from tests import factories
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.process.pipelines import services
from trellis.process.pipelines.models import Pipeline, Stage, StageChange

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def stage(pipeline_code: str, code: str) -> Stage:
    return Stage.objects.get(pipeline__code=pipeline_code, code=code)


def changes_of(record) -> list[StageChange]:
    content_type = ContentType.objects.get_for_model(type(record))
    return list(
        StageChange.objects.filter(content_type=content_type, object_id=record.pk).order_by("id")
    )


def move(actor, deal, code: str, **kwargs) -> services.Move:
    deal.refresh_from_db()
    target = stage(deal.stage.pipeline.code, code)
    return services.move(actor, "opportunity", deal.pk, target.pk, version=deal.version, **kwargs)


def test_a_fresh_install_has_the_four_default_pipelines_in_both_languages(db):
    pipelines = {p.code: p for p in Pipeline.objects.all()}
    assert set(pipelines) == {"lead-qualification", "b2b-sales", "renewal", "onboarding"}
    assert {p.object_type for p in pipelines.values()} == {"lead", "opportunity", "account"}
    assert all(p.name_ko for p in pipelines.values())
    assert all(s.name_ko for s in Stage.objects.all())
    for pipeline in pipelines.values():
        kinds = set(pipeline.stages.values_list("kind", flat=True))
        assert kinds == {"open", "won", "lost"}
    assert Pipeline.objects.get(object_type="opportunity", is_default=True).code == "b2b-sales"


@time_machine.travel(START, tick=False)
def test_a_new_deal_enters_the_first_stage_of_the_default_pipeline(sales):
    deal = factories.opportunity(sales, amount=Decimal(30_000_000))
    deal.refresh_from_db()
    assert deal.stage.code == "prospecting"
    assert deal.stage_entered_at == START
    assert deal.probability == 10
    [entered] = changes_of(deal)
    assert entered.direction == "entered"
    assert entered.from_stage is None
    assert entered.amount == Decimal(30_000_000)
    assert entered.actor == sales


def test_a_deal_created_as_won_enters_the_won_stage(sales):
    deal = factories.opportunity(sales, status="won")
    deal.refresh_from_db()
    assert deal.stage.code == "won"
    assert deal.probability == 100


def test_moves_go_forward_and_back_any_distance_and_each_is_recorded(sales):
    with time_machine.travel(START, tick=False) as clock:
        deal = factories.opportunity(sales, expected_close_date=dt.date(2026, 6, 30))
        clock.shift(dt.timedelta(days=3))
        result = move(sales, deal, "negotiation")
        clock.shift(dt.timedelta(days=2))
        move(sales, deal, "needs-analysis")
    _entered, skip, back = changes_of(deal)
    assert result.change == skip
    assert (skip.from_stage.code, skip.to_stage.code, skip.direction) == (
        "prospecting",
        "negotiation",
        "forward",
    )
    assert skip.at - skip.from_entered_at == dt.timedelta(days=3)
    assert skip.expected_close_date == dt.date(2026, 6, 30)
    assert skip.probability == 75
    assert back.direction == "backward"
    assert back.at - back.from_entered_at == dt.timedelta(days=2)
    deal.refresh_from_db()
    assert (deal.stage.code, deal.probability, deal.version) == ("needs-analysis", 25, 3)
    entry = AuditEvent.objects.filter(object_id=deal.pk, action="updated").latest("id")
    assert entry.changes["stage"] == [
        {"id": stage("b2b-sales", "negotiation").pk, "label": "Negotiation"},
        {"id": stage("b2b-sales", "needs-analysis").pk, "label": "Needs analysis"},
    ]
    assert entry.changes["probability"] == [75, 25]


def test_a_probability_set_by_hand_survives_moves(sales):
    deal = factories.opportunity(sales)
    deal = crm.update(sales, "opportunity", deal.pk, {"probability": 40}, version=deal.version)
    move(sales, deal, "proposal")
    deal.refresh_from_db()
    assert (deal.stage.code, deal.probability) == ("proposal", 40)


def test_won_and_lost_follow_the_stage_and_setting_the_status_moves_the_deal(sales):
    deal = factories.opportunity(sales)
    move(sales, deal, "won")
    deal.refresh_from_db()
    assert deal.status == "won"
    crm.update(sales, "opportunity", deal.pk, {"status": "lost"}, version=deal.version)
    deal.refresh_from_db()
    assert (deal.stage.code, deal.status) == ("lost", "lost")
    assert changes_of(deal)[-1].direction == "forward"


def test_moving_to_the_same_stage_changes_nothing(sales):
    deal = factories.opportunity(sales)
    result = move(sales, deal, "prospecting")
    assert result.change is None
    assert len(changes_of(deal)) == 1


@pytest.mark.parametrize(
    "target, message",
    [
        ("renewal:offer", "belongs to the pipeline Renewal"),
        ("lead-qualification:contacted", "No such stage."),
        ("missing", "No such stage."),
        ("text", "Give the id of a stage."),
    ],
)
def test_a_stage_outside_the_records_pipeline_is_refused(sales, target, message):
    deal = factories.opportunity(sales)
    if target == "missing":
        stage_id = Stage.objects.order_by("-pk").first().pk + 1
    elif target == "text":
        stage_id = "next"
    else:
        stage_id = stage(*target.split(":")).pk
    with pytest.raises(ValidationFailed) as raised:
        services.move(sales, "opportunity", deal.pk, stage_id, version=deal.version)
    assert message in raised.value.errors["stage_id"][0]
    assert len(changes_of(deal)) == 1


def test_a_stale_version_is_refused_and_nothing_moves(sales):
    deal = factories.opportunity(sales)
    crm.update(sales, "opportunity", deal.pk, {"name": "Renamed"}, version=deal.version)
    with pytest.raises(StaleVersion):
        services.move(sales, "opportunity", deal.pk, stage("b2b-sales", "proposal").pk, version=1)
    deal.refresh_from_db()
    assert deal.stage.code == "prospecting"


def test_who_cannot_see_the_record_gets_not_found_and_readers_may_not_move(sales, other_sales, db):
    deal = factories.opportunity(sales)
    target = stage("b2b-sales", "proposal").pk
    with pytest.raises(NotFound):
        services.move(other_sales, "opportunity", deal.pk, target, version=deal.version)
    reader = factories.user("readonly")
    with pytest.raises(PermissionDenied):
        services.move(reader, "opportunity", deal.pk, target, version=deal.version)
    assert len(changes_of(deal)) == 1


def _gate(code: str, gate: str, condition: str, message: str = "") -> None:
    Stage.objects.filter(pipeline__code="b2b-sales", code=code).update(
        gate=gate, gate_condition=condition, gate_message=message
    )


def test_a_require_gate_refuses_the_move_with_its_message_and_changes_nothing(sales):
    _gate("proposal", "require", "amount >= 10000000.0", "Proposals need an amount of 10M+.")
    deal = factories.opportunity(sales, amount=Decimal(5_000_000))
    with pytest.raises(ValidationFailed) as raised:
        move(sales, deal, "proposal")
    assert raised.value.errors == {"stage_id": ["Proposals need an amount of 10M+."]}
    deal.refresh_from_db()
    assert (deal.stage.code, deal.version) == ("prospecting", 1)
    deal = crm.update(sales, "opportunity", deal.pk, {"amount": 12_000_000}, version=1)
    assert move(sales, deal, "proposal").change is not None


def test_a_warn_gate_asks_for_confirmation_and_then_lets_the_move_through(sales):
    _gate("negotiation", "warn", "expected_close_date != null", "No close date yet.")
    deal = factories.opportunity(sales)
    with pytest.raises(services.ConfirmationNeeded):
        move(sales, deal, "negotiation")
    assert len(changes_of(deal)) == 1
    result = move(sales, deal, "negotiation", confirm=True)
    assert result.warnings == ["No close date yet."]
    deal.refresh_from_db()
    assert deal.stage.code == "negotiation"


def _definition(**overrides):
    data = {
        "object_type": "opportunity",
        "code": "partner-sales",
        "name": "Partner sales",
        "name_ko": "파트너 영업",
        "stages": [
            {"code": "intro", "name": "Introduced", "name_ko": "소개", "probability": 10},
            {"code": "deal", "name": "Deal", "kind": "won", "probability": 100},
            {"code": "gone", "name": "Gone", "kind": "lost"},
        ],
    }
    data.update(overrides)
    return data


def test_an_admin_defines_a_second_pipeline_for_a_type(admin):
    pipeline = services.save_pipeline(admin, _definition())
    assert [s.code for s in pipeline.stages.order_by("order")] == ["intro", "deal", "gone"]
    assert [s.order for s in pipeline.stages.order_by("order")] == [1, 2, 3]
    assert Pipeline.objects.get(code="b2b-sales").is_default
    assert AuditEvent.objects.filter(object_id=pipeline.pk, action="created").exists()


def test_only_admins_define_pipelines(sales):
    with pytest.raises(PermissionDenied):
        services.save_pipeline(sales, _definition())
    assert not Pipeline.objects.filter(code="partner-sales").exists()


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (
            {"stages": [{"code": "a", "name": "A"}, {"code": "b", "name": "B", "kind": "lost"}]},
            "stages",
            "A pipeline needs a won stage.",
        ),
        ({"object_type": "product"}, "object_type", "This kind of record has no pipelines."),
        ({"code": "Not A Code"}, "code", "Use lower-case letters"),
        ({"code": "b2b-sales"}, "code", "This code is taken."),
        ({"stages": []}, "stages", "Give the stages, in order."),
        ({"colour": "red"}, "colour", "Unknown field."),
    ],
)
def test_a_bad_definition_is_refused_with_the_field_and_nothing_is_saved(
    admin, overrides, field, message
):
    before = Stage.objects.count()
    with pytest.raises(ValidationFailed) as raised:
        services.save_pipeline(admin, _definition(**overrides))
    assert message in " ".join(raised.value.errors[field])
    assert Stage.objects.count() == before
    assert not Pipeline.objects.filter(name="Partner sales").exists()


@pytest.mark.parametrize(
    "condition, message",
    [
        ("amount >", "does not compile: Syntax error: mismatched input '<EOF>' (line 1, column 9)"),
        ("amount > 1.0 && colour == 'red'", "Unknown field: colour."),
    ],
)
def test_a_gate_condition_that_cannot_work_is_refused_when_saved_with_where(
    admin, condition, message
):
    stages = _definition()["stages"]
    stages[1] = {**stages[1], "gate": "require", "gate_condition": condition}
    with pytest.raises(ValidationFailed) as raised:
        services.save_pipeline(admin, _definition(stages=stages))
    assert message in raised.value.errors["stages.1.gate_condition"][0]


def test_editing_a_definition_checks_the_version_and_never_rewrites_history(admin, sales):
    pipeline = services.save_pipeline(admin, _definition())
    intro, deal_stage, gone = pipeline.stages.order_by("order")
    record = factories.opportunity(sales)
    # A deal outside any pipeline enters the one whose stage it is moved to.
    Opportunity.objects.filter(pk=record.pk).update(stage=None)
    services.move(admin, "opportunity", record.pk, intro.pk, version=1)
    record.refresh_from_db()
    services.move(admin, "opportunity", record.pk, deal_stage.pk, version=record.version)
    record.refresh_from_db()
    # Retire "intro" (a deal went through it) and rename the won stage.
    services.save_pipeline(
        admin,
        {
            "stages": [
                {"code": "new", "name": "New"},
                {"id": deal_stage.pk, "name": "Signed"},
                {"id": gone.pk},
            ]
        },
        pk=pipeline.pk,
        version=1,
    )
    intro.refresh_from_db()
    assert not intro.is_active
    assert intro.name == "Introduced"
    assert [c.to_stage_id for c in changes_of(record)][-2:] == [intro.pk, deal_stage.pk]
    with pytest.raises(StaleVersion):
        services.save_pipeline(admin, {"name": "Again"}, pk=pipeline.pk, version=1)


def test_a_stage_with_records_in_it_cannot_be_removed(admin, sales):
    pipeline = services.save_pipeline(admin, _definition())
    intro, won, lost = pipeline.stages.order_by("order")
    record = factories.opportunity(sales)
    Opportunity.objects.filter(pk=record.pk).update(stage=intro)
    with pytest.raises(ValidationFailed) as raised:
        services.save_pipeline(
            admin,
            {"stages": [{"id": won.pk}, {"id": lost.pk}, {"code": "x", "name": "X"}]},
            pk=pipeline.pk,
            version=1,
        )
    assert "1 record is still in the stage Introduced" in raised.value.errors["stages"][0]
    assert intro.pk in set(pipeline.stages.filter(is_active=True).values_list("pk", flat=True))
