"""Approval requests: submitting, deciding by each rule, sending back, recall, reassign,
fallback to the process owner, delegation, actions, and versions of a definition."""

import datetime as dt

import pytest

from tests import factories
from trellis.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import Role
from trellis.crm.models import Opportunity
from trellis.mail.models import OutboundMessage
from trellis.process.approvals import queries, services
from trellis.process.approvals.models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalProcessVersion,
    ApprovalRequest,
    Delegation,
)
from trellis.process.models import Notification, Task

from .conftest import START, deal, define, fresh, kinds, step


def approvers(request) -> set[str]:
    return set(
        ApprovalAssignment.objects.filter(request=request, status="pending").values_list(
            "user__username", flat=True
        )
    )


def test_a_deal_goes_through_two_steps_to_approval(people):
    p = people
    define(
        p["admin"],
        steps=[step(), step("Finance", approvers=[{"kind": "user", "user_id": p["finance"].pk}])],
    )
    opportunity = deal(p["seller"])

    request = services.submit(p["seller"], "opportunity", opportunity.pk, comment="20% off")

    assert (request.status, request.step_index) == ("pending", 0)
    assert approvers(request) == {"boss"}
    assert Notification.objects.filter(user=p["boss"]).exists()
    assert any(p["boss"].email in m.to for m in OutboundMessage.objects.all())
    services.approve(p["boss"], request.pk, comment="ok")
    assert approvers(fresh(request)) == {"finance"}
    services.approve(p["finance"], request.pk)

    done = fresh(request)
    assert done.status == "approved"
    assert done.approved_values == {"amount": 80_000_000.0}
    assert kinds(request) == [
        "submitted",
        "step_started",
        "step_approved",
        "step_started",
        "step_approved",
        "approved",
    ]
    assert [r.request_id for r in queries.inbox(p["boss"])] == []


def test_no_process_applies_below_the_threshold_and_one_request_at_a_time(people):
    define(people["admin"])
    small = deal(people["seller"], amount=1_000_000)
    with pytest.raises(ValidationFailed) as refused:
        services.submit(people["seller"], "opportunity", small.pk)
    assert "process_id" in refused.value.errors
    big = deal(people["seller"])
    first = services.submit(people["seller"], "opportunity", big.pk)
    with pytest.raises(Conflict, match=f"#{first.pk}"):
        services.submit(people["seller"], "opportunity", big.pk)
    assert ApprovalRequest.objects.count() == 1


def test_rejection_needs_a_comment_and_ends_the_request(people):
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    with pytest.raises(ValidationFailed) as refused:
        services.reject(people["boss"], request.pk, comment="  ")
    assert "comment" in refused.value.errors
    assert fresh(request).status == "pending"

    services.reject(people["boss"], request.pk, comment="Too much discount")

    assert fresh(request).status == "rejected"
    assert kinds(request)[-1] == "rejected"


def test_a_decision_is_recorded_once_and_only_by_an_approver(people):
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    with pytest.raises(PermissionDenied, match="not an approver"):
        services.approve(people["director"], request.pk)
    with pytest.raises(PermissionDenied):
        services.approve(people["seller"], request.pk)
    services.approve(people["boss"], request.pk)
    with pytest.raises(Conflict, match="already approved"):
        services.approve(people["boss"], request.pk)
    with pytest.raises(Conflict):
        services.reject(people["boss"], request.pk, comment="changed my mind")
    assert ApprovalAssignment.objects.filter(request=request, status="approved").count() == 1
    assert kinds(request).count("approved") == 1


def test_all_must_approve_and_n_of_m(people):
    p = people
    users = [{"kind": "user", "user_id": p[n].pk} for n in ("boss", "director", "finance")]
    define(
        p["admin"],
        steps=[
            step("Board", approvers=users, rule="all"),
            step("Two of three", approvers=users, rule="n_of_m", required=2),
        ],
    )
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    services.approve(p["boss"], request.pk)
    services.approve(p["director"], request.pk)
    assert fresh(request).step_index == 0
    services.approve(p["finance"], request.pk)
    assert fresh(request).step_index == 1
    services.reject(p["boss"], request.pk, comment="no")
    assert fresh(request).status == "pending"
    services.approve(p["finance"], request.pk)
    assert fresh(request).status == "pending"
    services.approve(p["director"], request.pk)
    assert fresh(request).status == "approved"


def test_a_rejection_can_send_the_request_back_a_step(people):
    p = people
    define(
        p["admin"],
        steps=[
            step(),
            step("Director", approvers=[{"kind": "managers_manager"}], on_reject="back"),
        ],
    )
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    services.approve(p["boss"], request.pk)
    services.reject(p["director"], request.pk, comment="Ask the manager again")
    back = fresh(request)
    assert (back.status, back.step_index) == ("pending", 0)
    assert approvers(back) == {"boss"}
    assert "sent_back" in kinds(request)


