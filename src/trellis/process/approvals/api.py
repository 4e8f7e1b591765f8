"""The JSON API of approvals: process definitions, requests and decisions, the inbox,
delegations and exception requests. Every endpoint calls the same services as the pages."""

from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, Timestamp, Version, json_response, text
from trellis.core.errors import NotFound, StaleVersion

from . import api_reports, queries, services
from .models import (
    ApprovalProcess,
    ApprovalRequest,
    Delegation,
    ExceptionRequest,
)

router = Router(tags=["Approvals"])

ExceptionKind = Literal[tuple(ExceptionRequest.Kind.values)]


class Output(Schema):
    model_config = ConfigDict(extra="allow")


class ProcessIn(Input):
    object_type: text(max_length=40) | None = Field(
        None, description="`opportunity`, `order`, `lead` or `account`; fixed once created."
    )
    code: text(max_length=40) | None = None
    name: text(max_length=100) | None = None
    name_ko: text(max_length=100) | None = None
    owner_id: Id | None = Field(
        None, description="Decides exceptions; gets steps whose approvers resolve to nobody."
    )
    is_active: bool | None = None
    entry_condition: text(max_length=2000) | None = Field(
        None, description="CEL over the record's fields, e.g. `amount > 50000000.0`."
    )
    steps: list[dict[str, Any]] | None = Field(
        None,
        max_length=services.MAX_STEPS,
        description="In order. Each: `name`, `condition` (CEL), `when_false` (skip / approve / "
        "reject), `approvers` (list of `{kind: user, user_id}`, `{kind: role, role}`, "
        "`{kind: manager}`, `{kind: managers_manager}`, `{kind: field, field}`), `rule` "
        "(first / all / n_of_m) with `required`, `timeout_hours` (business hours), "
        "`remind_before_hours`, `escalation` (none / manager / user / approve / reject) with "
        "`escalate_to`, `on_reject` (end / back).",
    )
    material_fields: list[str] | None = None
    editable_fields: list[str] | None = None
    actions: dict[str, list[dict[str, Any]]] | None = Field(
        None,
        description="`approve`, `reject`, `recall`: lists of `{kind: set_fields, values}`, "
        "`{kind: email, to, subject, body}`, `{kind: task, title, assignee, due_in_hours}`, "
        "`{kind: stage, stage}` (the id of a stage of a pipeline of the same kind of record).",
    )


class ProcessReplace(ProcessIn):
    version: Version


class CommentIn(Input):
    comment: text(max_length=4000) = ""


class SubmitIn(Input):
    object_type: text(max_length=40)
    object_id: Id
    process_id: Id | None = Field(
        None, description="Leave out for the first active process whose entry condition holds."
    )
    comment: text(max_length=4000) = ""


class ReassignIn(Input):
    from_user_id: Id
    to_user_id: Id
    comment: text(max_length=4000) = ""


class DelegationIn(Input):
    delegate_id: Id
    starts_at: Timestamp
    ends_at: Timestamp


class ExceptionIn(Input):
    kind: ExceptionKind
    reason: text(max_length=4000)
    from_step: int | None = Field(None, ge=1, le=services.MAX_STEPS, description="For `clone`.")
    changes: dict[str, Any] | None = Field(None, description="For `change_terms`.")


class ExceptionDecisionIn(Input):
    grant: bool
    note: text(max_length=4000) = ""


class ListParams(Schema):
    object_type: text(max_length=40) | None = None
    object_id: Id | None = None
    status: Literal[tuple(ApprovalRequest.Status.values)] | None = None


# What the answers hold.


def _process_row(process: ApprovalProcess) -> dict[str, Any]:
    definition = services.current_version(process)
    return {
        "id": process.pk,
        "object_type": process.object_type,
        "code": process.code,
        "name": process.name,
        "name_ko": process.name_ko,
        "owner_id": process.owner_id,
        "is_active": process.is_active,
        "version": process.version,
        "entry_condition": definition.entry_condition,
        "steps": definition.steps,
        "material_fields": definition.material_fields,
        "editable_fields": definition.editable_fields,
        "actions": definition.actions,
        "published_at": definition.published_at,
    }


