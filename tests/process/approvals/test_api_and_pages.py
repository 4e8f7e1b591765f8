"""Approvals through the JSON API and the pages: the same services, the same answers."""

import threading

import pytest
from django.db import connection
from django.test import Client

from trellis.core.models import User
from trellis.process.approvals import services
from trellis.process.approvals.models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalRequest,
)
from trellis.process.pipelines.models import Stage

from ...api.conftest import assert_problem, token_client
from ...concurrency import OwnConnections
from .conftest import deal, define, fresh, step


def test_define_submit_decide_through_the_api(people):
    p = people
    admin = token_client(p["admin"])
    bad = admin.post(
        "approval-processes",
        {"object_type": "opportunity", "code": "x", "name": "X", "steps": [step(timeout_hours=0)]},
    )
    assert_problem(bad, 422, "steps.0.timeout_hours")
    bad = admin.post(
        "approval-processes",
        {"object_type": "opportunity", "code": "x", "name": "X", "entry_condition": "amount >"},
    )
    body = assert_problem(bad, 422, "entry_condition", "steps")
    assert "line 1" in str(body["errors"])
    made = admin.post(
        "approval-processes",
        {
            "object_type": "opportunity",
            "code": "big",
            "name": "Big",
            "entry_condition": "amount > 50000000.0",
            "steps": [step()],
        },
    )
    assert made.status_code == 201, made.content
    process = made.json()
    assert token_client(p["boss"]).post("approval-processes", {}).status_code in (403, 422)

    seller = token_client(p["seller"])
    opportunity = deal(p["seller"])
    submitted = seller.post(
        "approval-requests", {"object_type": "opportunity", "object_id": opportunity.pk}
    )
    assert submitted.status_code == 201, submitted.content
    request_id = submitted.json()["id"]
    assert submitted.json()["steps"][0]["approvers"][0]["user_id"] == p["boss"].pk

    boss = token_client(p["boss"])
    inbox = boss.get("approvals/inbox").json()
    assert (inbox["waiting"], inbox["items"][0]["request_id"]) == (1, request_id)
    assert_problem(boss.post(f"approval-requests/{request_id}/reject", {}), 422, "comment")
    approved = boss.post(f"approval-requests/{request_id}/approve", {"comment": "ok"})
    assert approved.json()["status"] == "approved"
    assert_problem(boss.post(f"approval-requests/{request_id}/approve", {}), 409)
    assert ApprovalEvent.objects.filter(kind="step_approved").count() == 1

    republished = admin.put(f"approval-processes/{process['id']}", {"name": "Bigger", "version": 1})
    assert republished.json()["version"] == 2
    stale = admin.put(f"approval-processes/{process['id']}", {"name": "Old", "version": 1})
    assert assert_problem(stale, 409)["current"]["version"] == 2


def test_hidden_requests_are_404_and_exceptions_through_the_api(people, outsider):
    p = people
    define(p["admin"], owner_id=p["director"].pk)
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assert_problem(token_client(outsider).get(f"approval-requests/{request.pk}"), 404)
    assert_problem(token_client(outsider).post(f"approval-requests/{request.pk}/approve"), 404)

    asked = token_client(p["seller"]).post(
        f"approval-requests/{request.pk}/exceptions", {"kind": "cancel", "reason": "Lost"}
    )
    assert asked.status_code == 201, asked.content
    director = token_client(p["director"])
    [listed] = director.get("approval-exceptions").json()
    decided = director.post(f"approval-exceptions/{listed['id']}/decide", {"grant": True})
    assert decided.json()["status"] == "granted"
    assert fresh(request).status == "cancelled"


def test_delegation_through_the_api(people):
    api = token_client(people["boss"])
    bad = api.post(
        "approvals/delegations",
        {
            "delegate_id": people["boss"].pk,
            "starts_at": "2026-03-03T00:00:00+09:00",
            "ends_at": "2026-03-02T00:00:00+09:00",
        },
    )
    assert_problem(bad, 422)
    made = api.post(
        "approvals/delegations",
        {
            "delegate_id": people["director"].pk,
            "starts_at": "2026-03-03T00:00:00+09:00",
            "ends_at": "2026-03-10T00:00:00+09:00",
        },
    )
    assert made.status_code == 201, made.content
    assert len(api.get("approvals/delegations").json()) == 1
    assert api.delete(f"approvals/delegations/{made.json()['id']}").status_code == 204


