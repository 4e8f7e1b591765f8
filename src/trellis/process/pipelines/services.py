"""Every write to pipelines: defining them, and moving records between their stages.

A move is free in direction and distance. It locks the record, checks its version and the gate
of the stage entered, writes the record's stage fields, one ``StageChange`` row and the audit
entry in one transaction, and publishes ``<type>.stage_changed`` after the commit.

A move into a stage with an ``approve`` gate is not made at once: the record is submitted to
the stage's approval process and stays where it is, with a ``GatedMove`` waiting for the
request. The move is made when the request is approved, and dropped (with a timeline entry)
when it is rejected, recalled or cancelled. See docs/decisions/0009-approve-gate.md.
"""

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from trellis.core import audit, clock, events, records, registry
from trellis.core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    StaleVersion,
    ValidationFailed,
)
from trellis.core.models import AuditEvent, User
from trellis.core.visibility import can, is_admin, visible

from .. import cel
from ..approvals import services as approvals
from ..approvals.models import ApprovalProcess, ApprovalRequest
from . import rollups, subjects
from .board import waiting_move
from .models import BlackoutWindow, GatedMove, Pipeline, Stage, StageChange

_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_STAGE_FIELDS = {
    "id",
    "code",
    "name",
    "name_ko",
    "kind",
    "probability",
    "max_dwell_days",
    "dwell_in_business_days",
    "expected_activities",
    "gate",
    "gate_condition",
    "gate_message",
    "gate_message_ko",
    "approval_process_id",
}
_PIPELINE_FIELDS = {"object_type", "code", "name", "name_ko", "is_default", "is_active", "stages"}


class ConfirmationNeeded(ValidationFailed):
    """A ``warn`` gate whose condition does not hold: the mover may go on by confirming."""

    title = "Confirmation needed"


@dataclass
class Move:
    record: models.Model
    # None when the record was already in the stage, or waits for approval to enter it.
    change: StageChange | None
    warnings: list[str]
    # The move into an approve stage that was submitted for approval instead of made.
    gated: GatedMove | None = None


# Moving records.


def move(
    actor: User,
    object_type: str,
    pk: int,
    stage_id: Any,
    *,
    version: int | None,
    confirm: bool = False,
) -> Move:
    """Move a record to a stage of its pipeline, forward or back, any distance.

    A ``require`` gate that does not hold refuses the move; a ``warn`` gate refuses it with
    ``ConfirmationNeeded`` unless ``confirm`` is given, and the warning is then kept with the
    move's answer. An ``approve`` gate submits the record to the stage's approval process
    and leaves it where it is (``Move.gated``), unless the process's entry condition does not
    hold for it: then no approval is needed and the move is made. While such a move waits,
    every other move of the record is refused.
    """
    try:
        subject = subjects.get(object_type)
    except KeyError:
        raise NotFound(_("This kind of record has no pipelines.")) from None
    with transaction.atomic():
        record = visible(actor, subject.model).select_for_update(of=("self",)).filter(pk=pk).first()
        if record is None:
            raise NotFound(_("No such record."))
        if not can(actor, "edit", object_type):
            raise PermissionDenied(_("You may not edit this record."))
        if version is None:
            raise ValidationFailed({"version": [_("Send the version you edited.")]})
        if record.version != version:
            raise StaleVersion(record)
        current = _current_stage(subject, record)
        stage = _target_stage(stage_id, subject, current)
        if current is not None and stage.pk == current.pk:
            return Move(record, None, [])
        waiting = waiting_move(record)
        if waiting is not None:
            raise Conflict(_waiting_message(waiting))
        warnings = _check_gate(stage, record, confirm)
        process = _approval_needed(stage, record)
        if process is not None:
            gated = _submit(actor, subject, record, stage, current, process)
            record.refresh_from_db()
            return Move(record, gated.change, warnings, gated)
        change = _enter(actor, subject, record, stage, current)
    return Move(record, change, warnings)


def enter_pipeline(
    actor: User, record: models.Model, pipeline: Pipeline | None = None
) -> StageChange | None:
    """Put a record that has no stage yet into the first stage of ``pipeline`` (by default the
    default pipeline of its type). Called by domain services inside their own transaction,
    e.g. when a record is created; does nothing when the type has no active pipeline."""
    subject = subjects.for_model(type(record))
    if subject is None or _current_stage(subject, record) is not None:
        return None
    if pipeline is None:
        pipeline = Pipeline.objects.filter(
            object_type=subject.object_type, is_default=True, is_active=True
        ).first()
    if pipeline is None:
        return None
    # A record created as won or lost (e.g. an imported deal) enters the stage of that kind.
    kind = getattr(record, subject.status_field) if subject.status_field else Stage.Kind.OPEN
    stage = pipeline.stages.filter(is_active=True, kind=kind).order_by("order").first()
    if stage is None:
        return None
    return _enter(actor, subject, record, stage, None, bump_version=False)


