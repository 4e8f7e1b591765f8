"""The JSON API of pipelines: alert rules and alerts.

Reads start from ``alerts`` (which applies record visibility: an alert on a record you may not
see is not listed; a pipeline of a kind you may not see is a 404); writes are
``alerts.save_rules`` (admins only). A page of alerts costs the same few queries whatever its
size.
"""

import datetime as dt
from typing import Any, Literal

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, json_response, refuse_unknown_params
from trellis.core.errors import StaleVersion
from trellis.core.paging import paginate

from . import alerts
from .models import Alert, AlertRule, Pipeline

router = Router(tags=["Pipeline alerts"])

KindName = Literal[tuple(AlertRule.Kind.values)]
StateName = Literal[alerts.STATES]
_LIMITS = settings.TRELLIS
_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_CONFLICT = {
    "responses": {
        409: {
            "description": "A `version` you sent is stale: someone changed the rules since you "
            "read them. Nothing was written; `current` holds the rules as they are now.",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        }
    }
}


class Output(Schema):
    model_config = ConfigDict(extra="forbid")


class AlertRuleOut(Output):
    kind: KindName
    label: str
    help: str = Field(description="What the threshold means for this kind.")
    unit: Literal["days", "times", "stages", "percent", "hours"]
    threshold: int
    threshold_min: int
    threshold_max: int
    is_active: bool
    notify_owner: bool
    notify_manager: bool = Field(description="Also tell the owner's manager.")
    email_digest: bool = Field(description="List the alerts in the daily e-mail digest.")
    version: int | None = Field(
        description="Send it back to change the rule; null for a kind never saved (inactive)."
    )


class AlertRulesOut(Output):
    pipeline_id: int
    rules: list[AlertRuleOut] = Field(description="One per kind of alert the pipeline may have.")


class AlertRuleIn(Input):
    kind: KindName
    threshold: int | None = Field(
        None, description="Within `threshold_min` and `threshold_max` of the kind."
    )
    is_active: bool | None = None
    notify_owner: bool | None = None
    notify_manager: bool | None = None
    email_digest: bool | None = None
    version: int | None = Field(
        None, description="The rule's `version` as you read it; required for a saved rule."
    )


class AlertRulesIn(Input):
    rules: list[AlertRuleIn] = Field(
        description="The rules to create or change; kinds left out keep theirs, fields left out "
        "keep their values."
    )


class AlertOut(Output):
    id: int
    pipeline_id: int
    rule_id: int
    kind: KindName
    record_type: str
    record_id: int
    record_name: str
    stage_id: int | None = Field(description="The record's stage when the alert fired.")
    stage_name: str | None
    owner_id: int | None
    owner_name: str | None
    text: str = Field(description="What the alert is about, in your language.")
    details: dict[str, Any] = Field(description="The figures behind the text; by kind.")
    fired_at: dt.datetime
    cleared_at: dt.datetime | None = Field(description="Null while the alert is open.")


class AlertPage(Output):
    items: list[AlertOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class AlertParams(Schema):
    kind: KindName | None = None
    owner_id: Id | None = None
    state: StateName = Field("open", description="`open` (default), `cleared` or `all`.")
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])


class MyAlertParams(Schema):
    kind: KindName | None = None
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(_LIMITS["DEFAULT_PAGE_SIZE"], ge=1, le=_LIMITS["MAX_PAGE_SIZE"])


def _rule_row(rule: AlertRule) -> dict[str, Any]:
    spec = alerts.THRESHOLDS[rule.kind]
    return {
        "kind": rule.kind,
        "label": str(AlertRule.Kind(rule.kind).label),
        "help": str(spec.help),
        "unit": spec.unit,
        "threshold": rule.threshold,
        "threshold_min": spec.minimum,
        "threshold_max": spec.maximum,
        "is_active": rule.is_active,
        "notify_owner": rule.notify_owner,
        "notify_manager": rule.notify_manager,
        "email_digest": rule.email_digest,
        "version": rule.version if rule.pk else None,
    }