def _request_row(request: ApprovalRequest, *, full: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": request.pk,
        "process_id": request.process_id,
        "process_version": request.process_version.number,
        "object_type": request.process.object_type,
        "object_id": request.object_id,
        "submitter_id": request.submitter_id,
        "status": request.status,
        "origin": request.origin,
        "step_index": request.step_index,
        "comment": request.comment,
        "submitted_at": request.submitted_at,
        "finished_at": request.finished_at,
        "version": request.version,
    }
    if full:
        row["steps"] = [
            {
                "index": run.index,
                "name": run.name,
                "status": run.status,
                "rule": run.rule,
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "due_at": run.due_at,
                "escalated_at": run.escalated_at,
                "note": run.note,
                "approvers": [
                    {
                        "user_id": a.user_id,
                        "name": str(a.user),
                        "on_behalf_of_id": a.on_behalf_of_id,
                        "via": a.via,
                        "status": a.status,
                        "decided_at": a.decided_at,
                        "comment": a.comment,
                    }
                    for a in run.assignments.all()
                ],
            }
            for run in queries.steps_of(request)
        ]
        row["history"] = [
            {
                "kind": e.kind,
                "at": e.at,
                "actor_id": e.actor_id,
                "on_behalf_of_id": e.on_behalf_of_id,
                "step_index": e.step_index,
                "comment": e.comment,
                "data": e.data,
            }
            for e in queries.history_of(request)
        ]
        row["exceptions"] = [_exception_row(e) for e in queries.exceptions_of(request)]
    return row


def _exception_row(exception: ExceptionRequest) -> dict[str, Any]:
    return {
        "id": exception.pk,
        "kind": exception.kind,
        "request_id": exception.request_id,
        "step_index": exception.step_index,
        "reason": exception.reason,
        "data": exception.data,
        "requested_by_id": exception.requested_by_id,
        "requested_at": exception.requested_at,
        "status": exception.status,
        "decided_by_id": exception.decided_by_id,
        "decided_at": exception.decided_at,
        "decision_note": exception.decision_note,
        "unlocked_until": exception.unlocked_until,
        "result_request_id": exception.result_request_id,
    }


def _delegation_row(delegation: Delegation) -> dict[str, Any]:
    return {
        "id": delegation.pk,
        "delegate_id": delegation.delegate_id,
        "starts_at": delegation.starts_at,
        "ends_at": delegation.ends_at,
    }


def _request(request: HttpRequest, pk: int) -> HttpResponse:
    return json_response(_request_row(queries.get(request.auth, pk), full=True))


# Definitions.


@router.get(
    "/approval-processes",
    response=list[Output],
    operation_id="list_approval_processes",
    summary="List approval processes",
)
def list_processes(request: HttpRequest) -> HttpResponse:
    processes = queries.processes(request.auth).order_by("object_type", "name", "pk")
    return json_response([_process_row(p) for p in processes])


@router.get(
    "/approval-processes/{id}",
    response=Output,
    operation_id="get_approval_process",
    summary="Read an approval process",
)
def get_process(request: HttpRequest, id: Id) -> HttpResponse:
    process = queries.processes(request.auth).filter(pk=id).first()
    if process is None:
        raise NotFound(_("No such approval process."))
    return json_response(_process_row(process))


@router.post(
    "/approval-processes",
    response={201: Output},
    operation_id="create_approval_process",
    summary="Create an approval process",
    description="Admins only. Publishes version 1.",
)
def create_process(request: HttpRequest, payload: ProcessIn) -> HttpResponse:
    data = payload.model_dump(exclude_none=True)
    process = services.save_process(request.auth, data)
    return json_response(_process_row(process), status=201)


@router.put(
    "/approval-processes/{id}",
    response=Output,
    operation_id="publish_approval_process",
    summary="Publish a new version of an approval process",
    description="Admins only. Fields left out keep their values. Running requests stay on the "
    "version they started with.",
)
def publish_process(request: HttpRequest, id: Id, payload: ProcessReplace) -> HttpResponse:
    data = payload.model_dump(exclude_none=True)
    version = data.pop("version")
    try:
        process = services.save_process(request.auth, data, pk=id, version=version)
    except StaleVersion as conflict:
        conflict.current = _process_row(conflict.current)
        raise
    return json_response(_process_row(process))


# Requests.


@router.post(
    "/approval-requests",
    response={201: Output},
    operation_id="submit_approval_request",
    summary="Submit a record for approval",
)
def submit(request: HttpRequest, payload: SubmitIn) -> HttpResponse:
    made = services.submit(
        request.auth,
        payload.object_type,
        payload.object_id,
        process_id=payload.process_id,
        comment=payload.comment,
    )
    return json_response(_request_row(made, full=True), status=201)


@router.get(
    "/approval-requests",
    response=list[Output],
    operation_id="list_approval_requests",
    summary="List approval requests",
    description="Requests you may see, newest first (at most 100).",
)
def list_requests(request: HttpRequest, params: Query[ListParams]) -> HttpResponse:
    found = queries.visible_requests(request.auth)
    if params.object_type:
        found = found.filter(process__object_type=params.object_type)
    if params.object_id:
        found = found.filter(object_id=params.object_id)
    if params.status:
        found = found.filter(status=params.status)
    return json_response([_request_row(r) for r in found.order_by("-submitted_at", "-pk")[:100]])


@router.get(
    "/approval-requests/{id}",
    response=Output,
    operation_id="get_approval_request",
    summary="Read an approval request with its steps and history",
)
def get_request(request: HttpRequest, id: Id) -> HttpResponse:
    return _request(request, id)


