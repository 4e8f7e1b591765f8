"""Running rules: on the events services publish, and on time through the sweep.

Each event that may fire rules starts a *cascade*. What the fired rules write publishes events
of its own, which carry the cascade with them (``events.caused_by``), one level deeper. A rule
runs at most once per record in a cascade, and a cascade deeper than
``TRELLIS["AUTOMATION_MAX_DEPTH"]`` is stopped and reported to the administrators; what the
completed actions wrote stays. Each action commits on its own.
"""

import contextlib
import copy
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from trellis.core import calendar, clock, events, registry, sweep
from trellis.core.errors import Conflict, ServiceError, StaleVersion, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, AuditEvent, Role, User
from trellis.core.services import system_user
from trellis.mail import outbound

from .. import cel, notify
from .. import services as tasks
from ..approvals import services as approvals
from ..approvals.models import ApprovalProcess
from ..models import Task, TaskType
from . import definitions, holds, subjects
from .models import Hold, HoldPlacement, Rule, RuleRun, RuleTimer

log = logging.getLogger(__name__)

Outcome = RuleRun.Outcome
# Triggers fired by a change of the record itself: "newly meets the condition" compares the
# record before and after the change. The others (an approval, a task, a hold, time) change
# nothing in the record, so they fire whenever the condition holds.
CHANGE_TRIGGERS = {"created", "updated", "field_changed", "stage_entered", "stage_left"}
OPEN_TASK_STATUSES = (Task.Status.OPEN, Task.Status.IN_PROGRESS, Task.Status.WAITING)


def max_depth() -> int:
    return int(settings.TRELLIS.get("AUTOMATION_MAX_DEPTH", 8))


@dataclass(eq=False)
class Cascade:
    """The firings that follow from one originating event; shared by all its levels."""

    origin: str
    depth: int = 0
    ran: set[tuple[int, int, int]] = field(default_factory=set)
    reported: set[int] = field(default_factory=set)
    # What every level reads alike, read once: the enabled rules of a type, the system user.
    memo: dict[Any, Any] = field(default_factory=dict)

    def deeper(self) -> "Cascade":
        return Cascade(self.origin, self.depth + 1, self.ran, self.reported, self.memo)

    def rules(self, object_type: str) -> list[Rule]:
        key = ("rules", object_type)
        if key not in self.memo:
            self.memo[key] = list(Rule.objects.filter(object_type=object_type, is_enabled=True))
        return self.memo[key]

    def robot(self) -> User:
        """The actor of the engine's writes."""
        if "robot" not in self.memo:
            self.memo["robot"] = system_user()
        return self.memo["robot"]


@dataclass
class Event:
    """An event as rules see it: what happened to which record."""

    name: str
    subject: subjects.Subject
    record_id: int
    kinds: tuple[str, ...]
    changed: frozenset[str] | None = None
    before: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)


# From an event to the rules it fires.


def heard(name: str, payload: dict[str, Any]) -> None:
    event = _event_of(name, payload)
    if event is None:
        return
    cause = payload.get("cause")
    cascade = cause if isinstance(cause, Cascade) else Cascade(origin=name)
    rules = cascade.rules(event.subject.object_type)
    # Time rules to plan again: all of a new record's, an updated one's whose date changed.
    planned = [
        r
        for r in rules
        if r.trigger == Rule.Trigger.TIME
        and event.kinds[0] in ("created", "updated")
        and (event.changed is None or r.trigger_params["field"] in event.changed)
    ]
    matching = [r for r in rules if r.trigger in event.kinds and _params_match(r, event)]
    waiting = _waiting_with_condition(event, cascade) if event.kinds[0] == "updated" else []
    if not (matching or waiting or planned):
        return  # most events of most records: a query or two, nothing to do
    record = event.subject.records().filter(pk=event.record_id).first()
    if record is None:
        return
    if planned:
        _plan_record(event.subject, record, planned, event.changed)
    if matching:
        run_rules(matching, record, event, cascade)
    if waiting:
        _release_met(event.subject, record, waiting, cascade)