def move_to_kind(actor: User, object_type: str, pk: int, kind: str, *, version: int) -> Move:
    """Move a record to the first stage of ``kind`` in its pipeline: what setting a deal's
    status to won or lost means once it runs in a pipeline."""
    subject = subjects.get(object_type)
    record = visible(actor, subject.model).filter(pk=pk).first()
    current = _current_stage(subject, record) if record is not None else None
    if current is None:
        raise NotFound(_("No such record."))
    if current.kind == kind:
        return Move(record, None, [])
    stage = current.pipeline.stages.filter(is_active=True, kind=kind).order_by("order").first()
    if stage is None:
        raise ValidationFailed({"status": [_("The pipeline has no stage of this kind.")]})
    return move(actor, object_type, pk, stage.pk, version=version, confirm=True)


def _current_stage(subject: subjects.Subject, record: models.Model) -> Stage | None:
    stage_id = getattr(record, subject.stage_field + "_id")
    return Stage.objects.select_related("pipeline").get(pk=stage_id) if stage_id else None


def _target_stage(value: Any, subject: subjects.Subject, current: Stage | None) -> Stage:
    try:
        stage_id = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed({"stage_id": [_("Give the id of a stage.")]}) from None
    stage = Stage.objects.select_related("pipeline").filter(pk=stage_id, is_active=True).first()
    if stage is None or stage.pipeline.object_type != subject.object_type:
        raise ValidationFailed({"stage_id": [_("No such stage.")]})
    if current is not None and stage.pipeline_id != current.pipeline_id:
        raise ValidationFailed(
            {
                "stage_id": [
                    _("This stage belongs to the pipeline %(other)s; the record is in %(own)s.")
                    % {"other": stage.pipeline.label, "own": current.pipeline.label}
                ]
            }
        )
    if current is None and not stage.pipeline.is_active:
        raise ValidationFailed({"stage_id": [_("This pipeline is not active.")]})
    return stage


def _check_gate(stage: Stage, record: models.Model, confirm: bool) -> list[str]:
    if stage.gate in (Stage.Gate.FREE, Stage.Gate.APPROVE) or not stage.gate_condition:
        return []
    if cel.holds(stage.gate_condition, cel.context(record)):
        return []
    message = stage.message or _("The condition for entering %(stage)s does not hold.") % {
        "stage": stage.label
    }
    if stage.gate == Stage.Gate.REQUIRE:
        raise ValidationFailed({"stage_id": [message]}, detail=message)
    if not confirm:
        raise ConfirmationNeeded(
            {"stage_id": [message]},
            detail=_("%(message)s Confirm to move anyway.") % {"message": message},
        )
    return [message]


# The approve gate.


def _waiting_message(gated: GatedMove) -> str:
    return _(
        "This record waits for approval to enter %(stage)s (%(request)s); it cannot be moved "
        "until that is decided or recalled."
    ) % {"stage": gated.to_stage.label, "request": _request_label(gated.request)}


def _request_label(request: ApprovalRequest) -> str:
    return _("%(process)s #%(n)d") % {"process": request.process.label, "n": request.pk}


def _approval_needed(stage: Stage, record: models.Model) -> ApprovalProcess | None:
    """The process a move into ``stage`` must be approved by; None when the stage has no
    approve gate or the process's entry condition does not hold for the record."""
    if stage.gate != Stage.Gate.APPROVE:
        return None
    process = stage.approval_process
    if process is None or not process.is_active:
        message = _(
            "Entering %(stage)s needs an approval, but its approval process is missing or not "
            "active; ask an administrator."
        ) % {"stage": stage.label}
        raise ValidationFailed({"stage_id": [message]}, detail=message)
    condition = approvals.current_version(process).entry_condition
    if condition and not cel.holds(condition, cel.context(record)):
        return None
    return process