def _browser(user, language: str = "en") -> Client:
    client = Client(headers={"Accept-Language": language})
    client.force_login(user)
    return client


def test_the_record_panel_the_inbox_and_deciding_from_the_inbox(people):
    p = people
    define(p["admin"])
    opportunity = deal(p["seller"])
    page = _browser(p["seller"]).get(f"/crm/opportunities/{opportunity.pk}/")
    assert "Submit for approval" in page.content.decode()
    submitted = _browser(p["seller"]).post(
        f"/approvals/submit/opportunity/{opportunity.pk}/",
        {"next": f"/crm/opportunities/{opportunity.pk}/"},
    )
    assert submitted.status_code == 302
    request = ApprovalRequest.objects.get()
    page = _browser(p["seller"]).get(f"/crm/opportunities/{opportunity.pk}/").content.decode()
    assert f"#{request.pk}" in page and "locked" in page

    boss = _browser(p["boss"])
    inbox = boss.get("/approvals/").content.decode()
    assert f"/approvals/requests/{request.pk}/" in inbox
    refused = boss.post(f"/approvals/requests/{request.pk}/reject/", {"comment": ""}, follow=True)
    assert "Say why you reject it." in refused.content.decode()
    assert fresh(request).status == "pending"
    boss.post(f"/approvals/requests/{request.pk}/approve/", {"next": "/approvals/"})
    assert fresh(request).status == "approved"
    detail = boss.get(f"/approvals/requests/{request.pk}/")
    assert detail.status_code == 200
    assert _browser(p["admin"]).get("/approvals/processes/").status_code == 200
    assert _browser(p["boss"]).get("/approvals/processes/").status_code == 404


def _step_data(index: int, **values) -> dict:
    """A step of the definition page's form, as the browser posts it."""
    fields = {"when_false": "skip", "rule": "first", "escalation": "none", "on_reject": "end"}
    return {f"steps-{index}-{key}": value for key, value in {**fields, **values}.items()}


def _action_data(index: int, **values) -> dict:
    """An action of the definition page's form, as the browser posts it."""
    fields = {"moment": "approve", "kind": "set_fields", "assignee": "submitter", "stage": ""}
    return {f"actions-{index}-{key}": value for key, value in {**fields, **values}.items()}


def _blocks(prefix: str, *blocks: dict, initial: int = 0) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": len(blocks),
        f"{prefix}-INITIAL_FORMS": initial,
        f"{prefix}-MIN_NUM_FORMS": 0,
        f"{prefix}-MAX_NUM_FORMS": 20,
    }
    for values in blocks:
        data.update(values)
    return data


def _steps(*steps: dict, initial: int = 0) -> dict:
    return _blocks("steps", *steps, initial=initial)