@router.post(
    "/approval-requests/{id}/approve",
    response=Output,
    operation_id="approve_request",
    summary="Approve the current step",
    description="A second decision by the same approver is a 409; nothing changes.",
)
def approve(request: HttpRequest, id: Id, payload: CommentIn) -> HttpResponse:
    services.approve(request.auth, id, comment=payload.comment)
    return _request(request, id)


@router.post(
    "/approval-requests/{id}/reject",
    response=Output,
    operation_id="reject_request",
    summary="Reject the current step",
    description="A comment is required.",
)
def reject(request: HttpRequest, id: Id, payload: CommentIn) -> HttpResponse:
    services.reject(request.auth, id, comment=payload.comment)
    return _request(request, id)


@router.post(
    "/approval-requests/{id}/recall",
    response=Output,
    operation_id="recall_request",
    summary="Recall a pending request (submitter only)",
)
def recall(request: HttpRequest, id: Id, payload: CommentIn) -> HttpResponse:
    services.recall(request.auth, id, comment=payload.comment)
    return _request(request, id)


@router.post(
    "/approval-requests/{id}/reassign",
    response=Output,
    operation_id="reassign_request",
    summary="Hand an approver's part of the current step to someone else (admins only)",
)
def reassign(request: HttpRequest, id: Id, payload: ReassignIn) -> HttpResponse:
    services.reassign(
        request.auth, id, payload.from_user_id, payload.to_user_id, comment=payload.comment
    )
    return _request(request, id)


@router.get(
    "/approvals/inbox",
    response=Output,
    operation_id="approvals_inbox",
    summary="What waits for my decision",
)
def inbox(request: HttpRequest) -> HttpResponse:
    user = request.auth
    rows = queries.inbox(user)
    return json_response(
        {
            **queries.inbox_counts(user),
            # ``waiting`` and ``overdue`` stop at this number: equal to it means "at least".
            "counts_capped_at": queries.COUNT_CAP,
            "items": [
                {
                    "request_id": row.request_id,
                    "process": row.process_name,
                    "object_type": row.object_type,
                    "object_id": row.object_id,
                    "record": row.record_name,
                    "step": row.step_name,
                    "due_at": row.due_at,
                    "overdue": row.overdue,
                    "on_behalf_of_id": row.on_behalf_of_id,
                }
                for row in rows
            ],
        }
    )


# Delegations.


@router.get(
    "/approvals/delegations",
    response=list[Output],
    operation_id="list_delegations",
    summary="My current and coming delegations",
)
def list_delegations(request: HttpRequest) -> HttpResponse:
    return json_response([_delegation_row(d) for d in queries.delegations(request.auth)])


@router.post(
    "/approvals/delegations",
    response={201: Output},
    operation_id="create_delegation",
    summary="Set an out-of-office delegate for a period",
)
def create_delegation(request: HttpRequest, payload: DelegationIn) -> HttpResponse:
    made = services.set_delegation(
        request.auth, payload.delegate_id, payload.starts_at, payload.ends_at
    )
    return json_response(_delegation_row(made), status=201)


@router.delete(
    "/approvals/delegations/{id}",
    response={204: None},
    operation_id="end_delegation",
    summary="End a delegation now",
)
def end_delegation(request: HttpRequest, id: Id) -> HttpResponse:
    services.end_delegation(request.auth, id)
    return HttpResponse(status=204)


# Exception requests.


@router.post(
    "/approval-requests/{id}/exceptions",
    response={201: Output},
    operation_id="request_exception",
    summary="Ask for an exception",
    description="`override` (skip the current step), `unlock`, `cancel`, `clone` (resume "
    "from `from_step`), `change_terms` (of an approved record, with `changes`). Kept whether "
    "granted or refused.",
)
def request_exception(request: HttpRequest, id: Id, payload: ExceptionIn) -> HttpResponse:
    made = services.request_exception(
        request.auth,
        id,
        payload.kind,
        payload.reason,
        from_step=payload.from_step,
        changes=payload.changes,
    )
    return json_response(_exception_row(made), status=201)


@router.get(
    "/approval-exceptions",
    response=list[Output],
    operation_id="list_exceptions_to_decide",
    summary="Exception requests waiting for my decision",
)
def list_exceptions(request: HttpRequest) -> HttpResponse:
    user = request.auth
    rows = queries.exceptions_to_decide(user)[:100]
    return json_response([_exception_row(e) for e in rows])


@router.post(
    "/approval-exceptions/{id}/decide",
    response=Output,
    operation_id="decide_exception",
    summary="Grant or refuse an exception request",
    description="The process owner or an admin. Refusing needs a note.",
)
def decide_exception(request: HttpRequest, id: Id, payload: ExceptionDecisionIn) -> HttpResponse:
    decided = services.decide_exception(request.auth, id, grant=payload.grant, note=payload.note)
    return json_response(_exception_row(decided))


router.add_router("", api_reports.router)
