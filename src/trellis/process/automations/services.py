"""Writes of automations: rules and holds, and putting records on hold or releasing them by hand.

A rule is checked as a whole before anything is written (``definitions``), then against the
other enabled rules of the types it touches (``graph``): a cycle or an unordered race is
refused, naming the rules and fields. Saving a time rule plans its timers.
"""

import zlib
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils.translation import gettext as _

from trellis.core import audit, clock, registry
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.visibility import can, is_admin, visible

from . import definitions, graph, holds
from .models import Hold, HoldPlacement, Rule
from .tasks import plan_timers

_GRAPH_LOCK = zlib.crc32(b"automations.graph")


def save_rule(
    actor: User, data: Mapping[str, Any], *, pk: int | None = None, version: int | None = None
) -> Rule:
    """Create a rule, or change one still at ``version``. Refused as a whole, with every fault
    under its path, when it does not check out or would loop or race."""
    with transaction.atomic():
        rule = None
        if pk is not None:
            rule = _locked_rule(actor, pk, version)
            data = {**definition(rule), **data}
        errors: dict[str, list[str]] = {}
        values = definitions.checked_rule(actor, data, errors)
        if errors:
            raise ValidationFailed(errors)
        before = definition(rule) if rule else {}
        now = clock.now()
        if rule is None:
            rule = Rule(created_by=actor, created_at=now)
        elif rule.object_type != values["object_type"]:
            raise ValidationFailed({"object_type": [_("A rule keeps its kind of record.")]})
        for name, value in values.items():
            setattr(rule, name, value)
        if rule.is_enabled:
            _check_graph(rule)
        if rule.pk:
            rule.version += 1
        rule.updated_at = now
        rule.save()
        # A time rule plans one timer per record of its type: a minute for 200,000 records,
        # too long for the page that saves it. The queued task is written with the rule.
        if rule.trigger == Rule.Trigger.TIME or before.get("trigger") == Rule.Trigger.TIME:
            plan_timers.enqueue(rule.pk, rule.version)
        _audit(actor, rule, before)
    return rule


def set_rule_enabled(actor: User, pk: int, enabled: bool, version: int | None) -> Rule:
    """Enabling a rule checks it against the enabled rules again: they may have changed."""
    return save_rule(actor, {"is_enabled": bool(enabled)}, pk=pk, version=version)


def delete_rule(actor: User, pk: int, version: int | None = None) -> None:
    with transaction.atomic():
        rule = _locked_rule(actor, pk, version)
        _audit(actor, rule, definition(rule), deleted=True)
        rule.delete()


def _locked_rule(actor: User, pk: int, version: int | None) -> Rule:
    rule = Rule.objects.select_for_update().filter(pk=pk).first()
    if rule is None or not definitions.may_define(actor, rule.object_type):
        raise NotFound(_("No such rule."))
    if version is None:
        raise ValidationFailed({"version": [_("Send the version you edited.")]})
    if rule.version != version:
        raise StaleVersion(rule)
    return rule


def _check_graph(rule: Rule) -> None:
    # One check at a time: two rules saved at once could each pass alone and loop together.
    # (SQLite lets one transaction write at a time anyway.)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_GRAPH_LOCK])
    # Every enabled rule takes part: "create a related record" joins the graphs of two types.
    others = [
        graph.RuleShape.of(r) for r in Rule.objects.filter(is_enabled=True).exclude(pk=rule.pk)
    ]
    try:
        graph.check(graph.RuleShape.of(rule), others)
    except graph.GraphError as exc:
        raise ValidationFailed({"actions": [exc.message]}, exc.message) from None


def definition(rule: Rule) -> dict[str, Any]:
    """What a rule is, as ``save_rule`` takes it."""
    return {
        "object_type": rule.object_type,
        "name": rule.name,
        "is_enabled": rule.is_enabled,
        "position": rule.position,
        "trigger": rule.trigger,
        "trigger_params": rule.trigger_params,
        "condition": rule.condition,
        "mode": rule.mode,
        "actions": rule.actions,
        "throttle_per_hour": rule.throttle_per_hour,
    }


def _audit(actor: User, rule: Rule, before: dict[str, Any], *, deleted: bool = False) -> None:
    if deleted:
        action, changes = AuditEvent.Action.DELETED, {"name": rule.name}
    else:
        action = AuditEvent.Action.UPDATED if before else AuditEvent.Action.CREATED
        changes = audit.diff(before, definition(rule))
    audit.record(actor, rule, action, changes, rule.name)


# Holds.


def save_hold(
    actor: User, data: Mapping[str, Any], *, pk: int | None = None, version: int | None = None
) -> Hold:
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define holds."))
    with transaction.atomic():
        hold = None
        if pk is not None:
            hold = Hold.objects.select_for_update().filter(pk=pk).first()
            if hold is None:
                raise NotFound(_("No such hold."))
            if version is None:
                raise ValidationFailed({"version": [_("Send the version you edited.")]})
            if hold.version != version:
                raise StaleVersion(hold)
            data = {
                "object_type": hold.object_type,
                "code": hold.code,
                "name": hold.name,
                "name_ko": hold.name_ko,
                "release_condition": hold.release_condition,
                "blocks": hold.blocks,
                **data,
            }
        errors: dict[str, list[str]] = {}
        values = definitions.checked_hold(data, errors)
        if hold is not None and values.get("object_type") != hold.object_type:
            errors["object_type"] = [_("A hold keeps its kind of record.")]
        if errors:
            raise ValidationFailed(errors)
        if hold is None:
            hold = Hold(created_at=clock.now())
        else:
            hold.version += 1
        for name, value in values.items():
            setattr(hold, name, value)
        try:
            with transaction.atomic():
                hold.save()
        except IntegrityError:
            raise ValidationFailed({"code": [_("This code is taken.")]}) from None
        audit.record(actor, hold, AuditEvent.Action.UPDATED, {"hold": values}, hold.name)
    return hold


def place_on_hold(actor: User, hold_id: int, object_id: Any, reason: str = "") -> HoldPlacement:
    """A person puts a record they may edit on hold."""
    hold = Hold.objects.filter(pk=hold_id).first()
    if hold is None:
        raise NotFound(_("No such hold."))
    record = _editable_record(actor, hold, object_id)
    return holds.place(actor, hold, record, reason=str(reason or "")[:300])


def release_hold(actor: User, placement_id: int, note: str = "") -> HoldPlacement:
    """A person releases a record they may edit from a hold, whatever its condition says."""
    placement = HoldPlacement.objects.select_related("hold").filter(pk=placement_id).first()
    if placement is None:
        raise NotFound(_("No such hold placement."))
    record = _editable_record(actor, placement.hold, placement.object_id)
    return holds.release(actor, placement.hold, record, note=str(note or "")[:300])


def _editable_record(actor: User, hold: Hold, object_id: Any) -> Any:
    model = registry.get(hold.object_type).model
    try:
        pk = int(object_id)
    except (TypeError, ValueError):
        pk = 0
    record = visible(actor, model).filter(pk=pk).first()
    if record is None:
        raise NotFound(_("No such record."))
    if not can(actor, "edit", hold.object_type):
        raise PermissionDenied(_("You may not edit this record."))
    return record
