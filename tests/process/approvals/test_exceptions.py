"""Exception requests: each kept with requester, reason, decider and outcome, granted or not,
and shown on the record's timeline."""

import pytest

from trellis.core.errors import Conflict, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.process.approvals import services
from trellis.process.approvals.models import ApprovalRequest, ExceptionRequest

from .conftest import deal, define, fresh, step


@pytest.fixture
def pending(people):
    p = people
    finance = [{"kind": "user", "user_id": p["finance"].pk}]
    define(
        p["admin"], owner_id=p["director"].pk, steps=[step(), step("Finance", approvers=finance)]
    )
    opportunity = deal(p["seller"])
    return opportunity, services.submit(p["seller"], "opportunity", opportunity.pk)


def test_a_refused_exception_is_kept_and_changes_nothing(people, pending):
    opportunity, request = pending
    with pytest.raises(ValidationFailed):
        services.request_exception(people["seller"], request.pk, "cancel", " ")
    asked = services.request_exception(people["seller"], request.pk, "cancel", "Customer left")
    with pytest.raises(Conflict):
        services.request_exception(people["seller"], request.pk, "cancel", "again")
    with pytest.raises(PermissionDenied):
        services.decide_exception(people["boss"], asked.pk, grant=True)
    with pytest.raises(ValidationFailed):
        services.decide_exception(people["director"], asked.pk, grant=False)
    services.decide_exception(people["director"], asked.pk, grant=False, note="Wait a day")

    kept = ExceptionRequest.objects.get()
    assert (kept.status, kept.decided_by, kept.requested_by, kept.reason) == (
        "refused",
        people["director"],
        people["seller"],
        "Customer left",
    )
    assert fresh(request).status == "pending"
    summaries = [
        e.changes["approval"][1]
        for e in AuditEvent.objects.filter(object_id=opportunity.pk, changes__has_key="approval")
    ]
    assert any("Exception requested" in s for s in summaries)
    assert any("refused" in s for s in summaries)
    with pytest.raises(Conflict):
        services.decide_exception(people["director"], asked.pk, grant=True)


def test_cancel_override_and_unlock(people, pending, clock):
    opportunity, request = pending
    p = people
    override = services.request_exception(p["seller"], request.pk, "override", "Known customer")
    services.decide_exception(p["director"], override.pk, grant=True)
    assert (fresh(request).status, fresh(request).step_index) == ("pending", 1)

    unlock = services.request_exception(p["seller"], request.pk, "unlock", "Fix the name")
    services.decide_exception(p["admin"], unlock.pk, grant=True)
    saved = crm.update(p["seller"], "opportunity", opportunity.pk, {"name": "Fixed"}, 1)
    assert saved.name == "Fixed"
    clock.shift(60 * 60 * 5)
    with pytest.raises(ValidationFailed):
        crm.update(p["seller"], "opportunity", opportunity.pk, {"name": "Again"}, saved.version)

    cancel = services.request_exception(p["seller"], request.pk, "cancel", "Deal lost")
    services.decide_exception(p["director"], cancel.pk, grant=True)
    assert fresh(request).status == "cancelled"
    assert ExceptionRequest.objects.filter(status="granted").count() == 3


def test_clone_and_resume_from_a_step(people, pending):
    _opportunity, request = pending
    clone = services.request_exception(
        people["seller"], request.pk, "clone", "Terms changed", from_step=2
    )
    services.decide_exception(people["director"], clone.pk, grant=True)
    clone.refresh_from_db()
    resumed = clone.result_request
    assert fresh(request).status == "cancelled"
    assert (resumed.status, resumed.step_index, resumed.origin) == ("pending", 1, "cloned")
    with pytest.raises(ValidationFailed):
        services.request_exception(people["seller"], resumed.pk, "clone", "x", from_step=9)


def test_changing_the_terms_of_an_approved_record_reopens_approval(people, pending):
    opportunity, request = pending
    services.approve(people["boss"], request.pk)
    services.approve(people["finance"], request.pk)
    with pytest.raises(Conflict):
        services.request_exception(people["seller"], request.pk, "unlock", "late")
    asked = services.request_exception(
        people["seller"], request.pk, "change_terms", "Bigger order", changes={"amount": 99_000_000}
    )
    services.decide_exception(people["director"], asked.pk, grant=True)
    assert Opportunity.objects.get(pk=opportunity.pk).amount == 99_000_000
    assert ApprovalRequest.objects.get(status="pending").origin == "reopened"