def _event_of(name: str, payload: dict[str, Any]) -> Event | None:
    if name in ("approval.approved", "approval.rejected"):
        subject = _subject_of_content_type(payload["content_type_id"])
        if not subject:
            return None
        status = name.rpartition(".")[2]
        return Event(
            name,
            subject,
            payload["object_id"],
            (f"approval_{status}",),
            params={"process": payload["process"]},
        )
    if name == "task.completed":
        task = Task.objects.select_related("thread", "task_type").filter(pk=payload["id"]).first()
        subject = task and _subject_of_content_type(task.thread.content_type_id)
        if not subject:
            return None
        code = task.task_type.code if task.task_type else None
        return Event(
            name, subject, task.thread.object_id, ("task_completed",), params={"task_type": code}
        )
    if name == "hold.released":
        subject = subjects.find(payload["object_type"])
        if subject is None:
            return None
        return Event(
            name,
            subject,
            payload["record_id"],
            ("hold_released",),
            params={"hold": payload["hold"]},
        )
    object_type, _dot, what = name.rpartition(".")
    subject = subjects.find(object_type)
    if subject is None or what not in ("created", "updated", "stage_changed"):
        return None
    if what == "created":
        return Event(name, subject, payload["id"], ("created",))
    if what == "updated":
        changed, before = _before(subject, payload)
        return Event(
            name, subject, payload["id"], ("updated", "field_changed"), changed, before=before
        )
    return Event(
        name,
        subject,
        payload["id"],
        ("stage_entered", "stage_left"),
        frozenset({"stage_id"}),
        before={"stage_id": payload.get("from_stage_id")},
        params={"from": payload.get("from_stage_id"), "to": payload.get("to_stage_id")},
    )


def _subject_of_content_type(content_type_id: int | None) -> subjects.Subject | None:
    if content_type_id is None:
        return None
    model = ContentType.objects.get_for_id(content_type_id).model_class()
    try:
        return subjects.find(registry.for_model(model).key)
    except KeyError:
        return None


def _before(
    subject: subjects.Subject, payload: dict[str, Any]
) -> tuple[frozenset[str], dict[str, Any]]:
    """The changed fields by the names conditions read, and their values before the change
    (the audit's plain form turned back into what ``cel.context`` gives)."""
    model = subject.model
    changed, before = set(), {}
    old_values = payload.get("before") or {}
    for name in payload.get("changed") or ():
        try:
            model_field = model._meta.get_field(name)
        except FieldDoesNotExist:  # a name of the service's own, not a field
            continue
        if not model_field.concrete or model_field.many_to_many:
            continue
        key = model_field.attname if model_field.is_relation else name
        changed.add(key)
        old = old_values.get(name)
        if isinstance(old, dict):
            old = old.get("id")
        elif isinstance(model_field, models.DecimalField | models.FloatField) and old is not None:
            old = float(old)
        before[key] = old
    return frozenset(changed), before


def _params_match(rule: Rule, event: Event) -> bool:
    p = rule.trigger_params
    if rule.trigger == "field_changed":
        # From and to are checked against the record in ``_condition_met``.
        return p.get("field") in (event.changed or ())
    if rule.trigger == "stage_entered":
        return "stage" not in p or p["stage"] == event.params.get("to")
    if rule.trigger == "stage_left":
        return event.params.get("from") is not None and (
            "stage" not in p or p["stage"] == event.params.get("from")
        )
    for key in ("process", "task_type", "hold"):
        if key in p and p[key] != event.params.get(key):
            return False
    return True


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return float(value) == float(wanted)
    return str(value) == str(wanted)


# Running rules on one record.


def run_rules(rules: list[Rule], record: models.Model, event: Event, cascade: Cascade) -> None:
    subject = event.subject
    content_type = ContentType.objects.get_for_model(type(record))
    context = subject.context(record)
    runs: list[RuleRun] = []
    timeline: list[AuditEvent] = []
    recent = _RecentFirings(rules, content_type, record.pk)
    for rule in rules:
        run = _run(rule, record, context, event, cascade, content_type, timeline, recent)
        runs.append(run)
        if run.outcome == Outcome.FIRED and _writes_record(rule):
            record.refresh_from_db()
            context = subject.context(record)
    RuleRun.objects.bulk_create(runs)
    AuditEvent.objects.bulk_create(timeline)


def _writes_record(rule: Rule) -> bool:
    return any(a["kind"] in ("set_fields", "assign") for a in rule.actions)