def _submit(
    actor: User,
    subject: subjects.Subject,
    record: models.Model,
    stage: Stage,
    current: Stage | None,
    process: ApprovalProcess,
) -> GatedMove:
    """Submit the record to ``process`` for the move into ``stage``; the move waits."""
    made: list[GatedMove] = []

    def note(request: ApprovalRequest) -> None:
        gated = GatedMove.objects.create(
            request=request,
            pipeline_id=stage.pipeline_id,
            content_type=ContentType.objects.get_for_model(type(record)),
            object_id=record.pk,
            from_stage=current,
            to_stage=stage,
            mover=actor,
            at=request.submitted_at,
        )
        _gate_entry(
            actor,
            record,
            _("Waiting for approval to move to %(stage)s: %(request)s")
            % {"stage": stage.label, "request": _request_label(request)},
        )
        made.append(gated)

    request = approvals.submit(
        actor,
        subject.object_type,
        record.pk,
        process_id=process.pk,
        comment=_("To move to the stage %(stage)s.") % {"stage": stage.label},
        started=note,
    )
    gated = made[0]
    gated.refresh_from_db()  # the move is made already if the process approved at once
    gated.request = request
    return gated


def gated_message(gated: GatedMove) -> str:
    """What the mover is told of a move into an approve stage."""
    request = gated.request
    values = {
        "process": request.process.label,
        "n": request.pk,
        "stage": gated.to_stage.label,
    }
    if request.status == ApprovalRequest.Status.PENDING:
        return (
            _(
                "Submitted for approval: %(process)s, request #%(n)d. The record moves to "
                "%(stage)s when it is approved."
            )
            % values
        )
    if request.status == ApprovalRequest.Status.APPROVED:
        return _("Approved at once (%(process)s, request #%(n)d): moved to %(stage)s.") % values
    return _("Not moved to %(stage)s: %(process)s, request #%(n)d, was %(status)s.") % {
        **values,
        "status": request.get_status_display(),
    }


def _gate_entry(actor: User | None, record: models.Model, text: str) -> None:
    """An entry on the record's timeline, beside those of its approval request."""
    audit.record(actor, record, AuditEvent.Action.UPDATED, {"approval": [None, text]}, str(record))


def _approval_finished(
    request: ApprovalRequest, record: models.Model | None, actor: User | None, now: dt.datetime
) -> None:
    """Make the move that waited for ``request`` when it is approved; drop it otherwise."""
    # The request's row lock, taken by every service that ends it, serialises this too.
    gated = GatedMove.objects.select_related("to_stage", "mover").filter(request=request).first()
    if gated is None or record is None:
        return
    stage = gated.to_stage
    subject = subjects.for_model(type(record))
    current = _current_stage(subject, record) if subject else None
    if request.status != ApprovalRequest.Status.APPROVED:
        _gate_entry(
            actor,
            record,
            _("Not moved to %(stage)s: %(request)s was %(status)s.")
            % {
                "stage": stage.label,
                "request": _request_label(request),
                "status": request.get_status_display(),
            },
        )
        return
    if not stage.is_active or (current is not None and current.pipeline_id != stage.pipeline_id):
        # The stage was retired while the request ran.
        _gate_entry(
            actor,
            record,
            _("Not moved to %(stage)s: the stage is no longer in use.") % {"stage": stage.label},
        )
        return
    if current is not None and current.pk == stage.pk:
        return
    # What the process decided: neither the lock nor reopening approval applies to it.
    with approvals.engine_writing():
        gated.change = _enter(gated.mover, subject, record, stage, current)
    gated.save(update_fields=["change"])


def _move_decided(actor: User, record: models.Model, stage_id: int) -> str:
    """An approval process's "move to a stage" action: the move, through its gates, with any
    warning confirmed (the process's definition chose the stage); what was done, in words."""
    moved = move(
        actor,
        registry.for_model(type(record)).key,
        record.pk,
        stage_id,
        version=record.version,
        confirm=True,
    )
    stage = Stage.objects.get(pk=stage_id).label
    if moved.gated is not None:
        return _("%(stage)s, once approved") % {"stage": stage}
    return stage


approvals.on_finish(_approval_finished)
approvals.moves_to_stages(_move_decided)


