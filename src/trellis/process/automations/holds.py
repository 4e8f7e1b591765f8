"""Putting records on hold and releasing them, and refusing what a hold blocks.

Every change of a record passes ``guard_write`` (through ``core.records``) and every task added
or completed passes ``guard_task`` (through the task services), so a hold blocks the same
things from the UI, the API, an import and a rule.
"""

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events, registry
from trellis.core.errors import Conflict, NotFound
from trellis.core.models import AuditEvent, User
from trellis.core.records import RecordLocked

from ..models import TaskType, Thread
from .models import Hold, HoldPlacement


def waiting(record: models.Model) -> models.QuerySet[HoldPlacement]:
    return HoldPlacement.objects.filter(
        content_type=ContentType.objects.get_for_model(type(record)),
        object_id=record.pk,
        released_at__isnull=True,
    ).select_related("hold")


def place(actor: User | None, hold: Hold, record: models.Model, reason: str = "") -> HoldPlacement:
    """Put ``record`` on ``hold``; a record already waiting there stays as it is."""
    with transaction.atomic():
        placement = waiting(record).filter(hold=hold).first()
        if placement is not None:
            return placement
        try:
            with transaction.atomic():
                placement = HoldPlacement.objects.create(
                    hold=hold,
                    content_type=ContentType.objects.get_for_model(type(record)),
                    object_id=record.pk,
                    placed_at=clock.now(),
                    placed_by=actor if actor and actor.pk else None,
                    reason=reason[:300],
                )
        except IntegrityError:  # placed at the same moment by someone else
            return waiting(record).get(hold=hold)
        _on_timeline(actor, record, _("Put on hold: %(hold)s") % {"hold": hold.name})
        events.emit(
            "hold.placed",
            object_type=hold.object_type,
            record_id=record.pk,
            hold=hold.code,
            actor_id=actor.pk if actor else None,
        )
    return placement


def release(actor: User | None, hold: Hold, record: models.Model, note: str = "") -> HoldPlacement:
    """Release ``record`` from ``hold``; refused when it is not waiting there."""
    with transaction.atomic():
        placement = waiting(record).filter(hold=hold).select_for_update(of=("self",)).first()
        if placement is None:
            raise Conflict(_("This record is not on this hold."))
        placement.released_at = clock.now()
        placement.released_by = actor if actor and actor.pk else None
        placement.release_note = note[:300]
        placement.save(update_fields=["released_at", "released_by", "release_note"])
        waited = placement.released_at - placement.placed_at
        _on_timeline(
            actor,
            record,
            _("Released from hold: %(hold)s (waited %(hours).1f hours)")
            % {"hold": hold.name, "hours": waited.total_seconds() / 3600},
        )
        events.emit(
            "hold.released",
            object_type=hold.object_type,
            record_id=record.pk,
            hold=hold.code,
            actor_id=actor.pk if actor else None,
        )
    return placement


def release_by_id(actor: User, placement_id: int, note: str = "") -> HoldPlacement:
    placement = HoldPlacement.objects.select_related("hold").filter(pk=placement_id).first()
    record = _record(placement) if placement else None
    if placement is None or record is None:
        raise NotFound(_("No such hold placement."))
    return release(actor, placement.hold, record, note)


def _record(placement: HoldPlacement) -> models.Model | None:
    model = registry.get(placement.hold.object_type).model
    return model._default_manager.filter(pk=placement.object_id).first()


def _on_timeline(actor: User | None, record: models.Model, text: str) -> None:
    audit.record(actor, record, AuditEvent.Action.UPDATED, {"hold": [None, text]}, str(record))


def guard_write(actor: User, instance: models.Model, changed: frozenset[str] | None) -> None:
    """Refuse a change a hold of the record blocks: a field taking the blocked value."""
    if changed:
        _refuse_blocked(instance, changed, list(waiting(instance)))


def guard_writes(actor: User, changes: list[tuple[models.Model, frozenset[str]]]) -> None:
    """``guard_write`` for many changed records of one type, with one query for all."""
    if not changes:
        return
    placements: dict[int, list[HoldPlacement]] = {}
    for placement in HoldPlacement.objects.filter(
        content_type=ContentType.objects.get_for_model(type(changes[0][0])),
        object_id__in=[instance.pk for instance, _changed in changes],
        released_at__isnull=True,
    ).select_related("hold"):
        placements.setdefault(placement.object_id, []).append(placement)
    for instance, changed in changes:
        if changed:
            _refuse_blocked(instance, changed, placements.get(instance.pk, []))


def _refuse_blocked(
    instance: models.Model, changed: frozenset[str], placements: list[HoldPlacement]
) -> None:
    for placement in placements:
        for block in placement.hold.blocks:
            name = block.get("field")
            if name not in changed:
                continue
            value = getattr(instance, instance._meta.get_field(name).attname)
            if "value" not in block or str(value) == str(block["value"]):
                raise RecordLocked(
                    _("“%(hold)s” holds this record: %(field)s cannot change now.")
                    % {"hold": placement.hold.label, "field": name}
                )


def guard_task(thread: Thread, task_type: TaskType | None) -> None:
    """Refuse a task of a type that a hold of the thread's record blocks."""
    if task_type is None or thread.content_type_id is None:
        return
    placements = HoldPlacement.objects.filter(
        content_type_id=thread.content_type_id,
        object_id=thread.object_id,
        released_at__isnull=True,
    ).select_related("hold")
    wanted = {"task_type": task_type.code}
    placement = next((p for p in placements if wanted in p.hold.blocks), None)
    if placement is not None:
        raise Conflict(
            _("“%(hold)s” holds this record: %(type)s tasks wait until it is released.")
            % {"hold": placement.hold.label, "type": task_type.label}
        )