def test_an_admin_defines_a_process_on_the_page(people):
    admin = _browser(people["admin"])
    data = {
        "object_type": "opportunity",
        "code": "page-made",
        "name": "From the page",
        "owner_id": people["admin"].pk,
        "is_active": "on",
        "entry_condition": "amount > ",
        **_blocks("actions", _action_data(0)),
    }
    # The blank step the page offers, left blank: no step at all.
    refused = admin.post("/approvals/processes/new/", {**data, **_steps(_step_data(0))})
    assert refused.status_code == 422
    page = refused.content.decode()
    assert "Give at least one step." in page and "does not compile" in page

    # Two steps: each one's mistakes next to its own fields, nothing saved.
    data["entry_condition"] = "amount > 1.0"
    two = _steps(
        _step_data(0, name="Manager", manager="on", **{"ORDER": 1}),
        _step_data(
            1,
            name="Finance",
            roles=["planet"],
            timeout_hours=4,
            remind_before_hours=6,
            on_reject="back",
            **{"ORDER": 2},
        ),
    )
    refused = admin.post("/approvals/processes/new/", {**data, **two})
    assert refused.status_code == 422
    page = refused.content.decode()
    assert "Select a valid choice. planet" in page
    assert not ApprovalProcess.objects.filter(code="page-made").exists()
    two["steps-1-roles"] = ["manager"]
    refused = admin.post("/approvals/processes/new/", {**data, **two})
    assert "give fewer hours than the timeout" in refused.content.decode()

    two.update({"steps-1-remind_before_hours": 2, "steps-1-escalation": "manager"})
    assert admin.post("/approvals/processes/new/", {**data, **two}).status_code == 302
    process = ApprovalProcess.objects.get(code="page-made")
    steps = services.current_version(process).steps
    assert [(s["name"], s["approvers"], s["on_reject"]) for s in steps] == [
        ("Manager", [{"kind": "manager"}], "end"),
        ("Finance", [{"kind": "role", "role": "manager"}], "back"),
    ]
    assert (steps[1]["timeout_hours"], steps[1]["remind_before_hours"]) == (4, 2)

    # The page shows the saved steps; swapping their order and removing one publishes anew.
    edit = admin.get(f"/approvals/processes/{process.pk}/")
    page = edit.content.decode()
    assert 'value="Manager"' in page and 'value="Finance"' in page
    # Beside the form, the stages a "stage" action may name, with their numbers.
    stage = Stage.objects.filter(pipeline__object_type="opportunity", is_active=True).first()
    assert f"{stage.pk} {stage.label}" in page
    edited = {
        **data,
        "version": process.version,
        **_steps(
            _step_data(0, name="Manager", manager="on", ORDER=2, DELETE="on"),
            _step_data(
                1,
                name="Finance",
                roles=["manager"],
                users=[people["admin"].pk],
                rule="n_of_m",
                required=1,
                ORDER=1,
            ),
            initial=2,
        ),
    }
    answer = admin.post(f"/approvals/processes/{process.pk}/", edited)
    assert answer.status_code == 302
    process.refresh_from_db()
    [finance] = services.current_version(process).steps
    assert finance["name"] == "Finance" and finance["rule"] == "n_of_m"
    assert finance["approvers"] == [
        {"kind": "user", "user_id": people["admin"].pk},
        {"kind": "role", "role": "manager"},
    ]
    # Actions in blocks too: an e-mail without a subject is refused in its own block.
    stage = Stage.objects.filter(pipeline=deal(people["seller"]).stage.pipeline).last()
    with_actions = {
        **data,
        "version": process.version,
        **_steps(_step_data(0, name="Finance", roles=["manager"]), initial=1),
        **_blocks(
            "actions",
            _action_data(0, kind="set_fields", values="probability = 90"),
            _action_data(1, moment="reject", kind="email", to="submitter", body="Sorry"),
            _action_data(2, moment="approve", kind="stage", stage=stage.pk),
            _action_data(3),
        ),
    }
    refused = admin.post(f"/approvals/processes/{process.pk}/", with_actions)
    assert refused.status_code == 422
    assert "Give a subject." in refused.content.decode()
    with_actions["actions-1-subject"] = "Not this time"
    assert admin.post(f"/approvals/processes/{process.pk}/", with_actions).status_code == 302
    process.refresh_from_db()
    assert services.current_version(process).actions == {
        "approve": [
            {"kind": "set_fields", "values": {"probability": "90"}},
            {"kind": "stage", "stage": stage.pk},
        ],
        "reject": [
            {"kind": "email", "to": "submitter", "subject": "Not this time", "body": "Sorry"}
        ],
        "recall": [],
    }
    page = admin.get(f"/approvals/processes/{process.pk}/").content.decode()
    assert "probability = 90" in page and 'value="Not this time"' in page

    # In Korean, the page names its parts in Korean.
    korean = _browser(people["admin"], "ko").get(f"/approvals/processes/{process.pk}/")
    assert "단계 1" in korean.content.decode()