def _enter(
    actor: User | None,
    subject: subjects.Subject,
    record: Any,
    stage: Stage,
    current: Stage | None,
    *,
    bump_version: bool = True,
) -> StageChange:
    now = clock.now()
    if current is None:
        direction = StageChange.Direction.ENTERED
    elif stage.order > current.order:
        direction = StageChange.Direction.FORWARD
    else:
        direction = StageChange.Direction.BACKWARD
    entered_before = getattr(record, subject.entered_field)
    setattr(record, subject.stage_field, stage)
    setattr(record, subject.entered_field, now)
    changed = [subject.stage_field, subject.entered_field]
    # What the timeline shows of the move: the stage, and what followed from it.
    changes: dict[str, list[Any]] = {
        subject.stage_field: [_audited(current) if current else None, _audited(stage)]
    }
    follows = {}
    if subject.probability_field and not (
        subject.probability_manual_field and getattr(record, subject.probability_manual_field)
    ):
        follows[subject.probability_field] = stage.probability
    if subject.status_field:
        follows[subject.status_field] = stage.kind
    for name, value in follows.items():
        old = getattr(record, name)
        if old != value:
            setattr(record, name, value)
            changed.append(name)
            changes[name] = [old, value]
    if bump_version:
        record.version += 1
        record.updated_at = now
        changed += ["version", "updated_at"]
    if record.pk is not None and not record._state.adding:
        record.save(update_fields=changed)
        if actor is not None:
            # A record locked by a pending approval refuses a move like any other edit.
            records.check_write(actor, record, changed)
    change = StageChange.objects.create(
        pipeline_id=stage.pipeline_id,
        content_type=ContentType.objects.get_for_model(type(record)),
        object_id=record.pk,
        from_stage=current,
        to_stage=stage,
        direction=direction,
        at=now,
        from_entered_at=entered_before if current is not None else None,
        actor=actor,
        owner_id=getattr(record, "owner_id", None),
        amount=_field(record, subject.amount_field),
        currency=_field(record, subject.currency_field) or "",
        expected_close_date=_field(record, subject.close_date_field),
        probability=_field(record, subject.probability_field),
    )
    rollups.add_move(change, current, stage)
    if current is not None or bump_version:  # entering later (e.g. onboarding) shows too
        audit.record(actor, record, AuditEvent.Action.UPDATED, changes, str(record))
    events.emit(
        f"{subject.object_type}.stage_changed",
        id=record.pk,
        actor_id=actor.pk if actor else None,
        change_id=change.pk,
        from_stage_id=current.pk if current else None,
        to_stage_id=stage.pk,
        direction=direction,
    )
    return change


def _audited(stage: Stage) -> dict[str, Any]:
    return {"id": stage.pk, "label": stage.name}


def _field(record: Any, name: str) -> Any:
    return getattr(record, name) if name else None


# Defining pipelines.


def save_pipeline(
    actor: User,
    data: Mapping[str, Any],
    *,
    pk: int | None = None,
    version: int | None = None,
) -> Pipeline:
    """Create a pipeline, or replace one's definition with ``data`` if it is still at
    ``version``. Stages are given in order; a stage left out is deleted when no record ever
    entered it, retired otherwise, and refused while records are still in it. History is never
    rewritten: past moves keep pointing at the stages they went through."""
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define pipelines."))
    with transaction.atomic():
        pipeline = None
        if pk is not None:
            pipeline = Pipeline.objects.select_for_update().filter(pk=pk).first()
            if pipeline is None:
                raise NotFound(_("No such pipeline."))
            if version is None:
                raise ValidationFailed({"version": [_("Send the version you edited.")]})
            if pipeline.version != version:
                raise StaleVersion(pipeline)
        errors: dict[str, list[str]] = {}
        values = _checked_pipeline(data, pipeline, errors)
        stages = _checked_stages(data.get("stages"), values.get("object_type"), pipeline, errors)
        if errors:
            raise ValidationFailed(errors)
        before = _definition(pipeline) if pipeline else None
        if pipeline is None:
            pipeline = Pipeline(**values)
        else:
            for name, value in values.items():
                setattr(pipeline, name, value)
            pipeline.version += 1
            pipeline.updated_at = clock.now()
        if pipeline.is_default:
            Pipeline.objects.filter(object_type=pipeline.object_type, is_default=True).exclude(
                pk=pipeline.pk
            ).update(is_default=False)
        try:
            with transaction.atomic():
                pipeline.save()
        except IntegrityError:
            raise ValidationFailed({"code": [_("This code is taken.")]}) from None
        _write_stages(pipeline, stages)
        after = _definition(pipeline)
        audit.record(
            actor,
            pipeline,
            AuditEvent.Action.CREATED if before is None else AuditEvent.Action.UPDATED,
            audit.diff(before or {}, after),
            str(pipeline),
        )
    return pipeline


def _definition(pipeline: Pipeline) -> dict[str, Any]:
    """What the audit log keeps of a pipeline's definition."""
    return {
        "code": pipeline.code,
        "name": pipeline.name,
        "name_ko": pipeline.name_ko,
        "is_default": pipeline.is_default,
        "is_active": pipeline.is_active,
        "stages": [
            f"{s.code}:{s.kind}:{s.probability}"
            for s in pipeline.stages.filter(is_active=True).order_by("order")
        ],
    }


