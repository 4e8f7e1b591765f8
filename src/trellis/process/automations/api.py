"""The JSON API of automations: rules, their run history and dry runs; holds, their queues,
and putting records on hold or releasing them by hand. Every endpoint calls the same
services and queries as the pages."""

import datetime as dt
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core import clock
from trellis.core.api import Id, Input, Version, json_response, refuse_unknown_params, text
from trellis.core.errors import StaleVersion

from . import definitions, queries, services
from .models import Hold, HoldPlacement, Rule, RuleRun

router = Router(tags=["Automations"])

_LIMITS = settings.TRELLIS
OutcomeName = Literal[tuple(RuleRun.Outcome.values)]


class Output(Schema):
    model_config = ConfigDict(extra="allow")


# What requests hold.


class RuleIn(Input):
    object_type: text(max_length=40) | None = Field(
        None,
        description="`opportunity`, `order`, `lead`, `account` or `contact`; fixed once created.",
    )
    name: text(max_length=100) | None = None
    is_enabled: bool | None = Field(None, description="True when left out of a new rule.")
    position: int | None = Field(
        None,
        description="An explicit place in the order (0 to 1000000); rules without one run "
        "after, oldest first. Two rules writing the same field on the same trigger need one.",
    )
    trigger: text(max_length=20) | None = Field(
        None, description="One of: " + ", ".join(f"`{t}`" for t in Rule.Trigger.values) + "."
    )
    trigger_params: dict[str, Any] | None = Field(
        None,
        description="What narrows the trigger: `field`, `from`, `to` (field_changed); `stage` "
        "(a stage id); `process` (an approval process code); `task_type` (a code); `hold` (a "
        "hold code); `field`, `offset`, `unit` (days, business_days, hours) and `direction` "
        "(before, after) for `time`.",
    )
    condition: text(max_length=2000) | None = Field(
        None, description="CEL over the record's fields, e.g. `amount > 50000000.0`."
    )
    mode: text(max_length=10) | None = Field(
        None,
        description="`newly` (default: only when the record newly meets the condition) or "
        "`every` (each time the trigger matches).",
    )
    actions: list[dict[str, Any]] | None = Field(
        None,
        description="In order, at most 20. Each has a `kind`: "
        + ", ".join(f"`{k}`" for k in definitions.ACTION_KINDS)
        + ". See docs/api.md for the fields of each.",
    )
    throttle_per_hour: int | None = Field(
        None, description="Runs per record per hour before the rule is stopped (default 10)."
    )


class RuleReplace(RuleIn):
    version: Version


class RuleVersionIn(Input):
    version: Version


class RuleRunParams(Schema):
    outcome: OutcomeName | None = None
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])


class RuleDeleteParams(Schema):
    version: Version


class DryRunIn(Input):
    object_type: text(max_length=40)
    record_ids: list[Id] | None = Field(
        None, min_length=1, max_length=queries.MAX_SAMPLE, description="At most 50."
    )
    sample: int | None = Field(
        None,
        ge=1,
        le=queries.MAX_SAMPLE,
        description="Try the newest records you may see, this many (10 when neither this nor "
        "`record_ids` is given).",
    )
    rule_id: Id | None = Field(None, description="Try this rule only.")
    rule: dict[str, Any] | None = Field(
        None,
        description="Try a definition without saving it (the fields of a rule; `object_type` "
        "may be left out). Its faults are named `rule.<field>`.",
    )
    changes: dict[str, Any] | None = Field(
        None,
        description="Try the rules on an update of each record by these new values (field → "
        'value, fields named as conditions name them: `{"amount": 60000000, "stage_id": 4}`), '
        "judged as a real update: the trigger's field, its from and to values, and “only when "
        "newly met”. Faults are named `changes.<field>`.",
    )


class HoldIn(Input):
    object_type: text(max_length=40) | None = None
    code: text(max_length=40) | None = None
    name: text(max_length=100) | None = None
    name_ko: text(max_length=100) | None = None
    release_condition: text(max_length=2000) | None = Field(
        None, description="CEL over the record; empty for a hold released by hand or by a rule."
    )
    blocks: list[dict[str, Any]] | None = Field(
        None,
        description='What it blocks: `{"task_type": code}`, `{"field": name}` or '
        '`{"field": name, "value": v}`.',
    )


class HoldReplace(HoldIn):
    version: Version


class HoldPlaceIn(Input):
    object_id: Id
    reason: text(max_length=300) = ""


class HoldReleaseIn(Input):
    note: text(max_length=300) = ""


class HoldQueueParams(Schema):
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])


# What the answers hold.