def test_exception_cancel_and_unlock_on_the_page(people):
    p = people
    define(p["admin"], owner_id=p["director"].pk)
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    seller = _browser(p["seller"])
    seller.post(
        f"/approvals/requests/{request.pk}/exceptions/", {"kind": "unlock", "reason": "Typo"}
    )
    seller.post(
        f"/approvals/requests/{request.pk}/exceptions/", {"kind": "cancel", "reason": "Lost"}
    )
    director = _browser(p["director"])
    page = director.get(f"/approvals/requests/{request.pk}/").content.decode()
    assert page.count("Grant") == 2
    from trellis.process.approvals.models import ExceptionRequest

    unlock, cancel = ExceptionRequest.objects.order_by("pk")
    director.post(
        f"/approvals/exceptions/{unlock.pk}/decide/", {"decision": "refuse", "note": "No"}
    )
    director.post(f"/approvals/exceptions/{cancel.pk}/decide/", {"decision": "grant"})
    assert [e.status for e in ExceptionRequest.objects.order_by("pk")] == ["refused", "granted"]
    assert fresh(request).status == "cancelled"


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks between connections need PostgreSQL"
)
def test_two_approvers_at_once_record_exactly_one_decision(transactional_db):
    from tests import factories
    from trellis.core.models import Role

    admin = factories.user(Role.ADMIN, username="admin")
    boss = factories.user(Role.MANAGER, username="boss")
    twin = factories.user(Role.MANAGER, username="twin")
    seller = factories.user(Role.SALES, username="seller", manager=boss)
    users = [{"kind": "user", "user_id": u.pk} for u in (boss, twin)]
    define(
        admin,
        steps=[
            step(approvers=users),
            step("Second", approvers=[{"kind": "user", "user_id": admin.pk}]),
        ],
    )
    start = threading.Barrier(3, timeout=30)

    def decide(user: User, approve: bool):
        def run():
            actor = User.objects.get(pk=user.pk)
            start.wait()
            if approve:
                return services.approve(actor, request.pk)
            return services.reject(actor, request.pk, comment="no")

        return run

    for _round in range(3):
        request = services.submit(seller, "opportunity", deal(seller).pk)
        outcomes = OwnConnections().run(decide(boss, True), decide(boss, True), decide(twin, False))
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert len(errors) == 2, outcomes
        decided = ApprovalAssignment.objects.filter(request=request).exclude(status="pending")
        assert decided.exclude(status="closed").count() == 1
        stored = fresh(request)
        assert (stored.status, stored.step_index) in {("pending", 1), ("rejected", 0)}
        assert ApprovalEvent.objects.filter(request=request, kind="step_started").count() == (
            2 if stored.status == "pending" else 1
        )
        ApprovalRequest.objects.filter(pk=request.pk).update(status="cancelled")


def test_the_out_of_office_page_sets_and_ends_a_delegate(people):
    boss = _browser(people["boss"])
    assert boss.get("/approvals/delegation/").status_code == 200
    refused = boss.post(
        "/approvals/delegation/",
        {
            "delegate": people["director"].pk,
            "starts_at": "2026-03-05 09:00",
            "ends_at": "2026-03-04 09:00",
        },
    )
    assert refused.status_code == 422
    assert "The end comes after the start." in refused.content.decode()
    made = boss.post(
        "/approvals/delegation/",
        {
            "delegate": people["director"].pk,
            "starts_at": "2026-03-03 09:00",
            "ends_at": "2026-03-06 18:00",
        },
    )
    assert made.status_code == 302
    from trellis.process.approvals.models import Delegation

    delegation = Delegation.objects.get()
    assert delegation.delegate == people["director"]
    boss.post(f"/approvals/delegation/{delegation.pk}/end/")
    assert Delegation.objects.get().ends_at <= delegation.ends_at


def test_the_owner_sees_exceptions_to_decide_in_the_inbox(people):
    p = people
    define(p["admin"], owner_id=p["director"].pk)
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    services.request_exception(p["seller"], request.pk, "unlock", "Wrong contact")
    page = _browser(p["director"]).get("/approvals/").content.decode()
    assert "Exception requests to decide" in page and "Wrong contact" in page


def test_an_action_that_empties_a_field_shows_an_empty_value_not_none():
    from trellis.process.approvals.forms import ActionForm

    shown = ActionForm.initial_of(
        "approve", {"kind": "set_fields", "values": {"next_step": None, "probability": 90}}
    )
    assert shown["values"] == "next_step = \nprobability = 90"