def _checked_pipeline(
    data: Mapping[str, Any], pipeline: Pipeline | None, errors: dict[str, list[str]]
) -> dict[str, Any]:
    for key in data:
        if key not in _PIPELINE_FIELDS:
            errors[key] = [_("Unknown field.")]
    values: dict[str, Any] = {}
    object_type = data.get("object_type", pipeline.object_type if pipeline else None)
    if pipeline is not None and object_type != pipeline.object_type:
        errors["object_type"] = [_("A pipeline keeps its object type.")]
    elif object_type not in {s.object_type for s in subjects.all_subjects()}:
        errors["object_type"] = [_("This kind of record has no pipelines.")]
    values["object_type"] = object_type
    code = data.get("code", pipeline.code if pipeline else "")
    if not isinstance(code, str) or not _CODE.match(code):
        errors["code"] = [_("Use lower-case letters, digits and hyphens, up to 40.")]
    values["code"] = code
    name = data.get("name", pipeline.name if pipeline else "")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = [_("Give a name.")]
    values["name"] = str(name or "").strip()[:100]
    values["name_ko"] = str(data.get("name_ko", pipeline.name_ko if pipeline else "") or "")[
        :100
    ].strip()
    for flag, default in (("is_default", False), ("is_active", True)):
        value = data.get(flag, getattr(pipeline, flag) if pipeline else default)
        if not isinstance(value, bool):
            errors[flag] = [_("Give true or false.")]
        values[flag] = bool(value)
    return values


@dataclass
class _StageInput:
    instance: Stage
    order: int


def _checked_stages(
    value: Any,
    object_type: str | None,
    pipeline: Pipeline | None,
    errors: dict[str, list[str]],
) -> list[Stage]:
    if value is None and pipeline is not None:
        return list(pipeline.stages.filter(is_active=True).order_by("order"))
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        errors["stages"] = [_("Give the stages, in order.")]
        return []
    existing = {s.pk: s for s in pipeline.stages.all()} if pipeline else {}
    try:
        fields = cel.fields_of(subjects.get(object_type).model) if object_type else set()
    except KeyError:
        fields = set()
    stages: list[Stage] = []
    codes: set[str] = set()
    for index, item in enumerate(value):
        prefix = f"stages.{index}."
        if not isinstance(item, Mapping):
            errors[f"stages.{index}"] = [_("Give each stage as an object.")]
            continue
        for key in item:
            if key not in _STAGE_FIELDS:
                errors[prefix + key] = [_("Unknown field.")]
        stage = existing.get(item.get("id")) if item.get("id") is not None else Stage()
        if stage is None:
            errors[prefix + "id"] = [_("No such stage in this pipeline.")]
            continue
        _checked_stage(stage, item, prefix, fields, object_type, errors)
        if stage.code in codes:
            errors[prefix + "code"] = [_("Two stages have this code.")]
        codes.add(stage.code)
        stage.order = index + 1
        stage.is_active = True
        stages.append(stage)
    kinds = {s.kind for s in stages}
    if stages and Stage.Kind.WON not in kinds:
        errors.setdefault("stages", []).append(_("A pipeline needs a won stage."))
    if stages and Stage.Kind.OPEN not in kinds:
        errors.setdefault("stages", []).append(_("A pipeline needs an open stage."))
    return stages


