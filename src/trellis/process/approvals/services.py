"""Every write of approvals: definitions, requests and decisions, delegations, exceptions.

A request's row is locked (``select_for_update``) by every service that changes it, before
anything else is read; so two approvers deciding at once, a double click or a retried call are
serialised, and the second finds the decision already recorded. The one pending request per
record is a unique constraint, so two submissions at once start one request.
"""

import contextvars
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from trellis.core import audit, calendar, clock, events, records, sweep
from trellis.core.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    ServiceError,
    StaleVersion,
    ValidationFailed,
)
from trellis.core.models import SYSTEM_USERNAME, AuditEvent, Role, User
from trellis.core.services import system_user
from trellis.core.visibility import can, is_admin, visible
from trellis.mail import outbound

from .. import cel, notify
from .. import services as tasks
from ..pipelines.models import Stage
from . import reports, subjects
from .models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalProcessVersion,
    ApprovalRequest,
    ApprovalStepRun,
    Delegation,
    ExceptionRequest,
)

Status = ApprovalRequest.Status
StepStatus = ApprovalStepRun.Status
Via = ApprovalAssignment.Via
Kind = ApprovalEvent.Kind

RULES = ("first", "all", "n_of_m")
WHEN_FALSE = ("skip", "approve", "reject")
ESCALATIONS = ("none", "manager", "user", "approve", "reject")
ON_REJECT = ("end", "back")
APPROVER_KINDS = ("user", "role", "manager", "managers_manager", "field")
ACTION_KINDS = ("set_fields", "email", "task", "stage")
ACTION_MOMENTS = ("approve", "reject", "recall")
MAX_STEPS = 20
MAX_HOURS = 24 * 365
MAX_COMMENT = 4000
# Fields no action may set and no definition may name: the engine's own bookkeeping.
_RESERVED = frozenset({"id", "version", "created_at", "updated_at", "search_text"})
_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PROCESS_FIELDS = frozenset(
    {
        "object_type",
        "code",
        "name",
        "name_ko",
        "owner_id",
        "is_active",
        "entry_condition",
        "steps",
        "material_fields",
        "editable_fields",
        "actions",
    }
)
_STEP_FIELDS = frozenset(
    {
        "name",
        "condition",
        "when_false",
        "approvers",
        "rule",
        "required",
        "timeout_hours",
        "remind_before_hours",
        "escalation",
        "escalate_to",
        "on_reject",
    }
)

# Set while the engine itself writes a record (the "set fields" actions): those writes are
# what the process decided, so they neither meet the lock nor reopen approval.
_engine_writing: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "approvals_engine_writing", default=False
)


def _unlock_hours() -> float:
    return settings.TRELLIS.get("APPROVALS", {}).get("UNLOCK_HOURS", 4)


def _given(value: Any) -> bool:
    return value not in (None, "")