class RuleOut(Output):
    id: int
    object_type: str
    name: str
    is_enabled: bool
    position: int | None
    trigger: str
    trigger_params: dict[str, Any]
    condition: str
    mode: str
    actions: list[dict[str, Any]]
    throttle_per_hour: int
    version: int
    created_by_id: int
    created_at: dt.datetime
    updated_at: dt.datetime


class RuleListItem(RuleOut):
    last_run_at: dt.datetime | None
    fired_recently: int = Field(description="Runs that fired in the last 7 days.")
    failed_recently: int = Field(description="Runs that failed in the last 7 days.")


class RuleRunOut(Output):
    id: int
    rule_id: int
    object_type: str
    object_id: int
    at: dt.datetime
    outcome: OutcomeName
    event: str = Field(description="What fired it, e.g. `opportunity.updated` or `time`.")
    depth: int = Field(description="How deep in a cascade of rules; 0 for the first.")
    detail: dict[str, Any] = Field(description="`done`: what each action did; `error`.")


class RuleRunPage(Output):
    items: list[RuleRunOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class DryRunActionOut(Output):
    kind: str
    changes: dict[str, list[Any]] | None = Field(
        None, description="For `set_fields` and `create_related`: field → [now, after]."
    )


class DryRunVerdictOut(Output):
    rule: int | None = Field(description="The rule's id; null for a definition not saved.")
    name: str
    triggered: bool | None = Field(
        None, description="With `changes`: whether the update they make is the rule's trigger."
    )
    fires: bool = Field(
        description="Whether it would fire: its condition holds for the record now, or, with "
        "`changes`, the update triggers it and it meets the condition as the engine judges it."
    )
    actions: list[DryRunActionOut]
    error: str | None = None


class DryRunRecordOut(Output):
    id: int
    label: str
    changes: dict[str, list[Any]] | None = Field(
        None, description="With `changes`: the fields the update changes, field → [now, after]."
    )
    rules: list[DryRunVerdictOut]


class HoldOut(Output):
    id: int
    object_type: str
    code: str
    name: str
    name_ko: str
    release_condition: str
    blocks: list[dict[str, Any]]
    version: int
    created_at: dt.datetime


class PlacementOut(Output):
    id: int
    hold_id: int
    hold_code: str
    object_type: str
    object_id: int
    record: str | None = Field(description="The record's name; null when it is gone.")
    placed_at: dt.datetime
    placed_by_id: int | None = Field(description="Null when a rule placed it.")
    placed_by_name: str | None
    reason: str = Field(description="The rule that placed it, or the person's note.")
    released_at: dt.datetime | None
    released_by_id: int | None
    release_note: str
    waiting_seconds: int | None = Field(description="How long it has waited; null once released.")


class QueuePage(Output):
    items: list[PlacementOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class RecordAutomationsOut(Output):
    holds: list[PlacementOut] = Field(
        description="The record's stays in holds, waiting and released, newest first (50 at most)."
    )
    runs: list[RuleRunOut] = Field(description="The latest runs of rules on it, newest first.")


def _rule_row(rule: Rule) -> dict[str, Any]:
    row = {
        "id": rule.pk,
        **services.definition(rule),
        "version": rule.version,
        "created_by_id": rule.created_by_id,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
    }
    if hasattr(rule, "fired_recently"):
        row["last_run_at"] = rule.last_run_at
        row["fired_recently"] = rule.fired_recently
        row["failed_recently"] = rule.failed_recently
    return row


def _run_row(run: RuleRun) -> dict[str, Any]:
    return {
        "id": run.pk,
        "rule_id": run.rule_id,
        "object_type": run.rule.object_type,
        "object_id": run.object_id,
        "at": run.at,
        "outcome": run.outcome,
        "event": run.event,
        "depth": run.depth,
        "detail": run.detail,
    }


def _hold_row(hold: Hold) -> dict[str, Any]:
    return {
        "id": hold.pk,
        "object_type": hold.object_type,
        "code": hold.code,
        "name": hold.name,
        "name_ko": hold.name_ko,
        "release_condition": hold.release_condition,
        "blocks": hold.blocks,
        "version": hold.version,
        "created_at": hold.created_at,
    }


def _placement_row(placement: HoldPlacement, record: Any = None) -> dict[str, Any]:
    waiting = None
    if placement.released_at is None:
        waiting = max(int((clock.now() - placement.placed_at).total_seconds()), 0)
    return {
        "id": placement.pk,
        "hold_id": placement.hold_id,
        "hold_code": placement.hold.code,
        "object_type": placement.hold.object_type,
        "object_id": placement.object_id,
        "record": str(record) if record is not None else None,
        "placed_at": placement.placed_at,
        "placed_by_id": placement.placed_by_id,
        "placed_by_name": str(placement.placed_by) if placement.placed_by_id else None,
        "reason": placement.reason,
        "released_at": placement.released_at,
        "released_by_id": placement.released_by_id,
        "release_note": placement.release_note,
        "waiting_seconds": waiting,
    }


def _saved_rule(save: Any) -> Rule:
    try:
        return save()
    except StaleVersion as conflict:
        conflict.current = _rule_row(conflict.current)
        raise


# Rules.


class RuleListParams(Schema):
    object_type: text(max_length=40) | None = None


@router.get(
    "/automations/rules",
    response=list[RuleListItem],
    operation_id="list_automation_rules",
    summary="List rules",
    description="The rules of the kinds of record you may define rules for (administrators, "
    "and people who may edit every record of the kind), in the order they run, with their "
    "last run and how many fired and failed in the last 7 days.",
)
def list_rules(request: HttpRequest, params: Query[RuleListParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, RuleListParams.model_fields)
    user = request.auth
    types = [params.object_type] if params.object_type else queries.definable_types(user)
    rows = [_rule_row(r) for object_type in types for r in queries.rule_list(user, object_type)]
    return json_response(rows)


@router.post(
    "/automations/rules",
    response={201: RuleOut},
    operation_id="create_automation_rule",
    summary="Create a rule",
    description="Checked as a whole before anything is written; a rule that would make a "
    "cycle with the enabled rules, or race one on the same field without an explicit order, "
    "is refused under `actions` with the rules and fields named.",
)
def create_rule(request: HttpRequest, payload: RuleIn) -> HttpResponse:
    rule = services.save_rule(request.auth, payload.model_dump(exclude_none=True))
    return json_response(_rule_row(rule), status=201)


@router.get(
    "/automations/rules/{id}",
    response=RuleOut,
    operation_id="get_automation_rule",
    summary="Read a rule",
)
def get_rule(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_rule_row(queries.get_rule(request.auth, id)))


@router.put(
    "/automations/rules/{id}",
    response=RuleOut,
    operation_id="change_automation_rule",
    summary="Change a rule",
    description="Send `version` and the fields to change; those left out keep their values "
    "(send `position: null` to remove an explicit order). Checked again as a whole.",
)
def change_rule(request: HttpRequest, id: Id, payload: RuleReplace) -> HttpResponse:
    data = payload.model_dump(exclude_unset=True)
    version = data.pop("version")
    rule = _saved_rule(lambda: services.save_rule(request.auth, data, pk=id, version=version))
    return json_response(_rule_row(rule))


@router.delete(
    "/automations/rules/{id}",
    response={204: None},
    operation_id="delete_automation_rule",
    summary="Delete a rule",
    description="Send the `version` you read as a query parameter. Its run history goes "
    "with it; the records' timelines keep their entries.",
)
def delete_rule(request: HttpRequest, id: Id, params: Query[RuleDeleteParams]) -> HttpResponse:
    _saved_rule(lambda: services.delete_rule(request.auth, id, params.version))
    return HttpResponse(status=204)


@router.post(
    "/automations/rules/{id}/enable",
    response=RuleOut,
    operation_id="enable_automation_rule",
    summary="Enable a rule",
    description="Checked against the enabled rules again, which may have changed meanwhile.",
)
def enable_rule(request: HttpRequest, id: Id, payload: RuleVersionIn) -> HttpResponse:
    rule = _saved_rule(lambda: services.set_rule_enabled(request.auth, id, True, payload.version))
    return json_response(_rule_row(rule))


@router.post(
    "/automations/rules/{id}/disable",
    response=RuleOut,
    operation_id="disable_automation_rule",
    summary="Disable a rule",
)
def disable_rule(request: HttpRequest, id: Id, payload: RuleVersionIn) -> HttpResponse:
    rule = _saved_rule(lambda: services.set_rule_enabled(request.auth, id, False, payload.version))
    return json_response(_rule_row(rule))


@router.get(
    "/automations/rules/{id}/runs",
    response=RuleRunPage,
    operation_id="list_automation_rule_runs",
    summary="A rule's run history",
    description="Newest first; `outcome` narrows it to fired, skipped, failed, throttled or "
    "stopped runs.",
)
def list_runs(request: HttpRequest, id: Id, params: Query[RuleRunParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, RuleRunParams.model_fields)
    rule = queries.get_rule(request.auth, id)
    page = queries.runs(
        rule, outcome=params.outcome or "", page=params.page, page_size=params.page_size
    )
    for run in page.items:
        run.rule = rule
    return json_response(
        {
            "items": [_run_row(run) for run in page.items],
            "page": page.number,
            "page_size": page.size,
            "has_next": page.has_next,
        }
    )


@router.post(
    "/automations/dry-run",
    response=list[DryRunRecordOut],
    operation_id="dry_run_automation_rules",
    summary="Try rules without writing",
    description="For each record, which rules would fire if their trigger happened now, or, "
    "with `changes`, on the record's update by them, and what they would change. Tries "
    "`rule_id`, or the definition in `rule` without saving it, or every enabled rule of "
    "`object_type`; on `record_ids`, or on a `sample` of the newest records you may see. "
    "Nothing is written.",
)
def dry_run(request: HttpRequest, payload: DryRunIn) -> HttpResponse:
    results = queries.dry_run(
        request.auth,
        payload.object_type,
        record_ids=payload.record_ids,
        sample=payload.sample,
        rule_id=payload.rule_id,
        rule=payload.rule,
        changes=payload.changes,
    )
    return json_response(results)


# Holds.


@router.get(
    "/automations/holds",
    response=list[HoldOut],
    operation_id="list_holds",
    summary="List holds",
    description="The holds of the kinds of record you may see.",
)
def list_holds(request: HttpRequest) -> HttpResponse:
    return json_response([_hold_row(h) for h in queries.holds(request.auth)])


@router.post(
    "/automations/holds",
    response={201: HoldOut},
    operation_id="create_hold",
    summary="Create a hold",
    description="Administrators only.",
)
def create_hold(request: HttpRequest, payload: HoldIn) -> HttpResponse:
    hold = services.save_hold(request.auth, payload.model_dump(exclude_none=True))
    return json_response(_hold_row(hold), status=201)


@router.get(
    "/automations/holds/{id}",
    response=HoldOut,
    operation_id="get_hold",
    summary="Read a hold",
)
def get_hold(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_hold_row(queries.get_hold(request.auth, id)))


@router.put(
    "/automations/holds/{id}",
    response=HoldOut,
    operation_id="change_hold",
    summary="Change a hold",
    description="Administrators only. Send `version` and the fields to change.",
)
def change_hold(request: HttpRequest, id: Id, payload: HoldReplace) -> HttpResponse:
    data = payload.model_dump(exclude_unset=True)
    version = data.pop("version")
    try:
        hold = services.save_hold(request.auth, data, pk=id, version=version)
    except StaleVersion as conflict:
        conflict.current = _hold_row(conflict.current)
        raise
    return json_response(_hold_row(hold))


@router.get(
    "/automations/holds/{id}/queue",
    response=QueuePage,
    operation_id="hold_queue",
    summary="The records waiting in a hold",
    description="Those you may see, the longest waiting first, with `waiting_seconds`. For "
    "people who may edit records of the hold's kind (else 403).",
)
def hold_queue(request: HttpRequest, id: Id, params: Query[HoldQueueParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, HoldQueueParams.model_fields)
    user = request.auth
    hold = queries.get_hold(user, id)
    page, rows = queries.hold_queue(user, hold, page=params.page, page_size=params.page_size)
    return json_response(
        {
            "items": [_placement_row(row.placement, row.record) for row in rows],
            "page": page.number,
            "page_size": page.size,
            "has_next": page.has_next,
        }
    )


@router.post(
    "/automations/holds/{id}/place",
    response={201: PlacementOut},
    operation_id="place_on_hold",
    summary="Put a record on hold",
    description="A record you may edit. One already waiting in the hold stays as it is.",
)
def place(request: HttpRequest, id: Id, payload: HoldPlaceIn) -> HttpResponse:
    placed = services.place_on_hold(request.auth, id, payload.object_id, payload.reason)
    record = queries.placement_record(placed)
    return json_response(_placement_row(placed, record), status=201)


@router.post(
    "/automations/holds/placements/{id}/release",
    response=PlacementOut,
    operation_id="release_from_hold",
    summary="Release a record from a hold",
    description="A record you may edit, whatever the hold's release condition says. What "
    "the hold blocked may go ahead, and rules on `hold_released` fire.",
)
def release(request: HttpRequest, id: Id, payload: HoldReleaseIn) -> HttpResponse:
    released = services.release_hold(request.auth, id, payload.note)
    return json_response(_placement_row(released, queries.placement_record(released)))


@router.get(
    "/automations/records/{object_type}/{id}",
    response=RecordAutomationsOut,
    operation_id="record_automations",
    summary="A record's holds and rule runs",
    description="What the Holds and rules panel of the record's page shows, for a record you "
    "may see: its holds, and the latest 50 runs of rules on it, skipped ones included.",
)
def record_automations(request: HttpRequest, object_type: str, id: Id) -> HttpResponse:
    user = request.auth
    placements = queries.placements_of(user, object_type, id)
    record = queries.placement_record(placements[0]) if placements else None
    return json_response(
        {
            "holds": [_placement_row(p, record) for p in placements],
            "runs": [_run_row(run) for run in queries.runs_of_record(user, object_type, id)],
        }
    )