def _checked_stage(
    stage: Stage,
    item: Mapping[str, Any],
    prefix: str,
    fields: set[str],
    object_type: str | None,
    errors: dict[str, list[str]],
) -> None:
    def text(name: str, limit: int, required: str = "") -> str:
        value = item.get(name, getattr(stage, name))
        if value is None:
            value = ""
        if not isinstance(value, str):
            errors[prefix + name] = [_("Give text.")]
            return ""
        value = value.strip()
        if required and not value:
            errors[prefix + name] = [required]
        if len(value) > limit:
            errors[prefix + name] = [_("At most %(n)d characters.") % {"n": limit}]
        return value

    stage.code = text("code", 40, _("Give a code."))
    if stage.code and not _CODE.match(stage.code):
        errors[prefix + "code"] = [_("Use lower-case letters, digits and hyphens, up to 40.")]
    stage.name = text("name", 100, _("Give a name."))
    stage.name_ko = text("name_ko", 100)
    stage.kind = item.get("kind", stage.kind)
    if stage.kind not in Stage.Kind.values:
        errors[prefix + "kind"] = [_("Choose open, won or lost.")]
    probability = item.get("probability", stage.probability)
    if (
        isinstance(probability, bool)
        or not isinstance(probability, int)
        or not (0 <= probability <= 100)
    ):
        errors[prefix + "probability"] = [_("Give a whole percent from 0 to 100.")]
    else:
        stage.probability = probability
    dwell = item.get("max_dwell_days", stage.max_dwell_days)
    if dwell is not None and (
        isinstance(dwell, bool) or not isinstance(dwell, int) or not (1 <= dwell <= 3650)
    ):
        errors[prefix + "max_dwell_days"] = [_("Give a number of days from 1 to 3650, or none.")]
    else:
        stage.max_dwell_days = dwell
    business = item.get("dwell_in_business_days", stage.dwell_in_business_days)
    if not isinstance(business, bool):
        errors[prefix + "dwell_in_business_days"] = [_("Give true or false.")]
    else:
        stage.dwell_in_business_days = business
    activities = item.get("expected_activities", stage.expected_activities)
    if not _activities_ok(activities):
        errors[prefix + "expected_activities"] = [
            _('Give a list of activities, each as {"en": "...", "ko": "..."}.')
        ]
    else:
        stage.expected_activities = [
            {"en": a["en"].strip(), "ko": (a.get("ko") or "").strip()} for a in activities
        ]
    stage.gate = item.get("gate", stage.gate)
    if stage.gate not in Stage.Gate.values:
        errors[prefix + "gate"] = [_("Choose free, warn, require or approve.")]
    stage.gate_condition = text("gate_condition", 2000)
    stage.gate_message = text("gate_message", 300)
    stage.gate_message_ko = text("gate_message_ko", 300)
    if stage.gate in (Stage.Gate.WARN, Stage.Gate.REQUIRE):
        if not stage.gate_condition:
            errors[prefix + "gate_condition"] = [_("A warn or require gate needs a condition.")]
        else:
            try:
                cel.check(stage.gate_condition, fields)
            except cel.ConditionError as exc:
                errors[prefix + "gate_condition"] = [str(exc)]
    _checked_approval_process(stage, item, prefix, object_type, errors)


def _checked_approval_process(
    stage: Stage,
    item: Mapping[str, Any],
    prefix: str,
    object_type: str | None,
    errors: dict[str, list[str]],
) -> None:
    """An approve gate names an active approval process of the pipeline's kind of record; no
    other gate names one."""
    key = prefix + "approval_process_id"
    value = item.get("approval_process_id", stage.approval_process_id)
    if stage.gate != Stage.Gate.APPROVE:
        if value not in (None, ""):
            errors[key] = [_("Only an approve gate takes an approval process.")]
        stage.approval_process = None
        return
    if stage.gate_condition:
        errors[prefix + "gate_condition"] = [
            _(
                "An approve gate has no condition of its own: the process's entry condition says "
                "when approval is needed."
            )
        ]
    process = None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        process = ApprovalProcess.objects.filter(pk=value).first()
    if value in (None, ""):
        errors[key] = [_("An approve gate needs an approval process.")]
    elif process is None:
        errors[key] = [_("No such approval process.")]
    elif process.object_type != object_type:
        errors[key] = [
            _("This approval process is for another kind of record (%(type)s).")
            % {"type": process.object_type}
        ]
    elif not process.is_active:
        errors[key] = [_("This approval process is not active.")]
    else:
        stage.approval_process = process


def _activities_ok(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(a, Mapping)
        and isinstance(a.get("en"), str)
        and a["en"].strip()
        and isinstance(a.get("ko", ""), str)
        and len(a["en"]) <= 200
        and len(a.get("ko", "")) <= 200
        for a in value
    )


def _write_stages(pipeline: Pipeline, stages: list[Stage]) -> None:
    kept = {s.pk for s in stages if s.pk}
    subject = subjects.get(pipeline.object_type)
    dropped = pipeline.stages.filter(is_active=True).exclude(pk__in=kept)
    for stage in dropped:
        still_in = subject.model._default_manager.filter(**{subject.stage_field: stage}).count()
        if still_in:
            raise ValidationFailed(
                {
                    "stages": [
                        ngettext(
                            "%(count)d record is still in the stage %(stage)s; move it "
                            "before removing it.",
                            "%(count)d records are still in the stage %(stage)s; move them "
                            "before removing it.",
                            still_in,
                        )
                        % {"count": still_in, "stage": stage.label}
                    ]
                }
            )
    used = set(
        StageChange.objects.filter(to_stage__in=dropped).values_list("to_stage_id", flat=True)
    )
    dropped.exclude(pk__in=used).delete()
    # Codes are unique within a pipeline. A retired stage gives its code up ("~" cannot start
    # a code), and the kept ones drop theirs for a moment, so that stages may swap codes.
    for pk in [*used, *kept]:
        Stage.objects.filter(pk=pk).update(code=f"~{pk}")
    Stage.objects.filter(pk__in=used).update(is_active=False)
    for stage in stages:
        stage.pipeline = pipeline
        stage.full_clean(exclude=["pipeline"], validate_unique=False, validate_constraints=False)
        stage.save()