def _run(
    rule: Rule,
    record: models.Model,
    context: dict[str, Any],
    event: Event,
    cascade: Cascade,
    content_type: ContentType,
    timeline: list[AuditEvent],
    recent: "_RecentFirings",
) -> RuleRun:
    """Run one rule on one record on an event: the run's row to write, and its timeline entry
    added to ``timeline``. ``recent`` counts the rules' firings for the throttle."""
    now = clock.now()
    run = RuleRun(
        rule=rule,
        content_type=content_type,
        object_id=record.pk,
        at=now,
        event=event.name[:60],
        depth=cascade.depth,
    )
    key = (rule.pk, content_type.pk, record.pk)
    if key in cascade.ran:
        run.outcome = Outcome.SKIPPED
        run.detail = {"reason": "already ran for this event"}
        return run
    if cascade.depth >= max_depth():
        run.outcome = Outcome.STOPPED
        run.detail = {"reason": "cascade too deep", "origin": cascade.origin}
        timeline.append(_timeline_entry(rule, record, run, now))
        if rule.pk not in cascade.reported:
            cascade.reported.add(rule.pk)
            _report(
                rule,
                _("A chain of rules went %(depth)d levels deep and was stopped at “%(rule)s”.")
                % {"depth": cascade.depth, "rule": rule.name},
            )
        return run
    if not _condition_met(rule, context, event):
        run.outcome = Outcome.SKIPPED
        return run
    if recent.reached(rule, now):
        run.outcome = Outcome.THROTTLED
        run.detail = {"limit": rule.throttle_per_hour}
        timeline.append(_timeline_entry(rule, record, run, now))
        _report_once_an_hour(
            rule,
            now,
            _("“%(rule)s” fired %(count)d times in an hour on one record and was stopped.")
            % {"rule": rule.name, "count": rule.throttle_per_hour},
        )
        return run
    cascade.ran.add(key)
    firing = _Firing(record, context, run)
    _act(rule, [firing], cascade.deeper())
    recent.add(rule)
    timeline.append(_ended(rule, firing, now))
    return run


def _condition_met(rule: Rule, context: dict[str, Any], event: Event) -> bool:
    p = rule.trigger_params
    if rule.trigger == "field_changed":
        name = p["field"]
        if "to" in p and not _same(context.get(name), p["to"]):
            return False
        if "from" in p and not _same((event.before or {}).get(name), p["from"]):
            return False
    if not rule.condition:
        return True
    if not cel.holds(rule.condition, context):
        return False
    if rule.mode == Rule.Mode.NEWLY and rule.trigger in CHANGE_TRIGGERS and event.before:
        return not cel.holds(rule.condition, {**context, **event.before})
    return True


class _RecentFirings:
    """How often each rule fired on one record in the last hour: one query for all the rules
    of an event, made when the first of them is about to fire."""

    def __init__(self, rules: list[Rule], content_type: ContentType, object_id: int) -> None:
        self.rules = rules
        self.where = {"content_type": content_type, "object_id": object_id}
        self.counts: dict[int, int] | None = None

    def reached(self, rule: Rule, now: dt.datetime) -> bool:
        if self.counts is None:
            self.counts = dict(
                RuleRun.objects.filter(
                    rule__in=[r.pk for r in self.rules],
                    outcome=Outcome.FIRED,
                    at__gt=now - dt.timedelta(hours=1),
                    **self.where,
                )
                .values_list("rule")
                .annotate(n=Count("pk"))
            )
        return self.counts.get(rule.pk, 0) >= rule.throttle_per_hour

    def add(self, rule: Rule) -> None:
        if self.counts is not None:
            self.counts[rule.pk] = self.counts.get(rule.pk, 0) + 1


@dataclass
class _Firing:
    """One rule about to act on one record, and how it went."""

    record: models.Model
    context: dict[str, Any]
    run: RuleRun
    done: list[str] = field(default_factory=list)
    error: str = ""


def _act(rule: Rule, firings: list[_Firing], cascade: Cascade) -> None:
    """Run the rule's actions in order on the firings' records, each action in its own
    transaction; on a record where one fails, the rest are not run (what the earlier ones
    wrote stays). For several records, an action with a batch form runs for all of them at
    once; should that fail, it runs again record by record, so that one bad record fails
    alone."""
    robot = cascade.robot()
    with events.caused_by(cascade):
        for index, action in enumerate(rule.actions):
            going = [f for f in firings if not f.error]
            together = BATCH_ACTIONS.get(action["kind"])
            if together is not None and len(going) > 1:
                try:
                    with transaction.atomic():
                        texts = together(rule, action, going, robot)
                except ACTION_ERRORS:
                    log.info("rule %s: a batch of %d failed; one by one", rule.pk, len(going))
                else:
                    for firing, text in zip(going, texts, strict=True):
                        firing.done.append(text)
                    continue
            act = ACTIONS[action["kind"]]
            for firing in going:
                try:
                    with transaction.atomic():
                        firing.done.append(act(rule, action, firing.record, firing.context, robot))
                except ACTION_ERRORS as exc:
                    firing.error = _error_text(index, action, exc)


