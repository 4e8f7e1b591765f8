"""The approve gate: entering the stage submits the record for approval; the move is made when
the request is approved, and not at all (with a timeline entry) when it is rejected or
recalled."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import reverse

from tests import factories
from trellis.core.errors import Conflict, ValidationFailed
from trellis.core.models import AuditEvent, Role, User
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.process.approvals import services as approvals
from trellis.process.approvals.models import ApprovalRequest
from trellis.process.pipelines import board, rollups, services
from trellis.process.pipelines.models import GatedMove, Pipeline, Stage, StageChange, StageDay

from ..api.conftest import assert_problem, token_client
from ..concurrency import OwnConnections
from ..web.conftest import form_data

# Tuesday 3 March 2026, 10:00 in Seoul.
START = dt.datetime(2026, 3, 3, 1, 0, tzinfo=dt.UTC)


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def people(db, team, admin, clock):
    boss = factories.user(Role.MANAGER, username="boss", first_name="Bora", team=team)
    seller = factories.user(Role.SALES, username="seller", team=team, manager=boss)
    return {"admin": admin, "boss": boss, "seller": seller}


def process(admin, **fields):
    data = {
        "object_type": "opportunity",
        "code": "big-deal",
        "name": "Big deal approval",
        "entry_condition": "amount > 50000000.0",
        "steps": [{"name": "Manager", "approvers": [{"kind": "manager"}]}],
        **fields,
    }
    return approvals.save_process(admin, data)


def stage(code: str) -> Stage:
    return Stage.objects.get(pipeline__code="b2b-sales", code=code)


def gate(admin, code: str, approval_process) -> Stage:
    """Give a stage of the deal pipeline an approve gate, through the service."""
    pipeline = Pipeline.objects.get(code="b2b-sales")
    stages = []
    for s in pipeline.stages.filter(is_active=True).order_by("order"):
        item = {"id": s.pk, "code": s.code, "name": s.name, "kind": s.kind}
        if s.code == code:
            item.update(gate="approve", approval_process_id=approval_process.pk)
        stages.append(item)
    services.save_pipeline(admin, {"stages": stages}, pk=pipeline.pk, version=pipeline.version)
    return stage(code)


@pytest.fixture
def gated(people):
    """The won stage needs the big-deal approval; a deal of 80 million in prospecting."""
    big = process(people["admin"])
    won = gate(people["admin"], "won", big)
    deal = factories.opportunity(people["seller"], amount=Decimal(80_000_000))
    return big, won, Opportunity.objects.get(pk=deal.pk)


def move(actor, deal, code: str) -> services.Move:
    deal.refresh_from_db()
    return services.move(actor, "opportunity", deal.pk, stage(code).pk, version=deal.version)


def moves_of(deal) -> list[tuple[str | None, str]]:
    content_type = ContentType.objects.get_for_model(Opportunity)
    return [
        (c.from_stage.code if c.from_stage else None, c.to_stage.code)
        for c in StageChange.objects.filter(content_type=content_type, object_id=deal.pk)
        .select_related("from_stage", "to_stage")
        .order_by("pk")
    ]


def timeline(deal) -> list[str]:
    return [
        e.changes["approval"][1]
        for e in AuditEvent.objects.filter(object_id=deal.pk, changes__has_key="approval")
        .exclude(content_type__model="approvalrequest")
        .order_by("pk")
    ]


# Through the service.


def test_a_move_into_an_approve_stage_submits_and_the_record_stays(people, gated):
    big, won, deal = gated
    result = move(people["seller"], deal, "won")
    assert result.change is None and result.gated is not None
    request = result.gated.request
    assert (request.process, request.submitter, request.status) == (
        big,
        people["seller"],
        "pending",
    )
    assert (result.gated.to_stage, result.gated.from_stage) == (won, stage("prospecting"))
    stored = Opportunity.objects.get(pk=deal.pk)
    assert (stored.stage.code, stored.status, stored.version) == (
        "prospecting",
        "open",
        deal.version,
    )
    assert moves_of(deal) == [(None, "prospecting")]
    assert f"#{request.pk}" in services.gated_message(result.gated)
    assert timeline(deal) == [
        f"Submitted for approval: Big deal approval #{request.pk}",
        f"Waiting for approval to move to Closed won: Big deal approval #{request.pk}",
    ]


def test_approval_makes_the_move_in_the_movers_name(people, gated, clock):
    _big, won, deal = gated
    request = move(people["seller"], deal, "won").gated.request
    clock.shift(dt.timedelta(hours=3))
    approvals.approve(people["boss"], request.pk)
    stored = Opportunity.objects.get(pk=deal.pk)
    assert (stored.stage, stored.status, stored.probability) == (won, "won", 100)
    assert stored.stage_entered_at == START + dt.timedelta(hours=3)
    assert stored.version == deal.version + 1
    change = StageChange.objects.get(to_stage=won, object_id=deal.pk)
    assert (change.actor, change.direction) == (people["seller"], "forward")
    # The time waiting for approval was spent in the stage the record was in.
    assert change.at - change.from_entered_at == dt.timedelta(hours=3)
    assert GatedMove.objects.get(request=request).change == change
    # The move counts once in the rollups, as every other move.
    entered = StageDay.objects.filter(stage=won).values_list("entered", flat=True)
    assert list(entered) == [1]
    # Approving the status does not reopen approval, though the status changed.
    assert not ApprovalRequest.objects.filter(status="pending").exists()


def test_rejection_leaves_the_record_where_it_is_with_a_timeline_entry(people, gated):
    _big, _won, deal = gated
    request = move(people["seller"], deal, "won").gated.request
    approvals.reject(people["boss"], request.pk, comment="Discount too deep")
    stored = Opportunity.objects.get(pk=deal.pk)
    assert (stored.stage.code, stored.status, stored.version) == (
        "prospecting",
        "open",
        deal.version,
    )
    assert moves_of(deal) == [(None, "prospecting")]
    assert timeline(deal)[-1] == (
        f"Not moved to Closed won: Big deal approval #{request.pk} was rejected."
    )
    # The record is free again: it moves on, and may ask again.
    assert move(people["seller"], deal, "proposal").change is not None
    assert move(people["seller"], deal, "won").gated.request.status == "pending"


def test_recall_drops_the_move(people, gated):
    _big, _won, deal = gated
    request = move(people["seller"], deal, "won").gated.request
    approvals.recall(people["seller"], request.pk)
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "prospecting"
    assert timeline(deal)[-1].endswith("was recalled.")
    assert move(people["seller"], deal, "negotiation").change is not None


def test_a_waiting_record_cannot_be_moved_elsewhere_even_by_an_admin(people, gated):
    _big, _won, deal = gated
    request = move(people["seller"], deal, "won").gated.request
    for actor in (people["seller"], people["admin"]):
        with pytest.raises(Conflict, match=f"#{request.pk}"):
            move(actor, deal, "negotiation")
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "prospecting"
    assert moves_of(deal) == [(None, "prospecting")]


def test_a_second_move_with_the_same_version_is_refused(people, gated):
    """Two people drag the same card at once: the second finds the first's request."""
    _big, _won, deal = gated
    version = deal.version
    first = services.move(
        people["seller"], "opportunity", deal.pk, stage("won").pk, version=version
    )
    with pytest.raises(Conflict, match=f"#{first.gated.request.pk}"):
        services.move(people["admin"], "opportunity", deal.pk, stage("won").pk, version=version)
    assert ApprovalRequest.objects.count() == 1
    assert GatedMove.objects.count() == 1