def _rules(pipeline: Pipeline, rules: list[AlertRule]) -> dict[str, Any]:
    return {"pipeline_id": pipeline.pk, "rules": [_rule_row(rule) for rule in rules]}


def _alert_row(row: alerts.Row) -> dict[str, Any]:
    alert: Alert = row.alert
    return {
        "id": alert.pk,
        "pipeline_id": alert.pipeline_id,
        "rule_id": alert.rule_id,
        "kind": alert.kind,
        "record_type": row.object_type,
        "record_id": alert.object_id,
        "record_name": row.record_name,
        "stage_id": alert.stage_id,
        "stage_name": row.stage or None,
        "owner_id": alert.owner_id,
        "owner_name": str(alert.owner) if alert.owner_id else None,
        "text": row.text,
        "details": alert.details,
        "fired_at": alert.fired_at,
        "cleared_at": alert.cleared_at,
    }


def _page(queryset: Any, number: int, size: int) -> dict[str, Any]:
    page = paginate(queryset, number, size)
    return {
        "items": [_alert_row(row) for row in alerts.rows(page.items)],
        "page": page.number,
        "page_size": page.size,
        "has_next": page.has_next,
    }


@router.get(
    "/pipelines/{id}/alert-rules",
    response=AlertRulesOut,
    operation_id="get_alert_rules",
    summary="A pipeline's alert rules",
    description="Every kind of alert the pipeline may watch for (the close-date and amount kinds "
    "only where its records have those fields), with its threshold and who is told.",
)
def get_alert_rules(request: HttpRequest, id: Id) -> HttpResponse:
    pipeline = alerts.viewable_pipeline(request.auth, id)
    return json_response(_rules(pipeline, alerts.rules_for(pipeline)))


@router.put(
    "/pipelines/{id}/alert-rules",
    response=AlertRulesOut,
    operation_id="set_alert_rules",
    summary="Change a pipeline's alert rules",
    description="For administrators. Creates or changes the rules given; a saved rule needs "
    "its `version`. Errors are keyed `rules.<n>.<field>`. A new or changed rule starts "
    "watching the pipeline's records within a sweep or two; a deactivated one clears its open "
    "alerts.",
    openapi_extra=_CONFLICT,
)
def set_alert_rules(request: HttpRequest, id: Id, payload: AlertRulesIn) -> HttpResponse:
    user = request.auth
    pipeline = alerts.viewable_pipeline(user, id)
    items = [item.model_dump(exclude_unset=True) for item in payload.rules]
    try:
        rules = alerts.save_rules(user, pipeline.pk, items)
    except StaleVersion as conflict:
        conflict.current = _rules(pipeline, alerts.rules_for(pipeline))
        raise
    return json_response(_rules(pipeline, rules))


@router.get(
    "/pipelines/{id}/alerts",
    response=AlertPage,
    operation_id="list_pipeline_alerts",
    summary="A pipeline's alerts",
    description="Alerts on the pipeline's records you may see, newest first; open ones unless "
    "`state` says otherwise.",
)
def list_pipeline_alerts(request: HttpRequest, id: Id, params: Query[AlertParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, AlertParams.model_fields)
    user = request.auth
    pipeline = alerts.viewable_pipeline(user, id)
    found = alerts.alert_list(
        user,
        pipeline,
        kind=params.kind or "",
        owner_id=params.owner_id,
        state=params.state,
    )
    return json_response(_page(found, params.page, params.page_size))


@router.get(
    "/alerts/mine",
    response=AlertPage,
    operation_id="list_my_alerts",
    summary="My open alerts",
    description="The open alerts on records you own, in every pipeline, newest first.",
)
def list_my_alerts(request: HttpRequest, params: Query[MyAlertParams]) -> HttpResponse:
    refuse_unknown_params(request.GET, MyAlertParams.model_fields)
    user = request.auth
    found = alerts.alert_list(user, kind=params.kind or "", owner_id=user.pk, state="open")
    return json_response(_page(found, params.page, params.page_size))