def test_a_false_step_condition_skips_approves_or_rejects(people):
    p = people
    finance = [{"kind": "user", "user_id": p["finance"].pk}]
    define(
        p["admin"],
        steps=[
            step("Huge only", condition="amount > 500000000.0", approvers=finance),
            step(),
        ],
    )
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assert approvers(request) == {"boss"}
    assert kinds(request)[:2] == ["submitted", "step_skipped"]

    p2 = services.save_process(
        p["admin"],
        {
            "object_type": "lead",
            "code": "lead-check",
            "name": "Lead check",
            "steps": [step(condition="status == 'qualified'", when_false="reject")],
        },
    )
    lead = factories.lead(p["seller"])
    refused = services.submit(p["seller"], "lead", lead.pk, process_id=p2.pk)
    assert refused.status == "rejected"


def test_an_approver_resolving_to_nobody_falls_back_to_the_process_owner(people):
    p = people
    define(p["admin"], owner_id=p["finance"].pk)
    loner = p["director"]  # has no manager
    request = services.submit(loner, "opportunity", deal(loner).pk)
    assignment = ApprovalAssignment.objects.get(request=request)
    assert (assignment.user, assignment.via) == (p["finance"], "fallback")
    assert "fallback" in kinds(request)


def test_recall_by_the_submitter_only(people):
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    with pytest.raises(PermissionDenied):
        services.recall(people["boss"], request.pk)
    services.recall(people["seller"], request.pk, comment="wrong amount")
    assert fresh(request).status == "recalled"
    assert approvers(request) == set()
    with pytest.raises(Conflict):
        services.approve(people["boss"], request.pk)


def test_an_admin_reassigns_an_approver(people):
    p = people
    define(p["admin"])
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    with pytest.raises(PermissionDenied):
        services.reassign(p["boss"], request.pk, p["boss"].pk, p["finance"].pk)
    with pytest.raises(ValidationFailed) as refused:
        services.reassign(p["admin"], request.pk, p["finance"].pk, p["seller"].pk)
    assert set(refused.value.errors) == {"from_user_id", "to_user_id"}
    services.reassign(p["admin"], request.pk, p["boss"].pk, p["finance"].pk)
    assert approvers(request) == {"finance"}
    with pytest.raises(PermissionDenied):
        services.approve(p["boss"], request.pk)
    services.approve(p["finance"], request.pk)
    assert fresh(request).status == "approved"


def test_a_delegate_decides_for_an_absent_approver(people, clock):
    p = people
    define(p["admin"])
    with pytest.raises(ValidationFailed):
        services.set_delegation(p["boss"], p["boss"].pk, START, START + dt.timedelta(days=1))
    services.set_delegation(
        p["boss"], p["director"].pk, START - dt.timedelta(hours=1), START + dt.timedelta(days=5)
    )
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assignment = ApprovalAssignment.objects.get(request=request)
    assert (assignment.user, assignment.on_behalf_of) == (p["director"], p["boss"])
    services.approve(p["director"], request.pk)
    decided = next(e for e in queries.history_of(request) if e.kind == "step_approved")
    assert (decided.actor, decided.on_behalf_of) == (p["director"], p["boss"])


@pytest.mark.parametrize("kind", ["user", "role", "manager"])
def test_a_running_delegation_to_an_active_delegate_counts_for_every_kind_of_approver(people, kind):
    p = people
    boss, finance = p["boss"], p["finance"]
    approver = {
        "user": {"kind": "user", "user_id": boss.pk},
        "role": {"kind": "role", "role": "manager"},  # the director, the boss and finance
        "manager": {"kind": "manager"},
    }[kind]
    define(p["admin"], steps=[step("Step", approvers=[approver])])
    day = dt.timedelta(days=1)
    # The boss is away, to the admin; a delegation to finance ended yesterday. Finance is
    # away too, but to someone whose account is closed, so finance keeps the step.
    Delegation.objects.create(
        user=boss, delegate=finance, starts_at=START - 3 * day, ends_at=START - day
    )
    services.set_delegation(boss, p["admin"].pk, START - day, START + day)
    closed = factories.user(Role.MANAGER, username="closed", team=boss.team, is_active=False)
    Delegation.objects.create(
        user=finance, delegate=closed, starts_at=START - day, ends_at=START + day
    )

    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)

    assigned = {
        (a.user.username, a.on_behalf_of.username if a.on_behalf_of else None)
        for a in ApprovalAssignment.objects.filter(request=request).select_related(
            "user", "on_behalf_of"
        )
    }
    expected = {("admin", "boss")}
    if kind == "role":
        expected |= {("director", None), ("finance", None)}
    assert assigned == expected