def _ended(rule: Rule, firing: _Firing, at: dt.datetime) -> AuditEvent:
    """Record on the run how the firing went; its entry for the record's timeline."""
    run = firing.run
    run.outcome = Outcome.FAILED if firing.error else Outcome.FIRED
    run.detail = {"done": firing.done, **({"error": firing.error} if firing.error else {})}
    return _timeline_entry(rule, firing.record, run, at)


def _error_text(index: int, action: dict[str, Any], exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    detail = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in errors.items()) if errors else ""
    return f"{index + 1}. {action['kind']}: {detail or getattr(exc, 'detail', '') or exc}"[:1000]


def _value(expression: str, context: dict[str, Any]) -> Any:
    return cel.compile_condition(expression).execute(context)


def _template_values(rule: Rule, record: models.Model, context: dict[str, Any]) -> dict[str, Any]:
    url = registry.record_path(rule.object_type, record.pk)
    return {
        **context,
        "record": str(record),
        "record_url": settings.TRELLIS.get("BASE_URL", "").rstrip("/") + url,
        "rule": rule.name,
    }


# The actions. Each takes (rule, action, record, context) and says in a few words what it did.


def _set_fields(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    subject = subjects.get(rule.object_type)
    _update(subject, record, _field_values(subject, action, context), robot)
    return _("set %(fields)s") % {"fields": ", ".join(sorted(action["values"]))}


def _set_fields_many(rule: Rule, action: dict, firings: list["_Firing"], robot: User) -> list[str]:
    subject = subjects.get(rule.object_type)
    if subject.update_many is None:
        return [_set_fields(rule, action, f.record, f.context, robot) for f in firings]
    items = [
        (f.record.pk, _field_values(subject, action, f.context), f.record.version) for f in firings
    ]
    for firing, updated in zip(firings, subject.update_many(robot, items), strict=True):
        firing.record.version = updated.version
    return [_("set %(fields)s") % {"fields": ", ".join(sorted(action["values"]))}] * len(firings)


def _field_values(subject: subjects.Subject, action: dict, context: dict) -> dict[str, Any]:
    names = subject.writable_names()
    return {names[name]: _value(expr, context) for name, expr in action["values"].items()}


def _update(
    subject: subjects.Subject, record: models.Model, values: dict[str, Any], robot: User
) -> None:
    """Write ``values`` through the type's service, at the version the engine last saw; once
    more at the current version if someone (an earlier rule's cascade) wrote in between."""
    try:
        with transaction.atomic():
            updated = subject.update(robot, record.pk, values, record.version)
    except StaleVersion:
        record.refresh_from_db()
        updated = subject.update(robot, record.pk, values, record.version)
    record.version = updated.version


def _create_task(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    task = tasks.create_task(robot, _task_data(rule, action, record, context))
    return _("task #%(id)d") % {"id": task.pk}


def _create_tasks(rule: Rule, action: dict, firings: list["_Firing"], robot: User) -> list[str]:
    made = tasks.create_tasks(
        robot, [_task_data(rule, action, f.record, f.context) for f in firings]
    )
    return [_("task #%(id)d") % {"id": task.pk} for task in made]


def _task_data(rule: Rule, action: dict, record: models.Model, context: dict) -> dict[str, Any]:
    data: dict[str, Any] = {
        "title": definitions.render(action["title"], _template_values(rule, record, context)),
        "record_type": rule.object_type,
        "record_id": record.pk,
    }
    assignee = action["assignee"]
    if assignee == "owner":
        data["user_id"] = getattr(record, "owner_id", None)
    else:
        kind, _sep, pk = assignee.partition(":")
        data[f"{kind}_id"] = int(pk)
    if action.get("task_type"):
        data["task_type_id"] = TaskType.objects.get(code=action["task_type"]).pk
    if action.get("due_in_hours"):
        data["due_at"] = calendar.add_business_hours(clock.now(), action["due_in_hours"])
    return data


def _send_email(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    owners = _owners([record]) if action["to"] == "owner" else {}
    to = _email(rule, action, record, context, owners)
    return _("e-mail to %(to)s") % {"to": to}


def _send_emails(rule: Rule, action: dict, firings: list["_Firing"], robot: User) -> list[str]:
    owners = _owners([f.record for f in firings]) if action["to"] == "owner" else {}
    with outbound.queued_together():
        return [
            _("e-mail to %(to)s") % {"to": _email(rule, action, f.record, f.context, owners)}
            for f in firings
        ]


def _owners(records: list[models.Model]) -> dict[int, User]:
    return User.objects.in_bulk({getattr(r, "owner_id", None) for r in records} - {None})


def _email(
    rule: Rule, action: dict, record: models.Model, context: dict, owners: dict[int, User]
) -> str:
    """Queue the action's e-mail about ``record``; returns the address."""
    if action["to"] == "owner":
        owner = owners.get(getattr(record, "owner_id", None))
        to = owner.email if owner else ""
    else:
        to = _value(action["to"], context)
    if not isinstance(to, str) or "@" not in to:
        raise ValidationFailed({"to": [_("Nobody to write to.")]})
    values = _template_values(rule, record, context)
    outbound.queue(
        to=[to],
        subject=definitions.render(action["subject"], values),
        text=definitions.render(action["body"] or action["subject"], values),
        record=record,
        headers={"Auto-Submitted": notify.AUTO_GENERATED},
    )
    return to


def _start_approval(
    rule: Rule, action: dict, record: models.Model, context: dict, robot: User
) -> str:
    process = ApprovalProcess.objects.get(code=action["process"])
    # Submitted in the owner's name, so that "the submitter's manager" means theirs.
    owner = User.objects.filter(pk=getattr(record, "owner_id", None), is_active=True).first()
    request = approvals.submit(owner or robot, rule.object_type, record.pk, process_id=process.pk)
    return _("approval request #%(id)d") % {"id": request.pk}


def _hold(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    hold = Hold.objects.get(code=action["hold"])
    holds.place(robot, hold, record, reason=rule.name)
    return _("on hold: %(hold)s") % {"hold": hold.name}


def _release(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    hold = Hold.objects.get(code=action["hold"])
    if not holds.waiting(record).filter(hold=hold).exists():
        return _("not on hold: %(hold)s") % {"hold": hold.name}
    holds.release(robot, hold, record, note=rule.name)
    return _("released: %(hold)s") % {"hold": hold.name}


def _assign(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    if action["method"] == "expression":
        user = User.objects.filter(pk=_value(action["expression"], context), is_active=True).first()
    else:
        members = list(
            User.objects.filter(team_id=action["team"], is_active=True)
            .exclude(username=SYSTEM_USERNAME)
            .order_by("pk")
        )
        user = (
            _round_robin(rule, members)
            if action["method"] == "round_robin"
            else (_least_open(members))
        )
    if user is None:
        raise ValidationFailed({"owner": [_("Nobody to assign to.")]})
    _update(subjects.get(rule.object_type), record, {"owner": user.pk}, robot)
    return _("assigned to %(name)s") % {"name": user.get_full_name() or user.username}


def _round_robin(rule: Rule, members: list[User]) -> User | None:
    """The member after the one this rule assigned last (kept in the rule's ``state``, under
    its row lock, so two records assigned at once go to two people)."""
    if not members:
        return None
    state = Rule.objects.select_for_update().values_list("state", flat=True).get(pk=rule.pk)
    last_id = (state or {}).get("assigned")
    after = [m for m in members if last_id is not None and m.pk > last_id]
    chosen = (after or members)[0]
    Rule.objects.filter(pk=rule.pk).update(state={**(state or {}), "assigned": chosen.pk})
    return chosen


def _least_open(members: list[User]) -> User | None:
    counts = dict(
        Task.objects.filter(owner__in=members, status__in=OPEN_TASK_STATUSES)
        .values_list("owner_id")
        .annotate(n=Count("pk"))
    )
    return min(members, key=lambda m: (counts.get(m.pk, 0), m.pk), default=None)


def _create_related(
    rule: Rule, action: dict, record: models.Model, context: dict, robot: User
) -> str:
    target = subjects.get(action["object_type"])
    names = target.writable_names()
    values = {names[name]: _value(expr, context) for name, expr in action["values"].items()}
    if "owner" in target.writable and "owner" not in values:
        values["owner"] = getattr(record, "owner_id", None)
    created = target.create(robot, values)
    return _("created %(type)s #%(id)d") % {"type": target.label, "id": created.pk}


def _webhook(rule: Rule, action: dict, record: models.Model, context: dict, robot: User) -> str:
    from .tasks import call_webhook

    call_webhook.enqueue(
        action["url"],
        {"rule": rule.name, "object_type": rule.object_type, "id": record.pk, "record": context},
    )
    return _("webhook queued")


ACTIONS = {
    "set_fields": _set_fields,
    "create_task": _create_task,
    "send_email": _send_email,
    "start_approval": _start_approval,
    "hold": _hold,
    "release": _release,
    "assign": _assign,
    "create_related": _create_related,
    "webhook": _webhook,
}
# Actions that also run for many records in one go: each table written once for all.
BATCH_ACTIONS = {
    "set_fields": _set_fields_many,
    "create_task": _create_tasks,
    "send_email": _send_emails,
}
# What a failing action raises; anything else is a bug and stops the batch.
ACTION_ERRORS = (ServiceError, RuntimeError, ArithmeticError, TypeError, ValueError, KeyError)


# What a run leaves behind besides its row.


def _timeline_entry(rule: Rule, record: models.Model, run: RuleRun, at: dt.datetime) -> AuditEvent:
    """The run's entry on the record's timeline, written with the run rows."""
    text = _("Rule “%(rule)s”: %(outcome)s") % {
        "rule": rule.name,
        "outcome": Outcome(run.outcome).label,
    }
    if run.detail.get("done"):
        text += " (" + "; ".join(run.detail["done"]) + ")"
    if run.detail.get("error"):
        text += " — " + run.detail["error"]
    return AuditEvent(
        content_type_id=run.content_type_id,
        object_id=record.pk,
        action=AuditEvent.Action.UPDATED,
        at=at,
        changes={"automation": [None, text]},
        summary=str(record)[:300],
    )


def _admins() -> models.QuerySet[User]:
    return User.objects.filter(
        Q(is_superuser=True) | Q(role__code=Role.ADMIN), is_active=True
    ).exclude(username=SYSTEM_USERNAME)


def _report(rule: Rule, text: str) -> None:
    link = reverse("automations:rule-detail", args=[rule.pk])
    for admin in _admins():
        with translation.override(notify.language_of(admin)):
            notify.notice(admin, text, link=link)


def _report_once_an_hour(rule: Rule, now: dt.datetime, text: str) -> None:
    reported = RuleRun.objects.filter(
        rule=rule, outcome=Outcome.THROTTLED, at__gt=now - dt.timedelta(hours=1)
    ).exists()
    if not reported:
        _report(rule, text)


# Holds released by their condition.


def _waiting_with_condition(event: Event, cascade: Cascade) -> list[HoldPlacement]:
    """The record's waiting placements in holds that release themselves by a condition."""
    if cascade.depth > 0:
        # A cascade hears many events (a sweep, thousands): whether any hold releases itself
        # is asked once for all of them.
        if "conditional_holds" not in cascade.memo:
            found = Hold.objects.exclude(release_condition="").exists()
            cascade.memo["conditional_holds"] = found
        if not cascade.memo["conditional_holds"]:
            return []
    return list(
        HoldPlacement.objects.filter(
            content_type=ContentType.objects.get_for_model(event.subject.model),
            object_id=event.record_id,
            released_at__isnull=True,
        )
        .exclude(hold__release_condition="")
        .select_related("hold")
    )


def _release_met(
    subject: subjects.Subject,
    record: models.Model,
    placements: list[HoldPlacement],
    cascade: Cascade,
) -> None:
    context = subject.context(record)
    with events.caused_by(cascade):
        for placement in placements:
            if cel.holds(placement.hold.release_condition, context):
                # Conflict: released by someone else meanwhile.
                with contextlib.suppress(Conflict):
                    holds.release(None, placement.hold, record, note=_("release condition met"))


# Time rules: one timer per rule and record, planned from the record's date field.


def due_time(rule: Rule, value: dt.date | dt.datetime) -> dt.datetime:
    p = rule.trigger_params
    if isinstance(value, dt.datetime):
        base = value
    else:
        opening = calendar.working_hours()[0]
        base = timezone.make_aware(dt.datetime.combine(value, opening))
    offset = p["offset"] * (-1 if p["direction"] == "before" else 1)
    if p["unit"] == "hours":
        return base + dt.timedelta(hours=offset)
    return calendar.add_days(base, offset, business=p["unit"] == "business_days")


def plan_rule(rule: Rule) -> int:
    """(Re)plan a time rule's timers for every record of its type, from scratch. Moments
    already past are not fired: a new rule acts from now on."""
    RuleTimer.objects.filter(rule=rule).delete()
    if not rule.is_enabled or rule.trigger != Rule.Trigger.TIME:
        return 0
    subject = subjects.get(rule.object_type)
    name = rule.trigger_params["field"]
    content_type = ContentType.objects.get_for_model(subject.model)
    now = clock.now()
    rows = (
        subject.model._default_manager.exclude(**{f"{name}__isnull": True})
        .values_list("pk", name)
        .order_by()
    )
    batch: list[RuleTimer] = []
    planned = 0
    for pk, value in rows.iterator(chunk_size=5000):
        due = due_time(rule, value)
        batch.append(
            RuleTimer(
                rule=rule,
                content_type=content_type,
                object_id=pk,
                planned_from=value.isoformat(),
                due_at=due if due > now else None,
            )
        )
        if len(batch) == 5000:
            planned += len(RuleTimer.objects.bulk_create(batch))
            batch = []
    planned += len(RuleTimer.objects.bulk_create(batch))
    return planned


def _plan_record(
    subject: subjects.Subject,
    record: models.Model,
    rules: Iterable[Rule],
    changed: frozenset[str] | None,
) -> None:
    """Plan the time rules whose date field a new record has, or an update changed."""
    content_type = ContentType.objects.get_for_model(type(record))
    for rule in rules:
        if rule.trigger != Rule.Trigger.TIME:
            continue
        name = rule.trigger_params["field"]
        if changed is not None and name not in changed:
            continue
        value = getattr(record, name)
        RuleTimer.objects.update_or_create(
            rule=rule,
            content_type=content_type,
            object_id=record.pk,
            defaults={
                "planned_from": value.isoformat() if value else "",
                "due_at": due_time(rule, value) if value else None,
            },
        )


def fire_due_timers(limit: int = 1000) -> int:
    """Fire the time rules whose moment has come, ``limit`` at a time, each batch in one
    transaction: a sweep killed half-way leaves its timers due, and two sweeps at once fire
    different timers (rows locked with SKIP LOCKED). A batch of 1,000 holds its records for
    about a second; against 500, it took a third less of PostgreSQL's CPU per timer."""
    fired = 0
    while True:
        # What the batch wrote is heard after it commits, by subscribers that take a batch
        # at once where they can (pipeline alerts re-check each record once).
        with events.dispatched_together(), transaction.atomic():
            timers = list(
                RuleTimer.objects.select_for_update(skip_locked=True)
                .filter(due_at__lte=clock.now())
                .order_by("due_at")
                .values_list("pk", "rule_id", "content_type_id", "object_id", named=True)[:limit]
            )
            if not timers:
                return fired
            RuleTimer.objects.filter(pk__in=[t.pk for t in timers]).update(due_at=None)
            _fire(timers)
        fired += len(timers)
        if len(timers) < limit:
            return fired


def _fire(timers: list[Any]) -> None:
    """Fire ``timers`` (rows of ``RuleTimer``: pk, rule_id, content_type_id, object_id)."""
    rules = {r.pk: r for r in Rule.objects.filter(pk__in={t.rule_id for t in timers})}
    by_type: dict[int, set[int]] = {}
    for timer in timers:
        by_type.setdefault(timer.content_type_id, set()).add(timer.object_id)
    records = {}
    derived: dict[str, bool] = {}
    for content_type_id, ids in by_type.items():
        subject = _subject_of_content_type(content_type_id)
        if subject is None:
            continue
        # The customer's name and e-mail cost a join per record: read only for rules that
        # may use them.
        derived[subject.object_type] = subject.read_by(
            r for r in rules.values() if r.object_type == subject.object_type
        )
        for record in subject.records(derived[subject.object_type]).filter(pk__in=ids):
            records[content_type_id, record.pk] = record
    runs: list[RuleRun] = []
    firing: dict[int, list[_Firing]] = {}
    now = clock.now()
    for timer in timers:
        rule = rules.get(timer.rule_id)
        record = records.get((timer.content_type_id, timer.object_id))
        if rule is None or record is None or not rule.is_enabled:
            continue
        subject = subjects.get(rule.object_type)
        event = Event("time", subject, record.pk, ("time",))
        context = subject.context(record, derived[subject.object_type])
        run = RuleRun(
            rule=rule,
            content_type_id=timer.content_type_id,
            object_id=record.pk,
            at=now,
            event=event.name,
            depth=0,
        )
        runs.append(run)
        if _condition_met(rule, context, event):
            firing.setdefault(rule.pk, []).append(_Firing(record, context, run))
        else:
            run.outcome = Outcome.SKIPPED
    # One cascade for the batch: what it keeps (which rule ran on which record) is per
    # record, so the timers' records do not meet in it; the rules' writes are one level down.
    cascade = Cascade("time")
    timeline: list[AuditEvent] = []
    for rule_id, firings in firing.items():
        cascade.ran.update((rule_id, f.run.content_type_id, f.record.pk) for f in firings)
        _act(rules[rule_id], firings, cascade.deeper())
        timeline += [_ended(rules[rule_id], f, now) for f in firings]
    RuleRun.objects.bulk_create(runs)
    AuditEvent.objects.bulk_create(timeline)


# Trying rules without writing.


def dry_run(
    rules: Iterable[Rule],
    records: Iterable[models.Model],
    changes: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """For each record, which rules would fire and what they would change. Without
    ``changes``, if their trigger happened now. With ``changes`` (model values by the names
    conditions read), on the record's update by them, judged as a real update is: the
    trigger's field, its from and to values, and "only when newly met". Nothing is written."""
    rules = list(rules)
    results = []
    for record in records:
        subject = subjects.get(registry.for_model(type(record)).key)
        result: dict[str, Any] = {"id": record.pk, "label": str(record)}
        if changes is None:
            context, event = subject.context(record), None
        else:
            record, context, event = _updated(subject, record, changes)
            result["changes"] = {
                name: [event.before[name], context.get(name)] for name in sorted(event.changed)
            }
        verdicts = []
        for rule in rules:
            verdict: dict[str, Any] = {"rule": rule.pk, "name": rule.name}
            if event is not None:
                verdict["triggered"] = rule.trigger in event.kinds and _params_match(rule, event)
            try:
                fires = verdict.get("triggered", True) and (
                    not rule.condition
                    or cel.compile_condition(rule.condition).execute(context) is True
                )
                if fires and event is not None:
                    fires = _condition_met(rule, context, event)
                verdict["fires"] = fires
                verdict["actions"] = (
                    [_preview(rule, a, record, context) for a in rule.actions] if fires else []
                )
            except (
                cel.ConditionError,
                RuntimeError,
                ArithmeticError,
                TypeError,
                ValueError,
            ) as exc:
                verdict.update(fires=False, actions=[], error=str(exc))
            verdicts.append(verdict)
        result["rules"] = verdicts
        results.append(result)
    return results


def _updated(
    subject: subjects.Subject, record: models.Model, changes: Mapping[str, Any]
) -> tuple[models.Model, dict[str, Any], Event]:
    """A copy of ``record`` with ``changes`` applied, not saved, its context, and the update
    event saving it would make. An update that changes nothing makes no event: this one's
    ``changed`` is then empty, and it triggers nothing."""
    fields = cel.fields_by_name(type(record))
    before = subject.context(record)
    changed = copy.copy(record)
    for name, value in changes.items():
        setattr(changed, fields[name].attname, value)
    after = subject.context(changed)
    names = frozenset(name for name in changes if after.get(name) != before.get(name))
    kinds: tuple[str, ...] = ("updated", "field_changed") if names - {"stage_id"} else ()
    params = {}
    if "stage_id" in names:  # a move, as ``<type>.stage_changed`` makes it
        kinds += ("stage_entered", "stage_left")
        params = {"from": before["stage_id"], "to": after["stage_id"]}
    event = Event(
        f"{subject.object_type}.updated",
        subject,
        record.pk,
        kinds,
        names,
        before={name: before.get(name) for name in names},
        params=params,
    )
    return changed, after, event


def _preview(rule: Rule, action: dict, record: models.Model, context: dict) -> dict[str, Any]:
    kind = action["kind"]
    preview: dict[str, Any] = {"kind": kind}
    if kind in ("set_fields", "create_related"):
        changes = {}
        for name, expression in action["values"].items():
            new = _value(expression, context)
            old = context.get(name) if kind == "set_fields" else None
            if kind == "create_related" or not _same(old, new):
                changes[name] = [old, new]
        preview["changes"] = changes
        if kind == "create_related":
            preview["object_type"] = action["object_type"]
    elif kind in ("create_task", "send_email"):
        values = _template_values(rule, record, context)
        key = "title" if kind == "create_task" else "subject"
        preview[key] = definitions.render(action[key], values)
        if kind == "send_email":
            preview["to"] = (
                action["to"] if action["to"] == "owner" else _value(action["to"], context)
            )
    else:
        preview.update({k: v for k, v in action.items() if k != "kind"})
    return preview


def forget_old_skips(limit: int = 10_000) -> int:
    """Delete "skipped by condition" runs older than ``TRELLIS["AUTOMATION_SKIPPED_RUNS_DAYS"]``
    (30): every update of a record adds one per rule whose condition it does not meet, and
    after a month they explain nothing. Runs that did something are kept."""
    days = int(settings.TRELLIS.get("AUTOMATION_SKIPPED_RUNS_DAYS", 30))
    old = RuleRun.objects.filter(
        outcome=Outcome.SKIPPED, at__lt=clock.now() - dt.timedelta(days=days)
    ).values_list("pk", flat=True)[:limit]
    return RuleRun.objects.filter(pk__in=list(old)).delete()[0]


sweep.register("automation_timers", fire_due_timers)
sweep.register("automation_skipped_runs", forget_old_skips)
events.subscribe("*", heard)