def _text(value: Any, field: str, limit: int, errors: dict[str, list[str]]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[field] = [_("Give text.")]
        return ""
    if len(value) > limit:
        errors[field] = [_("At most %(n)d characters.") % {"n": limit}]
    return value.strip()


def _user_id(value: Any, field: str, errors: dict[str, list[str]]) -> User | None:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        errors[field] = [_("Give the id of a user.")]
        return None
    user = (
        User.objects.filter(pk=pk, is_active=True).exclude(username=SYSTEM_USERNAME).first()
        if 0 < pk < 2**63
        else None
    )
    if user is None:
        errors[field] = [_("No such user.")]
    return user


# Defining processes.


def save_process(
    actor: User,
    data: Mapping[str, Any],
    *,
    pk: int | None = None,
    version: int | None = None,
) -> ApprovalProcess:
    """Create a process, or publish a changed definition of one that is still at ``version``.

    Every save publishes a new version; requests already running keep the version they
    started with. A bad definition is refused as a whole, with each error under its path
    (``steps.1.approvers.0.user_id``), and nothing is written.
    """
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define approval processes."))
    with transaction.atomic():
        process = None
        if pk is not None:
            process = ApprovalProcess.objects.select_for_update().filter(pk=pk).first()
            if process is None:
                raise NotFound(_("No such approval process."))
            if version is None:
                raise ValidationFailed({"version": [_("Send the version you edited.")]})
            if process.version != version:
                raise StaleVersion(process)
        errors: dict[str, list[str]] = {}
        values, definition = _checked_process(actor, data, process, errors)
        if errors:
            raise ValidationFailed(errors)
        now = clock.now()
        before = _summary(process) if process else None
        if process is None:
            process = ApprovalProcess(**values, created_at=now, updated_at=now)
        else:
            for name, value in values.items():
                setattr(process, name, value)
            process.version += 1
            process.updated_at = now
        try:
            with transaction.atomic():
                process.save()
        except IntegrityError:
            raise ValidationFailed({"code": [_("This code is taken.")]}) from None
        ApprovalProcessVersion.objects.create(
            process=process,
            number=process.version,
            published_at=now,
            published_by=actor,
            **definition,
        )
        audit.record(
            actor,
            process,
            AuditEvent.Action.CREATED if before is None else AuditEvent.Action.UPDATED,
            audit.diff(before or {}, _summary(process)),
            str(process),
        )
    return process


def current_version(process: ApprovalProcess) -> ApprovalProcessVersion:
    return ApprovalProcessVersion.objects.get(process=process, number=process.version)


def _summary(process: ApprovalProcess) -> dict[str, Any]:
    """What the audit log keeps of a process and its current definition."""
    definition = current_version(process)
    return {
        "code": process.code,
        "name": process.name,
        "name_ko": process.name_ko,
        "owner": process.owner,
        "is_active": process.is_active,
        "entry_condition": definition.entry_condition,
        "steps": [step["name"] for step in definition.steps],
        "material_fields": definition.material_fields,
        "editable_fields": definition.editable_fields,
    }


def _checked_process(
    actor: User,
    data: Mapping[str, Any],
    process: ApprovalProcess | None,
    errors: dict[str, list[str]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    for key in data:
        if key not in _PROCESS_FIELDS:
            errors[key] = [_("Unknown field.")]
    values: dict[str, Any] = {}
    object_type = data.get("object_type", process.object_type if process else None)
    subject = None
    if process is not None and object_type != process.object_type:
        errors["object_type"] = [_("A process keeps its object type.")]
    else:
        try:
            subject = subjects.get(object_type)
        except (KeyError, TypeError):
            errors["object_type"] = [_("This kind of record has no approval processes.")]
    values["object_type"] = object_type
    code = data.get("code", process.code if process else "")
    if not isinstance(code, str) or not _CODE.match(code):
        errors["code"] = [_("Use lower-case letters, digits and hyphens, up to 40.")]
    values["code"] = code
    name = _text(data.get("name", process.name if process else ""), "name", 100, errors)
    if not name and "name" not in errors:
        errors["name"] = [_("Give a name.")]
    values["name"] = name
    values["name_ko"] = _text(
        data.get("name_ko", process.name_ko if process else ""), "name_ko", 100, errors
    )
    if _given(data.get("owner_id")):
        values["owner"] = _user_id(data["owner_id"], "owner_id", errors)
    elif process is None:
        values["owner"] = actor
    is_active = data.get("is_active", process.is_active if process else True)
    if not isinstance(is_active, bool):
        errors["is_active"] = [_("Give true or false.")]
    values["is_active"] = bool(is_active)
    if subject is None:
        return values, {}
    fields = cel.fields_of(subject.model)
    names = subject.field_names() - _RESERVED
    previous = current_version(process) if process else None
    definition: dict[str, Any] = {}

    def given(key: str, default: Any) -> Any:
        if key in data:
            return data[key]
        return getattr(previous, key) if previous else default

    condition = _text(given("entry_condition", ""), "entry_condition", 2000, errors)
    _check_condition(condition, fields, "entry_condition", errors)
    definition["entry_condition"] = condition
    definition["steps"] = _checked_steps(given("steps", []), subject, fields, errors)
    for key in ("material_fields", "editable_fields"):
        definition[key] = _checked_names(given(key, []), names, key, errors)
    definition["actions"] = _checked_actions(given("actions", {}), subject, names, errors)
    return values, definition


def _check_condition(source: str, fields: set[str], key: str, errors: dict[str, list[str]]) -> None:
    if not source:
        return
    try:
        cel.check(source, fields)
    except cel.ConditionError as exc:
        errors[key] = [str(exc)]


def _checked_names(
    value: Any, names: set[str], key: str, errors: dict[str, list[str]]
) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors[key] = [_("Give a list of field names.")]
        return []
    unknown = sorted(set(value) - names)
    if unknown:
        errors[key] = [_("Unknown field: %(names)s.") % {"names": ", ".join(unknown)}]
    return sorted(set(value))


def _checked_steps(
    value: Any, subject: subjects.Subject, fields: set[str], errors: dict[str, list[str]]
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        errors["steps"] = [_("Give at least one step.")]
        return []
    if len(value) > MAX_STEPS:
        errors["steps"] = [_("At most %(n)d steps.") % {"n": MAX_STEPS}]
        return []
    steps = []
    for index, item in enumerate(value):
        prefix = f"steps.{index}."
        if not isinstance(item, Mapping):
            errors[f"steps.{index}"] = [_("Give each step as an object.")]
            continue
        steps.append(_checked_step(item, index, prefix, subject, fields, errors))
    return steps


def _choice(
    item: Mapping[str, Any], key: str, choices: Sequence[str], prefix: str, errors: dict
) -> str:
    value = item.get(key) or choices[0]
    if value not in choices:
        errors[prefix + key] = [_("Choose one of: %(choices)s.") % {"choices": ", ".join(choices)}]
    return value


def _hours(item: Mapping[str, Any], key: str, prefix: str, errors: dict) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errors[prefix + key] = [_("Give a whole number of business hours.")]
        return None
    if value <= 0:
        errors[prefix + key] = [_("Give at least one business hour, or none.")]
    elif value > MAX_HOURS:
        errors[prefix + key] = [_("At most %(n)d business hours.") % {"n": MAX_HOURS}]
    return value


def _checked_step(
    item: Mapping[str, Any],
    index: int,
    prefix: str,
    subject: subjects.Subject,
    fields: set[str],
    errors: dict[str, list[str]],
) -> dict[str, Any]:
    for key in item:
        if key not in _STEP_FIELDS:
            errors[prefix + key] = [_("Unknown field.")]
    step: dict[str, Any] = {}
    step["name"] = _text(item.get("name"), prefix + "name", 100, errors)
    if not step["name"] and prefix + "name" not in errors:
        errors[prefix + "name"] = [_("Give the step a name.")]
    step["condition"] = _text(item.get("condition"), prefix + "condition", 2000, errors)
    _check_condition(step["condition"], fields, prefix + "condition", errors)
    step["when_false"] = _choice(item, "when_false", WHEN_FALSE, prefix, errors)
    step["approvers"] = _checked_approvers(item.get("approvers"), prefix, subject, errors)
    step["rule"] = _choice(item, "rule", RULES, prefix, errors)
    required = item.get("required")
    if step["rule"] == "n_of_m":
        if isinstance(required, bool) or not isinstance(required, int) or required < 1:
            errors[prefix + "required"] = [_("Give how many must approve: 1 or more.")]
        step["required"] = required
    elif required not in (None, 1):
        errors[prefix + "required"] = [_("Only an “N of M” step takes a number.")]
    else:
        step["required"] = 1
    step["timeout_hours"] = _hours(item, "timeout_hours", prefix, errors)
    step["remind_before_hours"] = _hours(item, "remind_before_hours", prefix, errors)
    timeout, before = step["timeout_hours"], step["remind_before_hours"]
    if before is not None and (timeout is None or before >= timeout):
        errors[prefix + "remind_before_hours"] = [
            _("The reminder comes before the timeout: give fewer hours than the timeout.")
        ]
    step["escalation"] = _choice(item, "escalation", ESCALATIONS, prefix, errors)
    if step["escalation"] != "none" and timeout is None:
        errors[prefix + "escalation"] = [_("An escalation needs a timeout.")]
    step["escalate_to"] = None
    if step["escalation"] == "user":
        user = _user_id(item.get("escalate_to"), prefix + "escalate_to", errors)
        step["escalate_to"] = user.pk if user else None
    elif _given(item.get("escalate_to")):
        errors[prefix + "escalate_to"] = [_("Only an escalation to a named user takes a user.")]
    step["on_reject"] = _choice(item, "on_reject", ON_REJECT, prefix, errors)
    if step["on_reject"] == "back" and index == 0:
        errors[prefix + "on_reject"] = [_("The first step has no previous step to go back to.")]
    return step


def _checked_approvers(
    value: Any, prefix: str, subject: subjects.Subject, errors: dict[str, list[str]]
) -> list[dict[str, Any]]:
    key = prefix + "approvers"
    if not isinstance(value, list) or not value:
        errors[key] = [_("Give at least one approver.")]
        return []
    approvers = []
    for index, item in enumerate(value):
        at = f"{key}.{index}."
        if not isinstance(item, Mapping):
            errors[f"{key}.{index}"] = [_("Give each approver as an object.")]
            continue
        kind = item.get("kind")
        if kind not in APPROVER_KINDS:
            errors[at + "kind"] = [
                _("Choose one of: %(choices)s.") % {"choices": ", ".join(APPROVER_KINDS)}
            ]
            continue
        expected = {"user": "user_id", "role": "role", "field": "field"}.get(kind)
        for extra in set(item) - {"kind", expected}:
            errors[at + str(extra)] = [_("Unknown field.")]
        if kind == "user":
            user = _user_id(item.get("user_id"), at + "user_id", errors)
            approvers.append({"kind": kind, "user_id": user.pk if user else None})
        elif kind == "role":
            code = item.get("role")
            if not isinstance(code, str) or not Role.objects.filter(code=code).exists():
                errors[at + "role"] = [_("No such role.")]
            approvers.append({"kind": kind, "role": code})
        elif kind == "field":
            name = item.get("field")
            if name not in subject.user_fields():
                errors[at + "field"] = [
                    _("Give a field that names a user: %(fields)s.")
                    % {"fields": ", ".join(subject.user_fields())}
                ]
            approvers.append({"kind": kind, "field": name})
        else:
            approvers.append({"kind": kind})
    return approvers


def _checked_actions(
    value: Any, subject: subjects.Subject, names: set[str], errors: dict[str, list[str]]
) -> dict[str, list[dict[str, Any]]]:
    if not isinstance(value, Mapping):
        errors["actions"] = [_("Give the actions as an object: approve, reject, recall.")]
        return {}
    for key in value:
        if key not in ACTION_MOMENTS:
            errors[f"actions.{key}"] = [_("Unknown field.")]
    checked: dict[str, list[dict[str, Any]]] = {}
    for moment in ACTION_MOMENTS:
        items = value.get(moment) or []
        if not isinstance(items, list):
            errors[f"actions.{moment}"] = [_("Give a list of actions.")]
            continue
        checked[moment] = [
            _checked_action(item, f"actions.{moment}.{i}.", subject, names, errors)
            for i, item in enumerate(items)
        ]
    return checked


def _checked_action(
    item: Any,
    prefix: str,
    subject: subjects.Subject,
    names: set[str],
    errors: dict[str, list[str]],
) -> dict[str, Any]:
    if not isinstance(item, Mapping) or item.get("kind") not in ACTION_KINDS:
        errors[prefix + "kind"] = [
            _("Choose one of: %(choices)s.") % {"choices": ", ".join(ACTION_KINDS)}
        ]
        return {}
    kind = item["kind"]
    allowed = {
        "set_fields": {"kind", "values"},
        "email": {"kind", "to", "subject", "body"},
        "task": {"kind", "title", "assignee", "due_in_hours"},
        "stage": {"kind", "stage"},
    }[kind]
    for key in set(item) - allowed:
        errors[prefix + str(key)] = [_("Unknown field.")]
    if kind == "set_fields":
        values = item.get("values")
        if not isinstance(values, Mapping) or not values:
            errors[prefix + "values"] = [_("Give the fields to set and their values.")]
            return {}
        unknown = sorted(set(values) - names)
        if unknown:
            errors[prefix + "values"] = [
                _("Unknown field: %(names)s.") % {"names": ", ".join(map(str, unknown))}
            ]
        return {"kind": kind, "values": dict(values)}
    if kind == "stage":
        stage = _stage_of(item.get("stage"), subject.object_type)
        if stage is None:
            errors[prefix + "stage"] = [
                _("Give the id of a stage in use in a pipeline of this kind of record.")
            ]
        return {"kind": kind, "stage": stage.pk if stage else None}
    if kind == "email":
        to = item.get("to") or "submitter"
        if to not in ("submitter", "owner") and not (isinstance(to, str) and "@" in to):
            errors[prefix + "to"] = [_("Give submitter, owner, or an e-mail address.")]
        subject = _text(item.get("subject"), prefix + "subject", 200, errors)
        if not subject:
            errors.setdefault(prefix + "subject", [_("Give a subject.")])
        body = _text(item.get("body"), prefix + "body", MAX_COMMENT, errors)
        return {"kind": kind, "to": to, "subject": subject, "body": body}
    title = _text(item.get("title"), prefix + "title", 200, errors)
    if not title:
        errors.setdefault(prefix + "title", [_("Give a title.")])
    assignee = item.get("assignee") or "submitter"
    if assignee not in ("submitter", "owner"):
        user = _user_id(assignee, prefix + "assignee", errors)
        assignee = user.pk if user else None
    due = _hours(item, "due_in_hours", prefix, errors)
    return {"kind": kind, "title": title, "assignee": assignee, "due_in_hours": due}


def _stage_of(value: Any, object_type: str) -> Stage | None:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return None
    if not 0 < pk < 2**63:
        return None
    return Stage.objects.filter(
        pk=pk, is_active=True, pipeline__object_type=object_type, pipeline__is_active=True
    ).first()


# Reading what a request is about.


def record_of(request: ApprovalRequest) -> models.Model | None:
    model = request.content_type.model_class()
    return model._default_manager.filter(pk=request.object_id).first() if model else None


def _content_type(record: models.Model) -> ContentType:
    return ContentType.objects.get_for_model(type(record))


def pending_request(record: models.Model) -> ApprovalRequest | None:
    return (
        ApprovalRequest.objects.filter(
            content_type=_content_type(record), object_id=record.pk, status=Status.PENDING
        )
        .select_related("process")
        .first()
    )


def request_path(request: ApprovalRequest) -> str:
    return reverse("approvals:request-detail", args=[request.pk])


def _label(request: ApprovalRequest) -> str:
    return _("%(process)s #%(n)d") % {"process": request.process.label, "n": request.pk}


def _lock(actor: User, request_id: Any, *, check: bool = True) -> ApprovalRequest:
    """The request, locked, if the actor may see it (its record, or as one of its approvers).

    With ``check=False`` the caller checks ``queries.may_see`` itself, after learning more
    cheaply whether the actor is one of its approvers."""
    from . import queries

    try:
        pk = int(request_id)
    except (TypeError, ValueError):
        raise NotFound(_("No such approval request.")) from None
    found = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .filter(pk=pk)
        .select_related("process", "process_version")
        .first()
        if 0 < pk < 2**63
        else None
    )
    if found is not None:
        # From the content types' cache rather than a join.
        found.content_type = ContentType.objects.get_for_id(found.content_type_id)
    if found is None or (check and not queries.may_see(actor, found)):
        raise NotFound(_("No such approval request."))
    return found


# While set, ``_event`` collects the history here and ``_events_together`` writes it in one
# INSERT at the end: a decision writes two to four entries.
_collected_events: contextvars.ContextVar[list[ApprovalEvent] | None] = contextvars.ContextVar(
    "approvals_collected_events", default=None
)


@contextmanager
def _events_together() -> Iterator[None]:
    """Write the history entries made inside in one statement, when the block ends normally.

    Use it inside the transaction and around code that catches no error of its own writes
    (a rolled-back savepoint would keep its entries here)."""
    if _collected_events.get() is not None:
        yield
        return
    token = _collected_events.set([])
    try:
        yield
        ApprovalEvent.objects.bulk_create(_collected_events.get())
    finally:
        _collected_events.reset(token)


def _event(
    request: ApprovalRequest,
    kind: str,
    actor: User | None,
    *,
    at: dt.datetime,
    step: int | None = None,
    comment: str = "",
    on_behalf_of: User | None = None,
    **data: Any,
) -> None:
    event = ApprovalEvent(
        request=request,
        kind=kind,
        at=at,
        actor=actor if actor and actor.pk else None,
        on_behalf_of=on_behalf_of,
        step_index=step,
        comment=comment,
        data=data,
    )
    collected = _collected_events.get()
    if collected is None:
        event.save()
    else:
        collected.append(event)


def _on_timeline(
    actor: User | None, request: ApprovalRequest, record: models.Model | None, text: str
) -> None:
    """An entry on the record's own timeline."""
    if record is not None:
        audit.record(
            actor, record, AuditEvent.Action.UPDATED, {"approval": [None, text]}, str(record)
        )


def _bump(request: ApprovalRequest) -> None:
    request.version += 1
    request.save()


# Submitting.

# Called by ``_finish`` inside its transaction once a request has ended (its ``status`` says
# how), with the record (None when it is being deleted), the actor and the time: what else
# follows from the outcome, e.g. a pipeline's approve gate makes or drops the waiting move.
FinishHook = Callable[[ApprovalRequest, models.Model | None, User | None, dt.datetime], None]
_finish_hooks: list[FinishHook] = []


def on_finish(hook: FinishHook) -> None:
    if hook not in _finish_hooks:
        _finish_hooks.append(hook)


# How a "stage" action moves a record: the pipelines app, which stands on this module, says.
StageMove = Callable[[User, models.Model, int], str]
_stage_moves: list[StageMove] = []


def moves_to_stages(move: StageMove) -> None:
    _stage_moves[:] = [move]


def submit(
    actor: User,
    object_type: Any,
    object_id: Any,
    *,
    process_id: Any = None,
    comment: str = "",
    started: Callable[[ApprovalRequest], None] | None = None,
) -> ApprovalRequest:
    """Submit a record for approval: to the named process, or to the first active process of
    its type whose entry condition holds. ``started`` is called with the new request before
    its first step runs (a step may finish it at once), e.g. to note what waits for it."""
    try:
        subject = subjects.get(object_type)
    except (KeyError, TypeError):
        raise ValidationFailed(
            {"object_type": [_("This kind of record has no approvals.")]}
        ) from None
    errors: dict[str, list[str]] = {}
    comment = _text(comment, "comment", MAX_COMMENT, errors)
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        record = (
            visible(actor, subject.model)
            .select_for_update(of=("self",))
            .filter(pk=_int(object_id))
            .first()
        )
        if record is None:
            raise NotFound(_("No such record."))
        if not can(actor, "edit", subject.object_type):
            raise PermissionDenied(_("You may not submit this record."))
        waiting = pending_request(record)
        if waiting is not None:
            raise Conflict(
                _("This record already waits for approval: %(request)s.")
                % {"request": _label(waiting)}
            )
        process, version = _process_for(subject, record, process_id)
        with _events_together():
            return _start(actor, process, version, record, comment=comment, started=started)


def _int(value: Any) -> int:
    try:
        pk = int(value)
    except (TypeError, ValueError):
        return 0
    return pk if 0 < pk < 2**63 else 0


def _process_for(
    subject: subjects.Subject, record: models.Model, process_id: Any
) -> tuple[ApprovalProcess, ApprovalProcessVersion]:
    candidates = ApprovalProcess.objects.filter(object_type=subject.object_type, is_active=True)
    if _given(process_id):
        candidates = candidates.filter(pk=_int(process_id))
    candidates = list(candidates.order_by("name", "pk"))
    if _given(process_id) and not candidates:
        raise ValidationFailed({"process_id": [_("No such approval process.")]})
    context = cel.context(record)
    for process in candidates:
        version = current_version(process)
        if not version.entry_condition or cel.holds(version.entry_condition, context):
            return process, version
    if _given(process_id):
        raise ValidationFailed(
            {"process_id": [_("This record does not meet the process's entry condition.")]}
        )
    raise ValidationFailed({"process_id": [_("No approval process applies to this record.")]})


def _start(
    actor: User,
    process: ApprovalProcess,
    version: ApprovalProcessVersion,
    record: models.Model,
    *,
    comment: str = "",
    origin: str = ApprovalRequest.Origin.SUBMITTED,
    previous: ApprovalRequest | None = None,
    from_step: int = 0,
    started: Callable[[ApprovalRequest], None] | None = None,
) -> ApprovalRequest:
    now = clock.now()
    try:
        with transaction.atomic():
            request = ApprovalRequest.objects.create(
                process=process,
                process_version=version,
                content_type=_content_type(record),
                object_id=record.pk,
                submitter=actor,
                origin=origin,
                previous=previous,
                step_index=from_step,
                comment=comment,
                submitted_at=now,
            )
    except IntegrityError:
        raise Conflict(_("This record already waits for approval.")) from None
    _known_last_seq(request, 0)
    _event(request, Kind.SUBMITTED, actor, at=now, comment=comment, origin=origin)
    _on_timeline(
        actor,
        request,
        record,
        _("Submitted for approval: %(request)s") % {"request": _label(request)},
    )
    if started is not None:
        started(request)
    _advance(request, record, from_step, actor, now, new=True)
    events.emit("approval.submitted", id=request.pk, actor_id=actor.pk)
    return request


def _advance(
    request: ApprovalRequest,
    record: models.Model | None,
    index: int,
    actor: User | None,
    now: dt.datetime,
    *,
    new: bool = False,
) -> None:
    """Start the step at ``index``, or the next one whose condition holds; finish the request
    when no step is left. ``new``: the request was made in this transaction, at ``index``."""
    steps = request.process_version.steps
    context = cel.context(record) if record is not None else {}
    while index < len(steps):
        step = steps[index]
        if step["condition"] and not cel.holds(step["condition"], context):
            outcome = step["when_false"]
            run = _new_run(request, index, step, now)
            run.status = StepStatus.REJECTED if outcome == "reject" else StepStatus.SKIPPED
            run.finished_at = now
            run.note = {
                "skip": _("Condition false: skipped."),
                "approve": _("Condition false: approved."),
                "reject": _("Condition false: rejected."),
            }[outcome]
            run.save()
            _event(request, Kind.STEP_SKIPPED, None, at=now, step=index, outcome=outcome)
            if outcome == "reject":
                request.step_index = index
                _finish(
                    request, record, Status.REJECTED, None, now, comment=run.note, open_runs=False
                )
                return
            index += 1
            continue
        # A request made at this step in this transaction was saved with it, and nobody has
        # seen its version yet.
        if not (new and request.step_index == index):
            request.step_index = index
            _bump(request)
        run = _new_run(request, index, step, now)
        _plan_timers(run, step, now)
        run.save()
        _event(request, Kind.STEP_STARTED, None, at=now, step=index, name=step["name"])
        _assign(request, run, _resolve(request, step, record, now), now, new=True)
        return
    request.step_index = max(len(steps) - 1, 0)
    # Whoever called this closed the step that ran before, and no other step runs at once.
    _finish(request, record, Status.APPROVED, actor, now, open_runs=False)


# The number of a request's latest step run, once known in this transaction (a new request
# has none; a decision reads the current run, which is always the latest), so that starting
# the next step needs no COUNT of the earlier ones.
_LAST_SEQ = "_approval_last_seq"


def _known_last_seq(request: ApprovalRequest, seq: int) -> None:
    setattr(request, _LAST_SEQ, seq)


def _new_run(
    request: ApprovalRequest, index: int, step: dict[str, Any], now: dt.datetime
) -> ApprovalStepRun:
    last = getattr(request, _LAST_SEQ, None)
    if last is None:
        last = ApprovalStepRun.objects.filter(request=request).count()
    seq = last + 1
    _known_last_seq(request, seq)
    return ApprovalStepRun(
        request=request,
        seq=seq,
        index=index,
        name=step["name"],
        rule=step["rule"],
        required=step["required"] or 1,
        started_at=now,
    )


def _plan_timers(run: ApprovalStepRun, step: dict[str, Any], now: dt.datetime) -> None:
    timeout = step["timeout_hours"]
    if timeout is None:
        return
    run.due_at = calendar.add_business_hours(now, timeout)
    if step["remind_before_hours"]:
        run.remind_at = calendar.add_business_hours(now, timeout - step["remind_before_hours"])
    if run.remind_at is not None:
        run.timer_at = run.remind_at
    elif step["escalation"] != "none":
        run.timer_at = run.due_at


def _resolve(
    request: ApprovalRequest,
    step: dict[str, Any],
    record: models.Model | None,
    now: dt.datetime,
) -> list[tuple[User, str]]:
    """The people who may decide the step, and how each was found; the submitter is never
    one of them."""
    found: list[tuple[User, str]] = []
    named_ids = [a["user_id"] for a in step["approvers"] if a["kind"] == "user"]
    named = User.objects.in_bulk(named_ids) if named_ids else {}
    for approver in step["approvers"]:
        kind = approver["kind"]
        candidates: list[User] = []
        if kind == "user":
            candidates = [named[approver["user_id"]]] if approver["user_id"] in named else []
        elif kind == "role":
            candidates = list(
                User.objects.filter(role__code=approver["role"]).exclude(username=SYSTEM_USERNAME)
            )
        elif kind == "manager":
            submitter = request.submitter
            candidates = [submitter.manager] if submitter.manager_id else []
        elif kind == "managers_manager":
            manager = request.submitter.manager
            candidates = [manager.manager] if manager and manager.manager_id else []
        elif kind == "field" and record is not None:
            value = getattr(record, approver["field"], None)
            candidates = [value] if isinstance(value, User) else []
        via = {"managers_manager": Via.MANAGERS_MANAGER}.get(kind, kind)
        found += [
            (user, via) for user in candidates if user.is_active and user.pk != request.submitter_id
        ]
    return found


def _assign(
    request: ApprovalRequest,
    run: ApprovalStepRun,
    approvers: list[tuple[User, str]],
    now: dt.datetime,
    *,
    new: bool = False,
) -> list[ApprovalAssignment]:
    """Give the step to ``approvers`` (to their delegates while they are away); to the
    process owner, recorded as a fallback, when there is nobody. ``new``: the run was just
    made, so nobody holds it yet."""
    if not approvers:
        owner = request.process.owner
        approvers = [(owner, Via.FALLBACK)]
        _event(request, Kind.FALLBACK, None, at=now, step=run.index, owner=str(owner))
    made = []
    taken = set() if new else set(run.assignments.values_list("user_id", flat=True))
    delegates = _delegates_of([user for user, _via in approvers], now)
    for user, via in approvers:
        on_behalf_of = None
        delegate = delegates.get(user.pk)
        if delegate is not None:
            user, on_behalf_of = delegate, user
        if user.pk in taken:
            continue
        taken.add(user.pk)
        made.append(
            ApprovalAssignment(
                step_run=run,
                request=request,
                user=user,
                on_behalf_of=on_behalf_of,
                via=via,
                created_at=now,
                due_at=run.due_at,
            )
        )
    ApprovalAssignment.objects.bulk_create(made)
    if made:
        _ask_later(run)
    return made


def _delegates_of(users: list[User], now: dt.datetime) -> dict[int, User]:
    """Who stands in now for each of ``users`` who is away: the latest delegation started."""
    running = Delegation.objects.filter(
        user__in=[u.pk for u in users],
        starts_at__lte=now,
        ends_at__gt=now,
        delegate__is_active=True,
    ).order_by("-starts_at", "-pk")
    delegate_ids: dict[int, int] = {}
    for user_id, delegate_id in running.values_list("user_id", "delegate_id"):
        delegate_ids.setdefault(user_id, delegate_id)
    if not delegate_ids:
        return {}  # nobody is away: the common case costs one plain query
    delegates = User.objects.in_bulk(set(delegate_ids.values()))
    return {user_id: delegates[delegate_id] for user_id, delegate_id in delegate_ids.items()}


# Telling people.


def _tell(user: User, text: str, link: str, *, subject: str = "") -> None:
    """An in-app notice and, when the user has an address, an e-mail."""
    notify.notice(user, text, link=link)
    if user.email:
        url = settings.TRELLIS["BASE_URL"] + link if link else ""
        outbound.queue(
            to=[user.email],
            subject=subject or text,
            text=f"{text}\n\n{url}\n" if url else f"{text}\n",
            headers={"Auto-Submitted": notify.AUTO_GENERATED},
        )


# An assignment still untold this long after it was made has lost its task; the sweep tells it.
UNTOLD_AFTER = dt.timedelta(minutes=5)


def _ask_later(run: ApprovalStepRun) -> None:
    """Have the step's new approvers told by a task, after the transaction that asks them.

    The task's row is written in this transaction, so a decision is never committed without
    it; rendering the notices and e-mails (with their signed links) stays out of the
    decision's lock. Should the task be lost, the sweep tells them (``tell_untold``).
    """
    from .tasks import tell_approvers as task

    task.enqueue(run.pk)


def tell_approvers(step_run_id: int) -> int:
    """Tell each waiting approver of the step who has not been told yet; how many were.

    The assignments are locked and marked in the transaction that writes the notices, so a
    task and the sweep running at once tell nobody twice; someone who decided, or whose step
    ended, before this runs is not told.
    """
    with transaction.atomic():
        waiting = list(
            ApprovalAssignment.objects.select_for_update(of=("self",))
            .filter(
                step_run_id=step_run_id,
                status=ApprovalAssignment.Status.PENDING,
                told_at__isnull=True,
            )
            .select_related(
                "user",
                "on_behalf_of",
                "step_run",
                "request__process",
                "request__process_version",
                "request__submitter",
                "request__content_type",
            )
            .order_by("pk")
        )
        for assignment in waiting:
            _tell_approver(assignment.request, assignment.step_run, assignment)
        if waiting:
            ApprovalAssignment.objects.filter(pk__in=[a.pk for a in waiting]).update(
                told_at=clock.now()
            )
    return len(waiting)


def tell_untold(limit: int = 200) -> int:
    """The sweep's part: tell the approvers whose task was lost; how many were told."""
    runs = (
        ApprovalAssignment.objects.filter(
            status=ApprovalAssignment.Status.PENDING,
            told_at__isnull=True,
            created_at__lte=clock.now() - UNTOLD_AFTER,
        )
        .order_by("created_at")
        .values_list("step_run_id", flat=True)[:limit]
    )
    return sum(tell_approvers(run_id) for run_id in dict.fromkeys(runs))


def _tell_approver(
    request: ApprovalRequest, run: ApprovalStepRun, assignment: ApprovalAssignment
) -> None:
    with translation.override(notify.language_of(assignment.user)):
        text = _("Your approval is asked for: %(request)s, step “%(step)s”.") % {
            "request": _label(request),
            "step": run.name,
        }
        if run.due_at:
            text += " " + _("Due %(due)s.") % {"due": notify.local_time(run.due_at)}
        notify.notice(assignment.user, text, link=request_path(request))
        if assignment.user.email:
            # The e-mail carries the signed Approve / Reject links and the request's reply
            # address, so the approver can decide from it.
            from . import emailed

            emailed.ask(request, run, assignment, subject=text)


def _tell_submitter(request: ApprovalRequest) -> None:
    with translation.override(notify.language_of(request.submitter)):
        text = {
            Status.APPROVED: _("Approved: %(request)s."),
            Status.REJECTED: _("Rejected: %(request)s."),
            Status.RECALLED: _("Recalled: %(request)s."),
            Status.CANCELLED: _("Cancelled: %(request)s."),
        }[request.status]
        _tell(request.submitter, text % {"request": _label(request)}, request_path(request))


# Deciding.


def approve(
    actor: User, request_id: Any, *, comment: str = "", channel: str = ""
) -> ApprovalRequest:
    """``channel`` ("link", "mail") notes in the history how a decision from e-mail came."""
    return _decide(actor, request_id, approved=True, comment=comment, channel=channel)


def reject(
    actor: User, request_id: Any, *, comment: str = "", channel: str = ""
) -> ApprovalRequest:
    return _decide(actor, request_id, approved=False, comment=comment, channel=channel)


def _decide(
    actor: User, request_id: Any, *, approved: bool, comment: str, channel: str = ""
) -> ApprovalRequest:
    errors: dict[str, list[str]] = {}
    comment = _text(comment, "comment", MAX_COMMENT, errors)
    if not approved and not comment and not errors:
        errors["comment"] = [_("Say why you reject it.")]
    if errors:
        raise ValidationFailed(errors)
    from . import queries

    with transaction.atomic(), _events_together():
        request = _lock(actor, request_id, check=False)
        # The actor's part of the current step, with the step: being asked is also what
        # lets an approver see the request, so the visibility rules are only consulted
        # for someone who is not.
        assignment = (
            ApprovalAssignment.objects.filter(
                request=request, user=actor, step_run__status=StepStatus.PENDING
            )
            .exclude(status=ApprovalAssignment.Status.CLOSED)
            .select_related("step_run")
            .order_by("-step_run__seq")
            .first()
            if request.status == Status.PENDING
            else None
        )
        if assignment is None and not queries.may_see(actor, request):
            raise NotFound(_("No such approval request."))
        if request.status != Status.PENDING:
            raise Conflict(
                _("This request is already %(status)s; nothing was changed.")
                % {"status": request.get_status_display()}
            )
        if assignment is None:
            raise PermissionDenied(_("You are not an approver of this step."))
        run = assignment.step_run
        # The pending run is always the request's latest.
        _known_last_seq(request, run.seq)
        if assignment.status != ApprovalAssignment.Status.PENDING:
            raise Conflict(
                _("You have already decided this step (%(decision)s).")
                % {"decision": assignment.get_status_display()}
            )
        now = clock.now()
        assignment.status = (
            ApprovalAssignment.Status.APPROVED if approved else ApprovalAssignment.Status.REJECTED
        )
        assignment.decided_at = now
        assignment.comment = comment
        assignment.save(update_fields=["status", "decided_at", "comment"])
        _event(
            request,
            Kind.STEP_APPROVED if approved else Kind.STEP_REJECTED,
            actor,
            at=now,
            step=run.index,
            comment=comment,
            on_behalf_of=assignment.on_behalf_of,
            decision="approved" if approved else "rejected",
            **({"channel": channel} if channel else {}),
        )
        # Under "first" the decision just made is the step's; the others need the tally.
        outcome = assignment.status if run.rule == "first" else _outcome(run)
        record = _locked_record(request)
        if outcome == "approved":
            _close_step(run, StepStatus.APPROVED, now)
            _advance(request, record, run.index + 1, actor, now)
        elif outcome == "rejected":
            _close_step(run, StepStatus.REJECTED, now)
            _rejected(request, record, run, actor, now, comment)
        else:
            _bump(request)
    return request


def _current_run(request: ApprovalRequest) -> ApprovalStepRun | None:
    return (
        ApprovalStepRun.objects.filter(request=request, status=StepStatus.PENDING)
        .order_by("-seq")
        .first()
    )


def _locked_record(request: ApprovalRequest) -> models.Model | None:
    model = request.content_type.model_class()
    if model is None:
        return None
    return (
        model._default_manager.select_for_update(of=("self",)).filter(pk=request.object_id).first()
    )


def _outcome(run: ApprovalStepRun) -> str:
    """ "approved", "rejected", or "" while the step's decision rule is not met yet."""
    decisions = list(
        run.assignments.exclude(status=ApprovalAssignment.Status.CLOSED).values_list(
            "status", flat=True
        )
    )
    approvals = decisions.count(ApprovalAssignment.Status.APPROVED)
    rejections = decisions.count(ApprovalAssignment.Status.REJECTED)
    waiting = decisions.count(ApprovalAssignment.Status.PENDING)
    if run.rule == "first":
        return "approved" if approvals else "rejected" if rejections else ""
    if run.rule == "all":
        return "rejected" if rejections else "approved" if not waiting else ""
    # N of M: with fewer people than N, everyone must approve.
    needed = min(run.required, approvals + rejections + waiting)
    if approvals >= needed:
        return "approved"
    return "rejected" if approvals + waiting < needed else ""


def _close_step(run: ApprovalStepRun, status: str, now: dt.datetime, note: str = "") -> None:
    run.status = status
    run.finished_at = now
    run.timer_at = None
    if note:
        run.note = note[:300]
    run.save(update_fields=["status", "finished_at", "timer_at", "note"])
    run.assignments.filter(status=ApprovalAssignment.Status.PENDING).update(
        status=ApprovalAssignment.Status.CLOSED
    )


def _rejected(
    request: ApprovalRequest,
    record: models.Model | None,
    run: ApprovalStepRun,
    actor: User | None,
    now: dt.datetime,
    comment: str,
) -> None:
    step = request.process_version.steps[run.index]
    if step["on_reject"] == "back" and run.index > 0:
        _event(request, Kind.SENT_BACK, actor, at=now, step=run.index, comment=comment)
        _advance(request, record, run.index - 1, actor, now)
        return
    _finish(request, record, Status.REJECTED, actor, now, comment=comment, open_runs=False)


def _finish(
    request: ApprovalRequest,
    record: models.Model | None,
    status: str,
    actor: User | None,
    now: dt.datetime,
    *,
    comment: str = "",
    run_actions: bool = True,
    open_runs: bool = True,
) -> None:
    """``open_runs=False``: the caller knows no step of the request is still running."""
    request.status = status
    request.finished_at = now
    if open_runs:
        for run in ApprovalStepRun.objects.filter(request=request, status=StepStatus.PENDING):
            _close_step(run, StepStatus.CANCELLED, now)
    if status == Status.APPROVED and record is not None:
        material = request.process_version.material_fields
        request.approved_values = {k: v for k, v in cel.context(record).items() if k in material}
    _bump(request)
    kind = {
        Status.APPROVED: Kind.APPROVED,
        Status.REJECTED: Kind.REJECTED,
        Status.RECALLED: Kind.RECALLED,
        Status.CANCELLED: Kind.CANCELLED,
    }[status]
    _event(request, kind, actor, at=now, comment=comment)
    _on_timeline(
        actor,
        request,
        record,
        _("%(request)s: %(status)s")
        % {"request": _label(request), "status": request.get_status_display()},
    )
    for hook in _finish_hooks:
        hook(request, record, actor, now)
    if actor is None or actor.pk != request.submitter_id:
        _tell_submitter(request)
    moment = {Status.APPROVED: "approve", Status.REJECTED: "reject", Status.RECALLED: "recall"}
    if run_actions and status in moment and record is not None:
        _run_actions(request, record, moment[status], now)
    events.emit(
        f"approval.{status}",
        id=request.pk,
        actor_id=actor.pk if actor else None,
        # What a rule needs to know which record it is about, so that it need not read the
        # request again.
        content_type_id=request.content_type_id,
        object_id=request.object_id,
        process=request.process.code,
    )


# Actions on approval, rejection and recall.


@contextmanager
def engine_writing() -> Iterator[None]:
    token = _engine_writing.set(True)
    try:
        yield
    finally:
        _engine_writing.reset(token)


def _run_actions(
    request: ApprovalRequest, record: models.Model, moment: str, now: dt.datetime
) -> None:
    """Run the definition's actions; one that fails is recorded and undoes nothing else."""
    for index, action in enumerate(request.process_version.actions.get(moment, [])):
        try:
            with transaction.atomic():
                done = _run_action(request, record, action, now)
        except ServiceError as exc:
            detail = getattr(exc, "errors", None) or exc.detail
            _event(
                request,
                Kind.ACTION_FAILED,
                None,
                at=now,
                action=index,
                moment=moment,
                kind_of_action=action["kind"],
                error=str(detail),
            )
        else:
            _event(
                request,
                Kind.ACTION,
                None,
                at=now,
                action=index,
                moment=moment,
                kind_of_action=action["kind"],
                done=done,
            )


def _run_action(
    request: ApprovalRequest, record: models.Model, action: dict[str, Any], now: dt.datetime
) -> str:
    kind = action["kind"]
    robot = system_user()
    if kind == "set_fields":
        subject = subjects.for_model(type(record))
        record.refresh_from_db()
        with engine_writing():
            subject.update(robot, record.pk, action["values"], record.version)
        return ", ".join(sorted(action["values"]))
    if kind == "stage":
        if not _stage_moves:
            raise ValidationFailed({"stage": [_("Records cannot be moved between stages.")]})
        record.refresh_from_db()
        with engine_writing():
            return _stage_moves[0](robot, record, action["stage"])
    if kind == "email":
        to = action["to"]
        if to == "submitter":
            to = request.submitter.email
        elif to == "owner":
            owner = getattr(record, "owner", None)
            to = owner.email if owner else ""
        if not to:
            raise ValidationFailed({"to": [_("Nobody to write to.")]})
        outbound.queue(
            to=[to],
            subject=action["subject"],
            text=action["body"] or action["subject"],
            headers={"Auto-Submitted": notify.AUTO_GENERATED},
        )
        return to
    assignee = action["assignee"]
    if assignee == "submitter":
        assignee = request.submitter_id
    elif assignee == "owner":
        assignee = getattr(record, "owner_id", None)
    due = action.get("due_in_hours")
    task = tasks.create_task(
        robot,
        {
            "title": action["title"],
            "record_type": subjects.for_model(type(record)).object_type,
            "record_id": record.pk,
            "user_id": assignee,
            "due_at": calendar.add_business_hours(now, due) if due else None,
        },
    )
    return str(task.pk)


# Recall and reassign.


def recall(actor: User, request_id: Any, *, comment: str = "") -> ApprovalRequest:
    """The submitter takes a pending request back; the record is unlocked."""
    errors: dict[str, list[str]] = {}
    comment = _text(comment, "comment", MAX_COMMENT, errors)
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        request = _lock(actor, request_id)
        if request.submitter_id != actor.pk:
            raise PermissionDenied(_("Only the submitter may recall a request."))
        if request.status != Status.PENDING:
            raise Conflict(
                _("This request is already %(status)s; nothing was changed.")
                % {"status": request.get_status_display()}
            )
        now = clock.now()
        _finish(request, _locked_record(request), Status.RECALLED, actor, now, comment=comment)
    return request


def reassign(
    actor: User, request_id: Any, from_user_id: Any, to_user_id: Any, *, comment: str = ""
) -> ApprovalRequest:
    """An administrator hands one approver's part of the current step to someone else."""
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators reassign approvals."))
    errors: dict[str, list[str]] = {}
    comment = _text(comment, "comment", MAX_COMMENT, errors)
    with transaction.atomic():
        request = _lock(actor, request_id)
        if request.status != Status.PENDING:
            raise Conflict(
                _("This request is already %(status)s; nothing was changed.")
                % {"status": request.get_status_display()}
            )
        run = _current_run(request)
        current = (
            run.assignments.filter(
                user_id=_int(from_user_id), status=ApprovalAssignment.Status.PENDING
            ).first()
            if run
            else None
        )
        if current is None:
            errors["from_user_id"] = [_("This person is not waiting to decide this step.")]
        to_user = _user_id(to_user_id, "to_user_id", errors)
        if to_user is not None and run is not None:
            if run.assignments.filter(user=to_user).exists():
                errors["to_user_id"] = [_("This person is already an approver of this step.")]
            elif to_user.pk == request.submitter_id:
                errors["to_user_id"] = [_("The submitter cannot approve their own request.")]
        if errors:
            raise ValidationFailed(errors)
        now = clock.now()
        current.status = ApprovalAssignment.Status.CLOSED
        current.decided_at = now
        current.save()
        ApprovalAssignment.objects.create(
            step_run=run,
            request=request,
            user=to_user,
            via=Via.REASSIGNED,
            created_at=now,
            due_at=run.due_at,
        )
        _event(
            request,
            Kind.REASSIGNED,
            actor,
            at=now,
            step=run.index,
            comment=comment,
            **{"from": str(current.user), "to": str(to_user)},
        )
        _bump(request)
        _ask_later(run)
    return request


# Timeouts and reminders, fired by the sweep.


def fire_due_timers(limit: int = 200) -> int:
    """Send the reminders and run the escalations that are due; returns how many fired.

    Each step run is handled under the lock of its request, taken with SKIP LOCKED (another
    sweep has it), and only if its ``timer_at`` is still the one read: a second sweep, or a
    decision in between, finds nothing left to do.
    """
    from trellis.mail.inbound import lock_skip_locked

    now = clock.now()
    due = list(
        ApprovalStepRun.objects.filter(timer_at__lte=now)
        .order_by("timer_at", "pk")
        .values_list("pk", "request_id", "timer_at")[:limit]
    )
    fired = 0
    for pk, request_id, planned in due:
        with transaction.atomic():
            request = (
                lock_skip_locked(ApprovalRequest.objects.filter(pk=request_id))
                .select_related("process", "process_version", "content_type")
                .first()
            )
            if request is None:
                continue
            run = ApprovalStepRun.objects.filter(pk=pk, timer_at=planned).first()
            if run is None:
                continue
            if request.status != Status.PENDING or run.status != StepStatus.PENDING:
                ApprovalStepRun.objects.filter(pk=pk).update(timer_at=None)
                continue
            step = request.process_version.steps[run.index]
            escalates = step["escalation"] != "none"
            # A sweep that comes late sends only what is still true: no reminder once the
            # step has escalated.
            if run.reminded_at is None and (not escalates or now < run.due_at):
                _remind(request, run, step, now)
            elif escalates:
                _escalate(request, run, step, now)
            else:
                ApprovalStepRun.objects.filter(pk=pk).update(timer_at=None)
                continue
            fired += 1
    return fired


def _remind(
    request: ApprovalRequest, run: ApprovalStepRun, step: dict[str, Any], now: dt.datetime
) -> None:
    run.reminded_at = now
    run.timer_at = run.due_at if step["escalation"] != "none" else None
    run.save()
    waiting = list(
        run.assignments.filter(status=ApprovalAssignment.Status.PENDING).select_related(
            "user", "on_behalf_of"
        )
    )
    for assignment in waiting:
        with translation.override(notify.language_of(assignment.user)):
            text = _("Reminder: %(request)s waits for your decision until %(due)s.") % {
                "request": _label(request),
                "due": notify.local_time(run.due_at),
            }
            notify.notice(assignment.user, text, link=request_path(request))
            if assignment.user.email:
                # Like the first e-mail: the signed Approve / Reject links and the reply
                # address, so that the reminder too can be answered from the mailbox.
                from . import emailed

                emailed.ask(request, run, assignment, subject=text)
    _event(request, Kind.REMINDED, None, at=now, step=run.index, to=[str(a.user) for a in waiting])


def _escalate(
    request: ApprovalRequest, run: ApprovalStepRun, step: dict[str, Any], now: dt.datetime
) -> None:
    run.escalated_at = now
    run.timer_at = None
    run.save()
    how = step["escalation"]
    _event(request, Kind.ESCALATED, None, at=now, step=run.index, escalation=how)
    record = _locked_record(request)
    if how == "approve":
        _close_step(run, StepStatus.APPROVED, now, _("Timed out: approved automatically."))
        _advance(request, record, run.index + 1, None, now)
        return
    if how == "reject":
        _close_step(run, StepStatus.REJECTED, now, _("Timed out: rejected automatically."))
        _finish(request, record, Status.REJECTED, None, now, comment=run.note)
        return
    if how == "user":
        targets = list(User.objects.filter(pk=step["escalate_to"], is_active=True))
    else:
        waiting = run.assignments.filter(status=ApprovalAssignment.Status.PENDING)
        people = [a.on_behalf_of or a.user for a in waiting.select_related("user__manager")]
        targets = [p.manager for p in people if p.manager_id and p.manager.is_active]
    targets = [t for t in targets if t.pk != request.submitter_id]
    _assign(request, run, [(t, Via.ESCALATION) for t in targets], now)
    _bump(request)


# Delegation.


def set_delegation(actor: User, delegate_id: Any, starts_at: Any, ends_at: Any) -> Delegation:
    """While ``actor`` is away, their new approvals go to the delegate."""
    errors: dict[str, list[str]] = {}
    delegate = _user_id(delegate_id, "delegate_id", errors)
    if delegate is not None and delegate.pk == actor.pk:
        errors["delegate_id"] = [_("Choose someone other than yourself.")]
    for key, value in (("starts_at", starts_at), ("ends_at", ends_at)):
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            errors[key] = [_("Give a date and time.")]
    if not errors and ends_at <= starts_at:
        errors["ends_at"] = [_("The end comes after the start.")]
    if not errors and ends_at <= clock.now():
        errors["ends_at"] = [_("This period is over already.")]
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        overlapping = Delegation.objects.filter(
            user=actor, starts_at__lt=ends_at, ends_at__gt=starts_at
        )
        if overlapping.exists():
            raise ValidationFailed(
                {"starts_at": [_("You already have a delegate for part of this period.")]}
            )
        delegation = Delegation.objects.create(
            user=actor, delegate=delegate, starts_at=starts_at, ends_at=ends_at
        )
        audit.record(
            actor,
            delegation,
            AuditEvent.Action.CREATED,
            {"delegate": delegate, "starts_at": starts_at, "ends_at": ends_at},
            str(delegation),
        )
    return delegation


def end_delegation(actor: User, delegation_id: Any) -> None:
    """End one of the actor's delegations now (or drop it, if it has not started)."""
    with transaction.atomic():
        delegation = (
            Delegation.objects.select_for_update()
            .filter(pk=_int(delegation_id), user=actor)
            .first()
        )
        if delegation is None:
            raise NotFound(_("No such delegation."))
        now = clock.now()
        if delegation.starts_at >= now:
            delegation.delete()
        elif delegation.ends_at > now:
            delegation.ends_at = now
            delegation.save(update_fields=["ends_at"])


# The lock on records, and reopening approval when an approved record's terms change.


def guard_write(actor: User, instance: models.Model, changed: frozenset[str] | None) -> None:
    """The write guard of ``core.records``: refuse edits of a record whose approval is
    pending, and reopen approval when a material field of an approved record changes."""
    subject = subjects.for_model(type(instance))
    if subject is None or _engine_writing.get():
        return
    # One query on every guarded write: the pending request if there is one, else the latest.
    last = _deciding_requests(type(instance), [instance.pk]).first()
    _guard(actor, instance, changed, last)


def guard_writes(actor: User, changes: list[tuple[models.Model, frozenset[str]]]) -> None:
    """``guard_write`` for many changed records of one type, with one query for all."""
    if not changes or _engine_writing.get():
        return
    model = type(changes[0][0])
    if subjects.for_model(model) is None:
        return
    last: dict[int, ApprovalRequest] = {}
    for request in _deciding_requests(model, [instance.pk for instance, _changed in changes]):
        last.setdefault(request.object_id, request)
    for instance, changed in changes:
        _guard(actor, instance, changed, last.get(instance.pk))


def _deciding_requests(model: type[models.Model], pks: list[int]) -> models.QuerySet:
    """The requests of these records, for each the pending one first, then the latest."""
    return (
        ApprovalRequest.objects.filter(
            content_type=ContentType.objects.get_for_model(model), object_id__in=pks
        )
        .select_related("process", "process_version")
        .order_by(
            "object_id",
            models.Case(models.When(status=Status.PENDING, then=0), default=1),
            "-submitted_at",
            "-pk",
        )
    )


def _guard(
    actor: User,
    instance: models.Model,
    changed: frozenset[str] | None,
    last: ApprovalRequest | None,
) -> None:
    if last is not None and last.status == Status.PENDING:
        if changed is None:
            if not is_admin(actor):
                raise records.RecordLocked(_locked_message(last))
            # An administrator deletes the record: its request ends with it.
            _finish(last, None, Status.CANCELLED, actor, clock.now(), run_actions=False)
            return
        if not _may_edit_locked(actor, last, changed):
            raise records.RecordLocked(_locked_message(last))
        return
    if not changed or last is None or last.status != Status.APPROVED:
        return
    touched = sorted(changed & set(last.process_version.material_fields))
    if touched:
        reopen(actor, last, instance, touched)


def _locked_message(request: ApprovalRequest) -> str:
    return _(
        "This record is locked while it waits for approval (%(request)s). Ask an approver, "
        "or request an unlock."
    ) % {"request": _label(request)}


def _may_edit_locked(actor: User, request: ApprovalRequest, changed: frozenset[str]) -> bool:
    if is_admin(actor):
        return True
    if changed <= set(request.process_version.editable_fields):
        return True
    run = _current_run(request)
    if (
        run
        and run.assignments.filter(user=actor, status=ApprovalAssignment.Status.PENDING).exists()
    ):
        return True
    return ExceptionRequest.objects.filter(
        request=request,
        kind=ExceptionRequest.Kind.UNLOCK,
        status=ExceptionRequest.Status.GRANTED,
        requested_by=actor,
        unlocked_until__gt=clock.now(),
    ).exists()


def reopen(
    actor: User, approved: ApprovalRequest, record: models.Model, fields: list[str]
) -> ApprovalRequest | None:
    """Start approval again on the process's current version, as its definition says: when
    its entry condition still holds for the changed record."""
    process = approved.process
    if not process.is_active:
        return None
    version = current_version(process)
    if version.entry_condition and not cel.holds(version.entry_condition, cel.context(record)):
        return None
    return _start(
        actor,
        process,
        version,
        record,
        comment=_("Approval reopened: %(fields)s changed.") % {"fields": ", ".join(fields)},
        origin=ApprovalRequest.Origin.REOPENED,
        previous=approved,
    )


# Exception requests.


def request_exception(
    actor: User,
    request_id: Any,
    kind: Any,
    reason: Any,
    *,
    from_step: Any = None,
    changes: Any = None,
) -> ExceptionRequest:
    """Ask to bend the process for this request's record; kept whatever the decision."""
    errors: dict[str, list[str]] = {}
    reason = _text(reason, "reason", MAX_COMMENT, errors)
    if not reason and "reason" not in errors:
        errors["reason"] = [_("Say why you ask for it.")]
    if kind not in ExceptionRequest.Kind.values:
        errors["kind"] = [
            _("Choose one of: %(choices)s.") % {"choices": ", ".join(ExceptionRequest.Kind.values)}
        ]
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        request = _lock(actor, request_id)
        data: dict[str, Any] = {}
        pending_kinds = (
            ExceptionRequest.Kind.OVERRIDE,
            ExceptionRequest.Kind.UNLOCK,
            ExceptionRequest.Kind.CANCEL,
        )
        if kind in pending_kinds and request.status != Status.PENDING:
            raise Conflict(_("This request is no longer pending."))
        if kind == ExceptionRequest.Kind.CLONE:
            steps = request.process_version.steps
            index = _int(from_step) - 1 if _given(from_step) else -1
            if not 0 <= index < len(steps):
                raise ValidationFailed(
                    {"from_step": [_("Give a step from 1 to %(n)d.") % {"n": len(steps)}]}
                )
            data["from_step"] = index
        if kind == ExceptionRequest.Kind.CHANGE_TERMS:
            if request.status != Status.APPROVED:
                raise Conflict(_("Only the terms of an approved record can be changed."))
            subject = subjects.get(request.process.object_type)
            names = subject.field_names() - _RESERVED
            if not isinstance(changes, Mapping) or not changes:
                raise ValidationFailed({"changes": [_("Give the fields to change.")]})
            unknown = sorted(set(changes) - names)
            if unknown:
                raise ValidationFailed(
                    {"changes": [_("Unknown field: %(names)s.") % {"names": ", ".join(unknown)}]}
                )
            data["changes"] = dict(changes)
        if ExceptionRequest.objects.filter(
            request=request, kind=kind, status=ExceptionRequest.Status.PENDING
        ).exists():
            raise Conflict(_("The same exception is already waiting for a decision."))
        now = clock.now()
        exception = ExceptionRequest.objects.create(
            kind=kind,
            request=request,
            process=request.process,
            step_index=request.step_index,
            content_type=request.content_type,
            object_id=request.object_id,
            reason=reason,
            data=data,
            requested_by=actor,
            requested_at=now,
        )
        _event(
            request,
            Kind.EXCEPTION,
            actor,
            at=now,
            step=request.step_index,
            comment=reason,
            exception=exception.pk,
            exception_kind=kind,
            status="requested",
        )
        _on_timeline(
            actor,
            request,
            record_of(request),
            _("Exception requested (%(kind)s): %(reason)s")
            % {"kind": exception.get_kind_display(), "reason": reason},
        )
        owner = request.process.owner
        if owner.pk != actor.pk:
            with translation.override(notify.language_of(owner)):
                _tell(
                    owner,
                    _("%(actor)s asks for an exception (%(kind)s) on %(request)s.")
                    % {
                        "actor": actor,
                        "kind": exception.get_kind_display(),
                        "request": _label(request),
                    },
                    request_path(request),
                )
    return exception


def may_decide_exception(user: User, exception: ExceptionRequest) -> bool:
    if is_admin(user):
        return True
    return exception.process.owner_id == user.pk and exception.requested_by_id != user.pk


def decide_exception(
    actor: User, exception_id: Any, *, grant: bool, note: str = ""
) -> ExceptionRequest:
    """Grant or refuse an exception request; either way it is kept, with who and when."""
    errors: dict[str, list[str]] = {}
    note = _text(note, "note", MAX_COMMENT, errors)
    if not grant and not note and not errors:
        errors["note"] = [_("Say why you refuse it.")]
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        found = ExceptionRequest.objects.filter(pk=_int(exception_id)).first()
        if found is None:
            raise NotFound(_("No such exception request."))
        request = _lock(actor, found.request_id)
        exception = (
            ExceptionRequest.objects.select_for_update().select_related("process").get(pk=found.pk)
        )
        if not may_decide_exception(actor, exception):
            raise PermissionDenied(
                _("Only the process owner or an administrator decides exceptions.")
            )
        if exception.status != ExceptionRequest.Status.PENDING:
            raise Conflict(
                _("This exception request was already %(status)s.")
                % {"status": exception.get_status_display()}
            )
        now = clock.now()
        if grant:
            _grant(actor, exception, request, now)
        exception.status = (
            ExceptionRequest.Status.GRANTED if grant else ExceptionRequest.Status.REFUSED
        )
        exception.decided_by = actor
        exception.decided_at = now
        exception.decision_note = note
        exception.save()
        _event(
            request,
            Kind.EXCEPTION,
            actor,
            at=now,
            comment=note,
            exception=exception.pk,
            exception_kind=exception.kind,
            status=exception.status,
        )
        _on_timeline(
            actor,
            request,
            record_of(request),
            _("Exception %(status)s (%(kind)s)")
            % {"status": exception.get_status_display(), "kind": exception.get_kind_display()},
        )
        with translation.override(notify.language_of(exception.requested_by)):
            _tell(
                exception.requested_by,
                _("Your exception request (%(kind)s) was %(status)s.")
                % {"kind": exception.get_kind_display(), "status": exception.get_status_display()},
                request_path(request),
            )
    return exception


def _grant(
    actor: User, exception: ExceptionRequest, request: ApprovalRequest, now: dt.datetime
) -> None:
    kind = exception.kind
    Kinds = ExceptionRequest.Kind
    if kind in (Kinds.OVERRIDE, Kinds.UNLOCK, Kinds.CANCEL) and request.status != Status.PENDING:
        raise Conflict(_("This request is no longer pending."))
    record = _locked_record(request)
    if kind == Kinds.OVERRIDE:
        run = _current_run(request)
        note = _("Overridden by exception request #%(n)d.") % {"n": exception.pk}
        _close_step(run, StepStatus.APPROVED, now, note)
        _advance(request, record, run.index + 1, actor, now)
    elif kind == Kinds.UNLOCK:
        exception.unlocked_until = now + dt.timedelta(hours=_unlock_hours())
    elif kind == Kinds.CANCEL:
        _finish(
            request,
            record,
            Status.CANCELLED,
            actor,
            now,
            comment=exception.reason,
            run_actions=False,
        )
    elif kind == Kinds.CLONE:
        if request.status == Status.PENDING:
            _finish(
                request,
                record,
                Status.CANCELLED,
                actor,
                now,
                comment=exception.reason,
                run_actions=False,
            )
        if record is None:
            raise Conflict(_("The record is gone."))
        exception.result_request = _start(
            exception.requested_by,
            request.process,
            request.process_version,
            record,
            comment=exception.reason,
            origin=ApprovalRequest.Origin.CLONED,
            previous=request,
            from_step=exception.data["from_step"],
        )
    elif kind == Kinds.CHANGE_TERMS:
        if record is None:
            raise Conflict(_("The record is gone."))
        subject = subjects.get(request.process.object_type)
        subject.update(exception.requested_by, record.pk, exception.data["changes"], record.version)


sweep.register("approval-timers", fire_due_timers)
sweep.register("approval-notices", tell_untold)


# The report's exception alert.

# The highest exception rate (percent per request) an alert may be set at.
MAX_ALERT_PCT = 1000


def set_exception_alert(actor: User, pk: Any, pct: Any) -> ApprovalProcess:
    """Set (or clear, with ``None``) the exception rate above which the report flags a step.

    Only administrators set it. It is one value replaced whole, so it takes no version: the
    process's version numbers its published definitions, which this does not change.
    """
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators set the exception alert."))
    if pct in ("", None):
        pct = None
    else:
        try:
            pct = int(str(pct).strip())
        except ValueError:
            pct = -1
        if not 0 <= pct <= MAX_ALERT_PCT:
            raise ValidationFailed(
                {
                    "exception_alert_pct": [
                        _("Give a whole percentage from 0 to %(most)d, or nothing for no alert.")
                        % {"most": MAX_ALERT_PCT}
                    ]
                }
            )
    with transaction.atomic():
        process = reports.report_process(actor, pk)
        process = ApprovalProcess.objects.select_for_update().get(pk=process.pk)
        before = process.exception_alert_pct
        if before != pct:
            process.exception_alert_pct = pct
            process.save(update_fields=["exception_alert_pct"])
            audit.record(
                actor,
                process,
                AuditEvent.Action.UPDATED,
                {"exception_alert_pct": [before, pct]},
                str(process),
            )
    return process