def test_actions_run_on_approval_and_a_failing_one_is_recorded(people):
    p = people
    define(
        p["admin"],
        actions={
            "approve": [
                # As the definition page sends it: the value as typed.
                {"kind": "set_fields", "values": {"probability": "90"}},
                {"kind": "email", "to": "submitter", "subject": "Approved", "body": "Go"},
                {"kind": "task", "title": "Send the contract", "assignee": "owner"},
                {"kind": "set_fields", "values": {"probability": 900}},
            ]
        },
    )
    opportunity = deal(p["seller"])
    request = services.submit(p["seller"], "opportunity", opportunity.pk)
    services.approve(p["boss"], request.pk)

    assert Opportunity.objects.get(pk=opportunity.pk).probability == 90
    assert OutboundMessage.objects.filter(subject="Approved").exists()
    assert Task.objects.filter(title="Send the contract", owner=p["seller"]).exists()
    assert kinds(request)[-4:] == ["action", "action", "action", "action_failed"]
    assert fresh(request).status == "approved"


def test_a_decision_moves_the_record_to_the_stage_the_process_names(people):
    from trellis.process.pipelines.models import Stage

    p = people
    opportunity = deal(p["seller"])
    stages = list(Stage.objects.filter(pipeline=opportunity.stage.pipeline).order_by("order"))
    proposal, lost = stages[2], next(s for s in stages if s.kind == "lost")
    define(
        p["admin"],
        actions={
            "approve": [{"kind": "stage", "stage": proposal.pk}],
            "reject": [{"kind": "stage", "stage": lost.pk}],
        },
    )
    request = services.submit(p["seller"], "opportunity", opportunity.pk)
    services.approve(p["boss"], request.pk)
    assert Opportunity.objects.get(pk=opportunity.pk).stage_id == proposal.pk
    moved = ApprovalEvent.objects.filter(request=request, kind="action").get()
    assert moved.data["done"] == proposal.label

    other = deal(p["seller"])
    request = services.submit(p["seller"], "opportunity", other.pk)
    services.reject(p["boss"], request.pk, comment="Too risky")
    assert Opportunity.objects.get(pk=other.pk).stage_id == lost.pk
    assert Opportunity.objects.get(pk=other.pk).status == "lost"


def test_publishing_a_change_makes_a_new_version_running_requests_keep_theirs(people):
    p = people
    process = define(p["admin"])
    request = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    finance = [{"kind": "user", "user_id": p["finance"].pk}]
    services.save_process(
        p["admin"], {"steps": [step("Finance", approvers=finance)]}, pk=process.pk, version=1
    )
    assert ApprovalProcessVersion.objects.filter(process=process).count() == 2
    assert approvers(request) == {"boss"}
    services.approve(p["boss"], request.pk)
    assert fresh(request).status == "approved"
    later = services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    assert later.process_version.number == 2
    assert approvers(later) == {"finance"}
    with pytest.raises(Exception) as stale:
        services.save_process(p["admin"], {"name": "x"}, pk=process.pk, version=1)
    assert stale.value.status == 409


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"steps": []}, "steps"),
        ({"entry_condition": "amount >"}, "entry_condition"),
        ({"steps": [step(timeout_hours=0)]}, "steps.0.timeout_hours"),
        (
            {"steps": [step(approvers=[{"kind": "user", "user_id": 999999}])]},
            "steps.0.approvers.0.user_id",
        ),
        ({"steps": [step(condition="nope > 1")]}, "steps.0.condition"),
        ({"steps": [step(on_reject="back")]}, "steps.0.on_reject"),
        ({"steps": [step(escalation="approve")]}, "steps.0.escalation"),
        ({"steps": [step(rule="n_of_m")]}, "steps.0.required"),
        ({"material_fields": ["nope"]}, "material_fields"),
        ({"actions": {"approve": [{"kind": "stage", "stage": 999999}]}}, "actions.approve.0.stage"),
        ({"actions": {"recall": [{"kind": "stage"}]}}, "actions.recall.0.stage"),
        ({"object_type": "product"}, "object_type"),
    ],
)
def test_a_bad_definition_is_refused_whole(people, data, field):
    with pytest.raises(ValidationFailed) as refused:
        define(people["admin"], **data)
    assert field in refused.value.errors, refused.value.errors
    assert not ApprovalProcess.objects.exists()


def test_a_condition_error_names_its_line_and_column(people):
    with pytest.raises(ValidationFailed) as refused:
        define(people["admin"], entry_condition="amount > 1.0 &&\n  (")
    assert "line 2" in refused.value.errors["entry_condition"][0]


def test_only_admins_define_and_hidden_requests_are_404(people, outsider):
    with pytest.raises(PermissionDenied):
        define(people["boss"])
    define(people["admin"])
    request = services.submit(people["seller"], "opportunity", deal(people["seller"]).pk)
    with pytest.raises(NotFound):
        services.approve(outsider, request.pk)
    with pytest.raises(NotFound):
        services.approve(people["boss"], 987654)