def test_without_the_entry_condition_no_approval_is_needed(people, gated):
    _big, won, _deal = gated
    small = factories.opportunity(people["seller"], amount=Decimal(1_000_000))
    result = move(people["seller"], small, "won")
    assert result.gated is None
    assert result.change.to_stage == won
    assert not ApprovalRequest.objects.exists()


def test_a_process_that_approves_at_once_makes_the_move_at_once(people):
    always = process(
        people["admin"],
        code="skippable",
        steps=[
            {
                "name": "Only when huge",
                "condition": "amount > 900000000.0",
                "approvers": [{"kind": "manager"}],
            }
        ],
    )
    gate(people["admin"], "won", always)
    deal = factories.opportunity(people["seller"], amount=Decimal(80_000_000))
    result = move(people["seller"], deal, "won")
    assert result.gated.request.status == "approved"
    assert result.change is not None and result.record.stage.code == "won"
    assert "moved to Closed won" in services.gated_message(result.gated)


def test_setting_the_status_to_won_goes_through_the_gate(people, gated):
    _big, won, deal = gated
    saved = crm.update(people["seller"], "opportunity", deal.pk, {"status": "won"}, deal.version)
    assert (saved.stage.code, saved.status) == ("prospecting", "open")
    request = ApprovalRequest.objects.get(status="pending")
    assert GatedMove.objects.get(request=request).to_stage == won
    approvals.approve(people["boss"], request.pk)
    assert Opportunity.objects.get(pk=deal.pk).status == "won"