# Blackout windows.

# A quarter has 90 to 92 days: its 14th week holds its 92nd day, or nothing.
QUARTER_WEEKS = 14
_BLACKOUT_FIELDS = {
    "name",
    "name_ko",
    "stage_id",
    "starts_on",
    "ends_on",
    "quarter_week_from",
    "quarter_week_to",
}


def save_blackout(
    actor: User, pipeline_id: int, data: Mapping[str, Any], *, pk: int | None = None
) -> BlackoutWindow:
    """Create a blackout window of a pipeline, or change one (``pk``); a field left out of
    ``data`` keeps its value. A window is either fixed dates (``starts_on`` to ``ends_on``,
    both included) or weeks of every quarter (``quarter_week_from`` to ``quarter_week_to``,
    1 to 14), for the whole pipeline or for one of its stages (``stage_id``)."""
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define pipelines."))
    with transaction.atomic():
        pipeline = Pipeline.objects.filter(pk=pipeline_id).first()
        if pipeline is None:
            raise NotFound(_("No such pipeline."))
        window = None
        if pk is not None:
            window = (
                BlackoutWindow.objects.select_for_update().filter(pk=pk, pipeline=pipeline).first()
            )
            if window is None:
                raise NotFound(_("No such blackout window."))
        before = _blackout_definition(window) if window else None
        errors: dict[str, list[str]] = {}
        values = _checked_blackout(data, pipeline, window, errors)
        if errors:
            raise ValidationFailed(errors)
        if window is None:
            window = BlackoutWindow(pipeline=pipeline)
        for name, value in values.items():
            setattr(window, name, value)
        window.save()
        audit.record(
            actor,
            window,
            AuditEvent.Action.CREATED if before is None else AuditEvent.Action.UPDATED,
            audit.diff(before or {}, _blackout_definition(window)),
            f"{pipeline.name}: {window.name}",
        )
    return window


def delete_blackout(actor: User, pipeline_id: int, pk: int) -> None:
    """Remove a blackout window; reports stop naming it."""
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define pipelines."))
    with transaction.atomic():
        window = (
            BlackoutWindow.objects.select_for_update()
            .select_related("pipeline")
            .filter(pk=pk, pipeline_id=pipeline_id)
            .first()
        )
        if window is None:
            raise NotFound(_("No such blackout window."))
        audit.record(
            actor,
            window,
            AuditEvent.Action.DELETED,
            {
                name: [value, None]
                for name, value in _blackout_definition(window).items()
                if value not in (None, "")
            },
            f"{window.pipeline.name}: {window.name}",
        )
        window.delete()


def quarter_start(day: dt.date) -> dt.date:
    return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)


def next_quarter_start(day: dt.date) -> dt.date:
    start = quarter_start(day)
    return (
        dt.date(start.year + 1, 1, 1) if start.month == 10 else start.replace(month=start.month + 3)
    )


def week_of_quarter(day: dt.date) -> int:
    """1 for the first seven days of the day's quarter, 2 for the next seven, and so on."""
    return (day - quarter_start(day)).days // 7 + 1


def blackouts_on(pipeline: Pipeline | int, day: dt.date) -> list[BlackoutWindow]:
    """The blackout windows of a pipeline that cover ``day``: those of the whole pipeline and
    those of a single stage (see ``stage_id``)."""
    week = week_of_quarter(day)
    return list(
        BlackoutWindow.objects.filter(pipeline=pipeline)
        .filter(
            models.Q(starts_on__lte=day, ends_on__gte=day)
            | models.Q(quarter_week_from__lte=week, quarter_week_to__gte=week)
        )
        .order_by("pk")
    )


def blackout_spans(
    window: BlackoutWindow, start: dt.date, end: dt.date
) -> list[tuple[dt.date, dt.date]]:
    """The stretches of days (first, last, both included) the window covers within the
    period ``[start, end)``: one for fixed dates, one per quarter for weeks of the quarter."""
    spans: list[tuple[dt.date, dt.date]] = []
    last = end - dt.timedelta(days=1)
    if start > last:
        return spans
    if window.starts_on is not None and window.ends_on is not None:
        candidates = [(window.starts_on, window.ends_on)]
    else:
        candidates = []
        quarter = quarter_start(start)
        while quarter <= last:
            following = next_quarter_start(quarter)
            first = quarter + dt.timedelta(weeks=window.quarter_week_from - 1)
            final = quarter + dt.timedelta(weeks=window.quarter_week_to) - dt.timedelta(days=1)
            final = min(final, following - dt.timedelta(days=1))
            if first <= final:
                candidates.append((first, final))
            quarter = following
    for first, final in candidates:
        first, final = max(first, start), min(final, last)
        if first <= final:
            spans.append((first, final))
    return spans


