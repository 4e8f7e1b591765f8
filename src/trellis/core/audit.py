"""The audit log: every change to a record, with each field's old and new value."""

import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models

from . import clock
from .models import AuditEvent, User


def _plain(value: Any) -> Any:
    """A JSON-safe form of a field value, readable on the timeline."""
    if isinstance(value, Decimal):
        # 1000, 1000.0 and 1000.00 are the same amount and must not show as a change.
        return format(value.normalize(), "f") if value.is_finite() else str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, models.Model):
        return {"id": value.pk, "label": str(value)}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value


def snapshot(instance: models.Model, fields: list[str]) -> dict[str, Any]:
    """The audited fields of an instance. Foreign keys are taken as objects to label them."""
    values = {}
    for name in fields:
        field = instance._meta.get_field(name)
        if field.many_to_many:
            values[name] = sorted(getattr(instance, name).values_list("pk", flat=True))
        elif field.is_relation:
            values[name] = getattr(instance, name)
        else:
            values[name] = getattr(instance, field.attname)
    return values


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    changes = {}
    for name, new in after.items():
        old = before.get(name)
        if _plain(old) != _plain(new):
            changes[name] = [_plain(old), _plain(new)]
    return changes


def record(
    actor: User | None,
    instance: models.Model,
    action: str,
    changes: dict[str, Any],
    summary: str = "",
) -> AuditEvent:
    made = entry(actor, instance, action, changes, summary)
    made.save()
    return made


def entry(
    actor: User | None,
    instance: models.Model,
    action: str,
    changes: dict[str, Any],
    summary: str = "",
) -> AuditEvent:
    """The audit row ``record`` writes, unsaved: for services that write many in one go."""
    return AuditEvent(
        content_type=ContentType.objects.get_for_model(type(instance)),
        object_id=instance.pk,
        action=action,
        actor=actor if actor and actor.pk else None,
        at=clock.now(),
        changes={k: _plain(v) for k, v in changes.items()},
        summary=summary[:300],
    )


def history(instance: models.Model) -> models.QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(type(instance)), object_id=instance.pk
    ).select_related("actor")