def test_a_deactivated_process_refuses_the_move_clearly(people, gated):
    big, _won, deal = gated
    approvals.save_process(people["admin"], {"is_active": False}, pk=big.pk, version=big.version)
    with pytest.raises(ValidationFailed, match="not active"):
        move(people["seller"], deal, "won")
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "prospecting"
    assert not ApprovalRequest.objects.exists()


# Defining the gate.


def _save_with(admin, **won):
    pipeline = Pipeline.objects.get(code="b2b-sales")
    stages = []
    for s in pipeline.stages.filter(is_active=True).order_by("order"):
        item = {"id": s.pk, "code": s.code, "name": s.name, "kind": s.kind}
        if s.code == "won":
            item.update(won)
        stages.append(item)
    return services.save_pipeline(admin, {"stages": stages}, pk=pipeline.pk, version=1)


def _won_index() -> int:
    return list(
        Pipeline.objects.get(code="b2b-sales")
        .stages.filter(is_active=True)
        .order_by("order")
        .values_list("code", flat=True)
    ).index("won")


@pytest.mark.parametrize(
    ("won", "field", "message"),
    [
        ({"gate": "approve"}, "approval_process_id", "needs an approval process"),
        ({"gate": "approve", "approval_process_id": 999999}, "approval_process_id", "No such"),
        ({"gate": "approve", "approval_process_id": "lead"}, "approval_process_id", "another"),
        ({"gate": "approve", "approval_process_id": "off"}, "approval_process_id", "not active"),
        ({"gate": "free", "approval_process_id": "big"}, "approval_process_id", "Only an"),
        (
            {"gate": "approve", "approval_process_id": "big", "gate_condition": "amount > 1.0"},
            "gate_condition",
            "no condition of its own",
        ),
        ({"gate": "vote"}, "gate", "approve"),
    ],
)
def test_a_bad_approve_gate_is_refused_when_the_pipeline_is_saved(people, won, field, message):
    admin = people["admin"]
    processes = {
        "big": process(admin),
        "lead": process(admin, object_type="lead", code="leads", entry_condition=""),
        "off": process(admin, code="off", is_active=False),
    }
    won = {k: processes[v].pk if v in processes else v for k, v in won.items()}
    with pytest.raises(ValidationFailed) as refused:
        _save_with(admin, **won)
    key = f"stages.{_won_index()}.{field}"
    assert message in " ".join(refused.value.errors[key])
    assert Stage.objects.get(pipeline__code="b2b-sales", code="won").gate == "free"