def blackouts_during(
    pipeline: Pipeline | int, start: dt.date, end: dt.date
) -> list[tuple[BlackoutWindow, list[tuple[dt.date, dt.date]]]]:
    """The blackout windows of a pipeline that overlap the period ``[start, end)``, each with
    the days it covers there (see ``blackout_spans``)."""
    found = []
    for window in BlackoutWindow.objects.filter(pipeline=pipeline).order_by("pk"):
        spans = blackout_spans(window, start, end)
        if spans:
            found.append((window, spans))
    return found


def _blackout_definition(window: BlackoutWindow) -> dict[str, Any]:
    return {
        "name": window.name,
        "name_ko": window.name_ko,
        "stage": window.stage_id,
        "starts_on": window.starts_on,
        "ends_on": window.ends_on,
        "quarter_week_from": window.quarter_week_from,
        "quarter_week_to": window.quarter_week_to,
    }


def _checked_blackout(
    data: Mapping[str, Any],
    pipeline: Pipeline,
    window: BlackoutWindow | None,
    errors: dict[str, list[str]],
) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        errors["__all__"] = [_("Give the window as an object.")]
        return {}
    for key in data:
        if key not in _BLACKOUT_FIELDS:
            errors[key] = [_("Unknown field.")]

    def given(name: str) -> Any:
        return data[name] if name in data else (getattr(window, name) if window else None)

    values: dict[str, Any] = {}
    for name, limit, required in (("name", 200, True), ("name_ko", 200, False)):
        value = given(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            errors[name] = [_("Give text.")]
            continue
        value = value.strip()
        if required and not value:
            errors[name] = [_("Give a name.")]
        elif len(value) > limit:
            errors[name] = [_("At most %(n)d characters.") % {"n": limit}]
        values[name] = value

    stage_id = given("stage_id")
    values["stage_id"] = None
    if stage_id not in (None, ""):
        stage = None
        if isinstance(stage_id, int) and not isinstance(stage_id, bool) and 0 < stage_id < 2**63:
            stage = Stage.objects.filter(pk=stage_id, pipeline=pipeline).first()
        if stage is None:
            errors["stage_id"] = [_("Choose a stage of this pipeline, or none.")]
        elif not stage.is_active and (window is None or window.stage_id != stage.pk):
            errors["stage_id"] = [_("This stage is retired.")]
        else:
            values["stage_id"] = stage.pk

    dates = {name: _date(given(name), name, errors) for name in ("starts_on", "ends_on")}
    weeks = {
        name: _week(given(name), name, errors) for name in ("quarter_week_from", "quarter_week_to")
    }
    has_dates = any(given(name) not in (None, "") for name in dates)
    has_weeks = any(given(name) not in (None, "") for name in weeks)
    if has_dates and has_weeks:
        errors.setdefault("__all__", []).append(
            _("Give either fixed dates or weeks of the quarter, not both.")
        )
    elif not has_dates and not has_weeks:
        errors.setdefault("__all__", []).append(_("Give fixed dates, or weeks of every quarter."))
    elif has_dates:
        _pair(
            dates,
            ("starts_on", _("Give the first day too.")),
            ("ends_on", _("Give the last day too.")),
            _("The window ends before it starts."),
            errors,
        )
    else:
        _pair(
            weeks,
            ("quarter_week_from", _("Give the first week too.")),
            ("quarter_week_to", _("Give the last week too.")),
            _("The last week comes before the first."),
            errors,
        )
    values.update(dates)
    values.update(weeks)
    return values


def _pair(
    values: dict[str, Any],
    first: tuple[str, str],
    last: tuple[str, str],
    out_of_order: str,
    errors: dict[str, list[str]],
) -> None:
    """Both ends of a window given, in order; ``first`` and ``last`` are (field, message when
    missing)."""
    (low, low_missing), (high, high_missing) = first, last
    if low in errors or high in errors:
        return
    if values[low] is None:
        errors[low] = [low_missing]
    elif values[high] is None:
        errors[high] = [high_missing]
    elif values[high] < values[low]:
        errors[high] = [out_of_order]


def _date(value: Any, name: str, errors: dict[str, list[str]]) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    errors[name] = [_("Give a date as YYYY-MM-DD.")]
    return None


def _week(value: Any, name: str, errors: dict[str, list[str]]) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= QUARTER_WEEKS:
        return value
    errors[name] = [_("Give a week of the quarter from 1 to %(n)d.") % {"n": QUARTER_WEEKS}]
    return None