def test_the_gate_keeps_its_process_and_the_pipeline_a_new_version(people, gated):
    big, won, _deal = gated
    assert won.approval_process == big
    assert Pipeline.objects.get(code="b2b-sales").version == 2


def test_the_pipeline_editor_sets_an_approve_gate_or_says_what_is_missing(people):
    big = process(people["admin"])
    pipeline = Pipeline.objects.get(code="b2b-sales")
    url = reverse("pipelines:edit", args=[pipeline.pk])
    client = Client()
    client.force_login(people["admin"])
    page = client.get(url)
    assert "Big deal approval" in page.content.decode()
    data = form_data(page.context["form"])
    formset = page.context["formset"]
    data.update(form_data(formset.management_form))
    for form in formset:
        data.update(form_data(form))
    data = {key: value for key, value in data.items() if value is not None}
    row = f"stages-{_won_index()}-"
    refused = client.post(url, {**data, row + "gate": "approve", row + "approval_process": ""})
    assert refused.status_code == 422
    assert "An approve gate needs an approval process." in refused.content.decode()
    saved = client.post(url, {**data, row + "gate": "approve", row + "approval_process": big.pk})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    won = stage("won")
    assert (won.gate, won.approval_process) == ("approve", big)


# Through the API and the pages.


def test_the_api_answers_202_with_the_pending_approval(people, gated):
    _big, won, deal = gated
    api = token_client(people["seller"])
    response = api.post(
        f"pipelines/records/opportunity/{deal.pk}/move",
        {"stage_id": won.pk, "version": deal.version},
    )
    assert response.status_code == 202, response.content
    body = response.json()
    request = ApprovalRequest.objects.get()
    assert body["stage"]["code"] == "prospecting" and body["change"] is None
    assert body["pending_approval"]["request_id"] == request.pk
    assert body["pending_approval"]["status"] == "pending"
    assert body["pending_approval"]["stage"]["id"] == won.pk
    assert f"request #{request.pk}" in body["pending_approval"]["message"]
    # The board shows the card waiting; another move is a 409 naming the request.
    found = api.get(f"pipelines/{won.pipeline_id}/board").json()
    [card] = [c for col in found["columns"] for c in col["cards"] if c["id"] == deal.pk]
    assert card["pending_approval"] == {"request_id": request.pk, "stage_id": won.pk}
    again = api.post(
        f"pipelines/records/opportunity/{deal.pk}/move",
        {"stage_id": stage("proposal").pk, "version": deal.version},
    )
    assert f"#{request.pk}" in assert_problem(again, 409)["detail"]


def test_the_api_defines_an_approve_gate(people):
    big = process(people["admin"])
    api = token_client(people["admin"])
    pipeline = api.get(f"pipelines/{Pipeline.objects.get(code='b2b-sales').pk}").json()
    stages = [
        {k: v for k, v in s.items() if k not in ("order",)}
        | ({"gate": "approve", "approval_process_id": big.pk} if s["code"] == "won" else {})
        for s in pipeline["stages"]
    ]
    response = api.put(
        f"pipelines/{pipeline['id']}",
        {
            "code": pipeline["code"],
            "name": pipeline["name"],
            "name_ko": pipeline["name_ko"],
            "is_default": True,
            "stages": stages,
            "version": pipeline["version"],
        },
    )
    assert response.status_code == 200, response.content
    [won] = [s for s in response.json()["stages"] if s["code"] == "won"]
    assert (won["gate"], won["approval_process_id"]) == ("approve", big.pk)
    bad = [dict(s, approval_process_id=None) if s["code"] == "won" else s for s in stages]
    refused = api.put(
        f"pipelines/{pipeline['id']}",
        {
            "code": pipeline["code"],
            "name": pipeline["name"],
            "stages": bad,
            "version": response.json()["version"],
        },
    )
    assert_problem(refused, 422, f"stages.{_won_index()}.approval_process_id")


def test_the_record_page_moves_into_the_gate_and_shows_the_wait(people, gated):
    _big, won, deal = gated
    client = Client()
    client.force_login(people["seller"])
    page_url = f"/crm/opportunities/{deal.pk}/"
    response = client.post(
        f"/pipelines/records/opportunity/{deal.pk}/move/",
        {"stage_id": won.pk, "version": deal.version, "next": page_url},
        follow=True,
    )
    request = ApprovalRequest.objects.get()
    page = response.content.decode()
    assert f"Submitted for approval: Big deal approval, request #{request.pk}" in page
    assert "Waiting for approval" in page
    assert f"/approvals/requests/{request.pk}/" in page
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "prospecting"
    # A second try from a stale page is refused with the request named.
    again = client.post(
        f"/pipelines/records/opportunity/{deal.pk}/move/",
        {"stage_id": stage("proposal").pk, "version": deal.version, "next": page_url},
        follow=True,
    )
    assert f"#{request.pk}" in again.content.decode()
    card = board.card(people["seller"], "opportunity", deal.pk)
    assert card.waiting.request_id == request.pk


def test_the_board_page_marks_the_waiting_card(people, gated):
    _big, won, deal = gated
    move(people["seller"], deal, "won")
    client = Client()
    client.force_login(people["seller"])
    page = client.get(f"/pipelines/{won.pipeline_id}/board/").content.decode()
    assert "Waiting for approval to enter Closed won" in page


def test_the_rollups_match_a_rebuild_after_gated_moves(people, gated):
    _big, _won, deal = gated
    request = move(people["seller"], deal, "won").gated.request
    approvals.reject(people["boss"], request.pk, comment="No")
    request = move(people["seller"], deal, "won").gated.request
    approvals.approve(people["boss"], request.pk)
    live = sorted(StageDay.objects.values_list("stage_id", "day", "entered", "converted"))
    rollups.rebuild()
    rebuilt = sorted(StageDay.objects.values_list("stage_id", "day", "entered", "converted"))
    assert live == rebuilt


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks between connections need PostgreSQL"
)
def test_two_moves_at_once_start_one_request(transactional_db):
    admin = factories.user(Role.ADMIN, username="admin")
    boss = factories.user(Role.MANAGER, username="boss")
    seller = factories.user(Role.SALES, username="seller", manager=boss)
    colleague = factories.user(Role.ADMIN, username="colleague")
    # A pipeline of its own, made default: the shipped ones come from a data migration that
    # an earlier test with real transactions may have flushed away.
    big = process(admin)
    pipeline = services.save_pipeline(
        admin,
        {
            "object_type": "opportunity",
            "code": "gated",
            "name": "Gated",
            "is_default": True,
            "stages": [
                {"code": "prospecting", "name": "Prospecting"},
                {"code": "negotiation", "name": "Negotiation"},
                {
                    "code": "won",
                    "name": "Won",
                    "kind": "won",
                    "gate": "approve",
                    "approval_process_id": big.pk,
                },
            ],
        },
    )
    _prospecting, negotiation, won = pipeline.stages.order_by("order")
    deal = factories.opportunity(seller, amount=Decimal(80_000_000))
    assert deal.stage.pipeline_id == pipeline.pk
    start = threading.Barrier(2, timeout=30)

    def mover(user: User, target: Stage):
        def run():
            actor = User.objects.get(pk=user.pk)
            start.wait()
            return services.move(actor, "opportunity", deal.pk, target.pk, version=deal.version)

        return run

    outcomes = OwnConnections().run(mover(seller, won), mover(colleague, negotiation))
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1, outcomes
    stored = Opportunity.objects.get(pk=deal.pk)
    requests = ApprovalRequest.objects.count()
    # Either the request came first (and the other move was refused) or the other move did
    # (and the stale version refused the request).
    assert (stored.stage.code, requests) in {("prospecting", 1), ("negotiation", 0)}
