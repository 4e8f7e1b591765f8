"""Watching the process: alert rules per pipeline, the alerts they fire, and who is told.

Eight kinds of alert (``AlertRule.Kind``). Five depend on time and are planned as timers
(``AlertTimer``, one row per rule, record and *slot*, with an indexed ``due_at``): over the
stage's dwell limit, past the expected close date, stalled (no activity logged), no next step
planned (no open task), an activity deadline missed (an open task past its due time). Three
follow from a change and fire at once when the change is heard: moved backward, amount
decreased by more than X%, expected close date pushed out N times.

How it stays right:

- **State, not history, decides.** ``_sync`` computes, from a record as it is now, which
  timers it should have and which occurrence each would fire; it writes the difference, and
  clears every open time-based alert whose occurrence is no longer current (the record left
  the stage, the close date moved, an activity was logged, a task was planned, the task was
  done, the deal closed). The event handlers, the planning pass and the sweep all call it.
- **Events** (``core.events``, after commit) re-sync the record they are about: stage moves,
  updates, deletions, logged activities, task changes. A logged activity restarts the
  "stalled" clock.
- **The sweep** reads only timers whose ``due_at`` has come (by its index), locks their
  records (``SKIP LOCKED`` on PostgreSQL, so a record another sweep or a user holds waits for
  the next round), re-syncs them from their current state and fires what is still due. A timer
  that fired keeps its row with ``due_at`` emptied, so its occurrence is not planned again.
  Alerts are unique per (rule, record, occurrence): two sweeps at once, or a sweep killed
  half-way (its transaction rolls back), fire nothing twice and lose nothing.
- **Planning.** A new or changed rule, or a pipeline whose stages changed (its ``version``
  moved on), is planned over the pipeline's open records in batches by a sweeper of its own,
  from a cursor kept on the rule, so no request and no sweep ever walks all records at once.
- **Telling people.** An alert leaves a ``Notification`` (with a link to the record) for the
  record's owner and, if the rule says so, the owner's manager, in their language; the person
  whose own action caused it is not told. Once a day, from the digest hour, each user with
  alerts of rules that have the digest on gets one e-mail listing the new ones still open.
"""

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q, QuerySet
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from trellis.core import audit, calendar, clock, events, registry
from trellis.core import sweep as sweeper
from trellis.core.errors import NotFound, PermissionDenied, StaleVersion, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, AuditEvent, Scope, User
from trellis.core.money import format_money
from trellis.core.visibility import can, is_admin, right, visible
from trellis.mail import outbound
from trellis.mail.inbound import lock_skip_locked, one_line

from ..models import Notification, Task, Thread
from ..queries import OPEN_STATUSES
from . import subjects
from .models import (
    Alert,
    AlertDigest,
    AlertNotice,
    AlertRule,
    AlertTimer,
    Pipeline,
    Stage,
    StageChange,
)

log = logging.getLogger(__name__)

Kind = AlertRule.Kind
TIMED = frozenset(
    {Kind.OVER_DWELL, Kind.PAST_CLOSE, Kind.STALLED, Kind.NO_NEXT_STEP, Kind.TASK_OVERDUE}
)
ON_CHANGE = frozenset({Kind.CLOSE_PUSHED, Kind.MOVED_BACKWARD, Kind.AMOUNT_DROPPED})
# Records re-synced per transaction by the sweep and the planning pass.
BATCH = 200
PLAN_BATCH = 1000
DIGEST_ROWS = 100
# The amount changes of a record looked at for drops when one is heard.
AMOUNT_HISTORY = 50
AMOUNT_WINDOW = dt.timedelta(hours=1)
_NOTIFICATION_LENGTH = Notification._meta.get_field("text").max_length


@dataclass(frozen=True)
class Threshold:
    """What a rule's threshold means for its kind, and the values it may take."""

    minimum: int
    maximum: int
    default: int
    unit: str  # days, times, stages, percent, hours
    help: Any
    # A field of the record type the kind needs: "close_date", "amount", or none.
    needs: str = ""


THRESHOLDS: dict[str, Threshold] = {
    Kind.OVER_DWELL: Threshold(
        0, 365, 0, "days", gettext_lazy("Days of grace after the stage's expected dwell time.")
    ),
    Kind.PAST_CLOSE: Threshold(
        0,
        365,
        0,
        "days",
        gettext_lazy("Days of grace after the expected close date."),
        "close_date",
    ),
    Kind.CLOSE_PUSHED: Threshold(
        1,
        50,
        3,
        "times",
        gettext_lazy("Fires when the expected close date has been moved later this many times."),
        "close_date",
    ),
    Kind.STALLED: Threshold(
        1,
        365,
        14,
        "days",
        gettext_lazy("Days without a logged activity (call, meeting, e-mail, note)."),
    ),
    Kind.NO_NEXT_STEP: Threshold(
        0, 365, 2, "days", gettext_lazy("Days a record may go without an open task.")
    ),
    Kind.MOVED_BACKWARD: Threshold(
        1, 50, 1, "stages", gettext_lazy("Fires for a move back by at least this many stages.")
    ),
    Kind.AMOUNT_DROPPED: Threshold(
        0,
        99,
        20,
        "percent",
        gettext_lazy("Fires when one change lowers the amount by more than this percent."),
        "amount",
    ),
    Kind.TASK_OVERDUE: Threshold(
        0, 720, 0, "hours", gettext_lazy("Hours of grace after an open task's due time.")
    ),
}
UNITS = {
    "days": gettext_lazy("days"),
    "times": gettext_lazy("times"),
    "stages": gettext_lazy("stages"),
    "percent": gettext_lazy("percent"),
    "hours": gettext_lazy("hours"),
}
_RULE_FIELDS = {
    "kind",
    "threshold",
    "is_active",
    "notify_owner",
    "notify_manager",
    "email_digest",
    "version",
}
_FLAGS = ("is_active", "notify_owner", "notify_manager", "email_digest")


# Which kinds a pipeline may have.


def kinds_for(subject: subjects.Subject) -> list[str]:
    """The kinds of alert that make sense for a type: the close-date and amount kinds only
    where the type has such a field."""
    fields = {"close_date": subject.close_date_field, "amount": subject.amount_field}
    return [
        kind for kind in Kind.values if not THRESHOLDS[kind].needs or fields[THRESHOLDS[kind].needs]
    ]


def rules_for(pipeline: Pipeline) -> list[AlertRule]:
    """Every kind the pipeline may watch for, in a fixed order: its saved rule, or an unsaved
    inactive one with the default threshold."""
    saved = {rule.kind: rule for rule in AlertRule.objects.filter(pipeline=pipeline)}
    rules = []
    for kind in kinds_for(subjects.get(pipeline.object_type)):
        rule = saved.get(kind)
        if rule is None:
            rule = AlertRule(
                pipeline=pipeline,
                kind=kind,
                threshold=THRESHOLDS[kind].default,
                is_active=False,
                version=0,
            )
        rules.append(rule)
    return rules


# Defining rules.


def save_rules(actor: User, pipeline_id: int, items: Any) -> list[AlertRule]:
    """Create or change a pipeline's rules; kinds left out keep theirs.

    ``items`` is a list of {kind, threshold, is_active, notify_owner, notify_manager,
    email_digest, version}; a field left out keeps its value (a new rule starts active, with
    the kind's default threshold, telling the owner, in the digest). A saved rule needs the
    ``version`` it was read at. Errors are keyed ``rules.<n>.<field>``.
    """
    if not is_admin(actor):
        raise PermissionDenied(_("Only administrators define alert rules."))
    with transaction.atomic():
        pipeline = Pipeline.objects.select_for_update().filter(pk=pipeline_id).first()
        if pipeline is None:
            raise NotFound(_("No such pipeline."))
        subject = subjects.get(pipeline.object_type)
        applicable = kinds_for(subject)
        existing = {
            rule.kind: rule
            for rule in AlertRule.objects.select_for_update().filter(pipeline=pipeline)
        }
        errors: dict[str, list[str]] = {}
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise ValidationFailed({"rules": [_("Give a list of rules.")]})
        changes: list[tuple[AlertRule, dict[str, Any]]] = []
        stale = False
        seen: set[str] = set()
        for index, item in enumerate(items):
            prefix = f"rules.{index}."
            if not isinstance(item, Mapping):
                errors[f"rules.{index}"] = [_("Give each rule as an object.")]
                continue
            for key in item:
                if key not in _RULE_FIELDS:
                    errors[prefix + str(key)] = [_("Unknown field.")]
            kind = item.get("kind")
            if kind not in Kind.values:
                errors[prefix + "kind"] = [
                    _("Unknown kind of alert. Choose one of: %(kinds)s.")
                    % {"kinds": ", ".join(applicable)}
                ]
                continue
            if kind not in applicable:
                errors[prefix + "kind"] = [
                    _("Records of this pipeline have no field this kind of alert needs.")
                ]
                continue
            if kind in seen:
                errors[prefix + "kind"] = [_("Give each kind of alert once.")]
                continue
            seen.add(kind)
            rule = existing.get(kind)
            if rule is not None:
                version = item.get("version")
                if version is None:
                    errors[prefix + "version"] = [_("Send the version you edited.")]
                elif isinstance(version, bool) or not isinstance(version, int):
                    errors[prefix + "version"] = [_("Give a whole number.")]
                elif version != rule.version:
                    stale = True
            else:
                rule = AlertRule(pipeline=pipeline, kind=kind, threshold=THRESHOLDS[kind].default)
            values = _checked_rule(rule, item, prefix, errors)
            changes.append((rule, values))
        if errors:
            raise ValidationFailed(errors)
        if stale:
            raise StaleVersion(
                rules_for(pipeline),
                _("Someone else changed these alert rules. Review the current values."),
            )
        now = clock.now()
        for rule, values in changes:
            _write_rule(actor, pipeline, rule, values, now)
    return rules_for(pipeline)


def _checked_rule(
    rule: AlertRule, item: Mapping[str, Any], prefix: str, errors: dict[str, list[str]]
) -> dict[str, Any]:
    spec = THRESHOLDS[rule.kind]
    values: dict[str, Any] = {}
    threshold = item.get("threshold", rule.threshold)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int)
        or not spec.minimum <= threshold <= spec.maximum
    ):
        errors[prefix + "threshold"] = [
            _("Give a whole number from %(min)d to %(max)d.")
            % {"min": spec.minimum, "max": spec.maximum}
        ]
    else:
        values["threshold"] = threshold
    for flag in _FLAGS:
        value = item.get(flag, getattr(rule, flag))
        if not isinstance(value, bool):
            errors[prefix + flag] = [_("Give true or false.")]
        else:
            values[flag] = value
    return values


def _rule_definition(rule: AlertRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in ("threshold", *_FLAGS)}


def _write_rule(
    actor: User, pipeline: Pipeline, rule: AlertRule, values: dict[str, Any], now: dt.datetime
) -> None:
    new = rule.pk is None
    before = {} if new else _rule_definition(rule)
    was_active = rule.is_active and not new
    for name, value in values.items():
        setattr(rule, name, value)
    changes = audit.diff(before, _rule_definition(rule))
    if not new and not changes:
        return
    if not new:
        rule.version += 1
    rule.updated_at = now
    if rule.kind in TIMED and (new or "threshold" in changes or not was_active):
        # Its records are planned again by the planning sweep.
        rule.planned_version = None
        rule.planning_version = None
        rule.plan_cursor = 0
    rule.save()
    if was_active and not rule.is_active:
        Alert.objects.filter(rule=rule, cleared_at__isnull=True).update(cleared_at=now)
        AlertTimer.objects.filter(rule=rule).delete()
    audit.record(
        actor,
        rule,
        AuditEvent.Action.CREATED if new else AuditEvent.Action.UPDATED,
        changes,
        f"{pipeline.name}: {Kind(rule.kind).label}",
    )


# What a record should be watched for, now.


@dataclass
class _Want:
    rule: AlertRule
    record: Any
    slot: str
    occurrence: str
    due_at: dt.datetime
    since: dt.datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


class _Timer(NamedTuple):
    """An ``AlertTimer`` row as the sync reads it."""

    pk: int
    rule_id: int
    object_id: int
    slot: str
    occurrence: str
    due_at: dt.datetime | None
    since: dt.datetime | None


def _local_midnight(day: dt.date) -> dt.datetime:
    return timezone.make_aware(
        dt.datetime.combine(day, dt.time.min), timezone.get_default_timezone()
    )


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%f")


class _Facts:
    """What the sync of a batch of records reads besides the records, each at most once."""

    def __init__(self, subject: subjects.Subject, content_type: ContentType, records: list):
        self.subject = subject
        self.content_type = content_type
        self.ids = [record.pk for record in records]
        self._threads: dict[int, int] | None = None
        self._tasks: dict[int, list[tuple[int, dt.datetime | None, str]]] | None = None
        self._activity: dict[int, dt.datetime] | None = None
        self._closed_task: dict[int, dt.datetime] | None = None

    def _record_of_thread(self) -> dict[int, int]:
        """The records' threads, thread id to record id. Read apart from their tasks: two
        lookups by index, where a join's plan depends on how well the statistics know the
        tables (on fresh ones, a nested loop over every task of every thread)."""
        if self._threads is None:
            self._threads = dict(
                Thread.objects.filter(
                    content_type=self.content_type, object_id__in=self.ids
                ).values_list("pk", "object_id")
            )
        return self._threads

    def open_tasks(self, pk: int) -> list[tuple[int, dt.datetime | None, str]]:
        if self._tasks is None:
            self._tasks = defaultdict(list)
            record_of = self._record_of_thread()
            rows = Task.objects.filter(
                thread_id__in=list(record_of), status__in=OPEN_STATUSES
            ).values_list("thread_id", "pk", "due_at", "title")
            for thread_id, task_id, due_at, title in rows:
                self._tasks[record_of[thread_id]].append((task_id, due_at, title))
        return self._tasks.get(pk, [])

    def created(self, record: Any) -> dt.datetime:
        return (
            getattr(record, "created_at", None)
            or getattr(record, self.subject.entered_field)
            or clock.now()
        )

    def last_activity(self, record: Any) -> dt.datetime:
        """When an activity was last logged on the record, else when it was created."""
        if self._activity is None:
            self._activity = _last_activities(self.content_type, self.ids)
        return self._activity.get(record.pk) or self.created(record)

    def without_task_since(self, record: Any) -> dt.datetime:
        """When the record's last task was closed, else when it was created."""
        if self._closed_task is None:
            record_of = self._record_of_thread()
            self._closed_task = {}
            for thread_id, last in (
                Task.objects.filter(thread_id__in=list(record_of))
                .exclude(status__in=OPEN_STATUSES)
                .order_by()
                .values("thread_id")
                .annotate(last=Max("updated_at"))
                .values_list("thread_id", "last")
            ):
                pk = record_of[thread_id]
                self._closed_task[pk] = max(last, self._closed_task.get(pk, last))
        closed = self._closed_task.get(record.pk)
        created = self.created(record)
        return max(closed, created) if closed else created


def _last_activities(content_type: ContentType, ids: list[int]) -> dict[int, dt.datetime]:
    """The last logged activity per record, where a domain app registers activities that hang
    off records (content_type, object_id, created_at)."""
    try:
        model = registry.get("activity").model
    except KeyError:
        return {}
    names = {f.name for f in model._meta.get_fields()}
    if not {"content_type", "object_id", "created_at"} <= names:
        return {}
    return dict(
        model._default_manager.filter(content_type=content_type, object_id__in=ids)
        .order_by()
        .values("object_id")
        .annotate(last=Max("created_at"))
        .values_list("object_id", "last")
    )


def _wanted(
    rule: AlertRule,
    subject: subjects.Subject,
    record: Any,
    stage: Stage,
    timers: Mapping[str, _Timer],
    facts: _Facts,
    *,
    now: dt.datetime,
    reset_stalled: bool,
) -> list[_Want]:
    """The timers ``rule`` wants for ``record`` (which is in ``stage``, an open stage of the
    rule's pipeline)."""
    kind = rule.kind
    entered = getattr(record, subject.entered_field)
    if kind == Kind.OVER_DWELL:
        if not stage.max_dwell_days or entered is None:
            return []
        due = calendar.add_days(
            entered, stage.max_dwell_days + rule.threshold, business=stage.dwell_in_business_days
        )
        details = {
            "stage_id": stage.pk,
            "limit": stage.max_dwell_days,
            "business": stage.dwell_in_business_days,
            "entered_at": entered.isoformat(),
        }
        return [_Want(rule, record, "dwell", f"{stage.pk}@{_stamp(entered)}", due, None, details)]
    if kind == Kind.PAST_CLOSE:
        close = getattr(record, subject.close_date_field) if subject.close_date_field else None
        if close is None:
            return []
        due = _local_midnight(close + dt.timedelta(days=1 + rule.threshold))
        details = {"close_date": close.isoformat()}
        return [_Want(rule, record, "close", f"close:{close.isoformat()}", due, None, details)]
    if kind == Kind.STALLED:
        timer = timers.get("stalled")
        if reset_stalled:
            since = now
        elif timer is not None and timer.since is not None:
            since = timer.since
        else:
            since = facts.last_activity(record)
        due = since + dt.timedelta(days=rule.threshold)
        details = {"days": rule.threshold, "since": since.isoformat()}
        return [_Want(rule, record, "stalled", f"stalled:{_stamp(since)}", due, since, details)]
    if kind == Kind.NO_NEXT_STEP:
        if facts.open_tasks(record.pk):
            return []
        timer = timers.get("next_step")
        since = timer.since if timer is not None and timer.since else None
        since = since or facts.without_task_since(record)
        due = since + dt.timedelta(days=rule.threshold)
        details = {"days": rule.threshold, "since": since.isoformat()}
        return [_Want(rule, record, "next_step", f"next:{_stamp(since)}", due, since, details)]
    if kind == Kind.TASK_OVERDUE:
        wants = []
        for task_id, due_at, title in facts.open_tasks(record.pk):
            if due_at is None:
                continue
            details = {
                "task_id": task_id,
                "title": one_line(title)[:200],
                "due_at": due_at.isoformat(),
            }
            wants.append(
                _Want(
                    rule,
                    record,
                    f"task:{task_id}",
                    f"task:{task_id}:{_stamp(due_at)}",
                    due_at + dt.timedelta(hours=rule.threshold),
                    None,
                    details,
                )
            )
        return wants
    return []


def _stages_of(pipeline_id: int) -> dict[int, Stage]:
    return {stage.pk: stage for stage in Stage.objects.filter(pipeline_id=pipeline_id)}


def _content_type(subject: subjects.Subject) -> ContentType:
    return ContentType.objects.get_for_model(subject.model)


def _sync(
    subject: subjects.Subject,
    pipeline_id: int,
    rules: Sequence[AlertRule],
    records: list[Any],
    now: dt.datetime,
    *,
    fire: bool,
    reset_stalled: bool = False,
    stages: dict[int, Stage] | None = None,
) -> int:
    """Bring the timers of ``rules`` (active, time-based, of one pipeline) on ``records``
    (locked by the caller) in line with the records as they are now, clear the time-based
    alerts whose cause is gone, and, with ``fire``, fire the timers that are due. Returns how
    many alerts fired."""
    timed = [rule for rule in rules if rule.kind in TIMED]
    if not records or not timed:
        return 0
    content_type = _content_type(subject)
    stages = stages if stages is not None else _stages_of(pipeline_id)
    ids = [record.pk for record in records]
    existing: dict[tuple[int, int], dict[str, _Timer]] = defaultdict(dict)
    # Plain rows, not model instances: a sweep reads thousands, and only compares them.
    for row in AlertTimer.objects.filter(
        rule_id__in=[rule.pk for rule in timed], content_type=content_type, object_id__in=ids
    ).values_list(*_Timer._fields):
        timer = _Timer(*row)
        existing[(timer.rule_id, timer.object_id)][timer.slot] = timer
    facts = _Facts(subject, content_type, records)
    wants: list[_Want] = []
    for record in records:
        stage = stages.get(getattr(record, subject.stage_field + "_id"))
        if stage is None or stage.kind != Stage.Kind.OPEN:
            continue
        for rule in timed:
            wants += _wanted(
                rule,
                subject,
                record,
                stage,
                existing.get((rule.pk, record.pk), {}),
                facts,
                now=now,
                reset_stalled=reset_stalled,
            )
    current: dict[tuple[int, int], set[str]] = defaultdict(set)
    kept: set[int] = set()
    creates: list[AlertTimer] = []
    replaced: list[int] = []
    firing: list[_Want] = []
    for want in wants:
        current[(want.rule.pk, want.record.pk)].add(want.occurrence)
        timer = existing.get((want.rule.pk, want.record.pk), {}).get(want.slot)
        if timer is not None:
            kept.add(timer.pk)
            if timer.occurrence == want.occurrence and timer.due_at is None:
                continue  # fired already
        due_now = fire and want.due_at <= now
        if due_now:
            firing.append(want)
        values = (want.occurrence, None if due_now else want.due_at, want.since)
        if timer is None:
            creates.append(
                AlertTimer(
                    rule=want.rule,
                    content_type=content_type,
                    object_id=want.record.pk,
                    slot=want.slot,
                    occurrence=values[0],
                    due_at=values[1],
                    since=values[2],
                )
            )
        elif (timer.occurrence, timer.due_at, timer.since) != values:
            # A changed timer is written anew: one DELETE and one INSERT for the batch cost
            # far less than an UPDATE per row (the records are locked, nobody else writes).
            replaced.append(timer.pk)
            creates.append(
                AlertTimer(
                    rule_id=timer.rule_id,
                    content_type=content_type,
                    object_id=timer.object_id,
                    slot=timer.slot,
                    occurrence=values[0],
                    due_at=values[1],
                    since=values[2],
                )
            )
    gone = replaced + [
        timer.pk for slots in existing.values() for timer in slots.values() if timer.pk not in kept
    ]
    if gone:
        AlertTimer.objects.filter(pk__in=gone).delete()
    if creates:
        AlertTimer.objects.bulk_create(creates)
    stale = [
        pk
        for pk, rule_id, object_id, occurrence in Alert.objects.filter(
            rule_id__in=[rule.pk for rule in timed],
            content_type=content_type,
            object_id__in=ids,
            cleared_at__isnull=True,
        ).values_list("pk", "rule_id", "object_id", "occurrence")
        if occurrence not in current.get((rule_id, object_id), ())
    ]
    if stale:
        Alert.objects.filter(pk__in=stale).update(cleared_at=now)
    if not firing:
        return 0
    stage_of = {
        want.record.pk: getattr(want.record, subject.stage_field + "_id") for want in firing
    }
    return _fire(
        subject,
        [
            _Firing(want.rule, want.record, want.occurrence, stage_of[want.record.pk], want.details)
            for want in firing
        ],
        now,
    )


# Firing and telling.


@dataclass
class _Firing:
    rule: AlertRule
    record: Any
    occurrence: str
    stage_id: int | None
    details: dict[str, Any]


def _fire(
    subject: subjects.Subject,
    items: list[_Firing],
    now: dt.datetime,
    *,
    actor_id: int | None = None,
    reopen: bool = True,
) -> int:
    """Record each occurrence once: a new alert, or (with ``reopen``) a cleared one of the same
    occurrence opened again, its cause having come back. An occurrence still open is left
    alone."""
    content_type = _content_type(subject)
    found = {
        (alert.rule_id, alert.object_id, alert.occurrence): alert
        for alert in Alert.objects.filter(
            rule_id__in={item.rule.pk for item in items},
            content_type=content_type,
            object_id__in={item.record.pk for item in items},
            occurrence__in={item.occurrence for item in items},
        )
    }
    new: list[Alert] = []
    reopened: list[Alert] = []
    rules: dict[int, AlertRule] = {}
    records: dict[int, Any] = {}
    for item in items:
        rules[item.rule.pk] = item.rule
        records[item.record.pk] = item.record
        alert = found.get((item.rule.pk, item.record.pk, item.occurrence))
        owner_id = getattr(item.record, "owner_id", None)
        if alert is None:
            alert = Alert(
                rule=item.rule,
                pipeline_id=item.rule.pipeline_id,
                kind=item.rule.kind,
                content_type=content_type,
                object_id=item.record.pk,
                occurrence=item.occurrence,
                stage_id=item.stage_id,
                owner_id=owner_id,
                fired_at=now,
                details=item.details,
            )
            found[(item.rule.pk, item.record.pk, item.occurrence)] = alert
            new.append(alert)
        elif alert.cleared_at is not None and reopen:
            alert.cleared_at = None
            alert.fired_at = now
            alert.stage_id = item.stage_id
            alert.owner_id = owner_id
            alert.details = item.details
            reopened.append(alert)
    new = _insert(new)
    if reopened:
        Alert.objects.bulk_update(reopened, ["cleared_at", "fired_at", "stage", "owner", "details"])
    fired = new + reopened
    if fired:
        _tell(subject, fired, rules, records, now, actor_id=actor_id)
    return len(fired)


def _insert(alerts: list[Alert]) -> list[Alert]:
    """Insert the alerts; should another sweep have inserted one of them meanwhile, the
    unique constraint keeps only theirs and ours is dropped."""
    if not alerts:
        return []
    try:
        with transaction.atomic():
            return Alert.objects.bulk_create(alerts)
    except IntegrityError:
        pass
    inserted = []
    for alert in alerts:
        alert.pk = None
        try:
            with transaction.atomic():
                alert.save(force_insert=True)
        except IntegrityError:
            continue
        inserted.append(alert)
    return inserted


def _tell(
    subject: subjects.Subject,
    alerts: list[Alert],
    rules: Mapping[int, AlertRule],
    records: Mapping[int, Any],
    now: dt.datetime,
    *,
    actor_id: int | None,
) -> None:
    """A notification for the owner (and the owner's manager where the rule says so) of each
    alert, in their language; the digest picks up the notices later."""
    owner_ids = {alert.owner_id for alert in alerts if alert.owner_id}
    people = User.objects.in_bulk(owner_ids)
    manager_ids = {p.manager_id for p in people.values() if p.manager_id} - set(people)
    if manager_ids and any(rule.notify_manager for rule in rules.values()):
        people.update(User.objects.in_bulk(manager_ids))
    pipelines = {rule.pipeline_id for rule in rules.values()}
    stages = {stage.pk: stage for stage in Stage.objects.filter(pipeline_id__in=pipelines)}
    # Who is told of what, by language, so that each language is switched to once.
    by_language: dict[str, list[tuple[Alert, User]]] = defaultdict(list)
    for alert in alerts:
        rule = rules[alert.rule_id]
        owner = people.get(alert.owner_id) if alert.owner_id else None
        told: list[User] = []
        if rule.notify_owner and owner is not None:
            told.append(owner)
        if rule.notify_manager and owner is not None and owner.manager_id:
            manager = people.get(owner.manager_id)
            if manager is not None:
                told.append(manager)
        for person in {p.pk: p for p in told}.values():
            if not person.is_active or person.username == SYSTEM_USERNAME or person.pk == actor_id:
                continue
            by_language[person.language or settings.LANGUAGE_CODE].append((alert, person))
    notifications: list[Notification] = []
    notices: list[AlertNotice] = []
    for language, pairs in by_language.items():
        with translation.override(language):
            for alert, person in pairs:
                text = alert_text(alert, str(records[alert.object_id]), stages)
                notifications.append(
                    Notification(
                        user=person,
                        text=one_line(text)[:_NOTIFICATION_LENGTH],
                        link=registry.record_path(subject.object_type, alert.object_id),
                        created_at=now,
                    )
                )
                notices.append(
                    AlertNotice(
                        alert=alert,
                        user=person,
                        created_at=now,
                        digest_pending=rules[alert.rule_id].email_digest and bool(person.email),
                        digested_at=None,
                    )
                )
    Notification.objects.bulk_create(notifications)
    AlertNotice.objects.bulk_create(
        notices,
        update_conflicts=True,
        unique_fields=["alert", "user"],
        update_fields=["created_at", "digest_pending", "digested_at"],
    )


# What an alert says.


def _stage_name(stages: Mapping[int, Stage], stage_id: Any) -> str:
    stage = stages.get(stage_id) if isinstance(stage_id, int) else None
    return stage.label if stage is not None else "?"


def describe(alert: Alert, stages: Mapping[int, Stage]) -> str:
    """What the alert is about, in the active language (without the record's name)."""
    details = alert.details or {}
    kind = alert.kind
    if kind == Kind.OVER_DWELL:
        limit = int(details.get("limit") or 0)
        stage = _stage_name(stages, details.get("stage_id"))
        if details.get("business"):
            return ngettext(
                "over the expected time in %(stage)s (%(limit)d business day)",
                "over the expected time in %(stage)s (%(limit)d business days)",
                limit,
            ) % {"stage": stage, "limit": limit}
        return ngettext(
            "over the expected time in %(stage)s (%(limit)d day)",
            "over the expected time in %(stage)s (%(limit)d days)",
            limit,
        ) % {"stage": stage, "limit": limit}
    if kind == Kind.PAST_CLOSE:
        return _("past its expected close date, %(date)s") % {"date": details.get("close_date")}
    if kind == Kind.CLOSE_PUSHED:
        times = int(details.get("times") or 0)
        return ngettext(
            "expected close date pushed out %(times)d time, now %(date)s",
            "expected close date pushed out %(times)d times, now %(date)s",
            times,
        ) % {"times": times, "date": details.get("close_date")}
    if kind == Kind.STALLED:
        days = int(details.get("days") or 0)
        return ngettext(
            "stalled: no activity for %(days)d day", "stalled: no activity for %(days)d days", days
        ) % {"days": days}
    if kind == Kind.NO_NEXT_STEP:
        return _("no next step planned: no open task")
    if kind == Kind.MOVED_BACKWARD:
        return _("moved back from %(from)s to %(to)s") % {
            "from": _stage_name(stages, details.get("from_stage_id")),
            "to": _stage_name(stages, details.get("to_stage_id")),
        }
    if kind == Kind.AMOUNT_DROPPED:
        currency = details.get("currency") or ""
        return _("amount down %(percent)s%% from %(old)s to %(new)s") % {
            "percent": details.get("percent"),
            "old": _money(details.get("from"), currency),
            "new": _money(details.get("to"), currency),
        }
    if kind == Kind.TASK_OVERDUE:
        due = details.get("due_at")
        when = ""
        if due:
            when = timezone.localtime(dt.datetime.fromisoformat(due)).strftime("%Y-%m-%d %H:%M")
        return _("activity deadline missed: “%(title)s” was due %(due)s") % {
            "title": details.get("title", ""),
            "due": when,
        }
    return str(Kind(kind).label)


def alert_text(alert: Alert, record_name: str, stages: Mapping[int, Stage]) -> str:
    return _("%(record)s: %(what)s") % {"record": record_name, "what": describe(alert, stages)}


def _money(value: Any, currency: str) -> str:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    try:
        return format_money(amount, currency)
    except (KeyError, ValueError):
        return f"{amount} {currency}".strip()


# Hearing what happened.


def _locked_record(subject: subjects.Subject, pk: Any) -> Any:
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        return None
    return subject.model._default_manager.select_for_update().filter(pk=pk).first()


def _pipeline_of(subject: subjects.Subject, record: Any) -> tuple[int, dict[int, Stage]] | None:
    stage_id = getattr(record, subject.stage_field + "_id")
    if stage_id is None:
        return None
    pipeline_id = Stage.objects.filter(pk=stage_id).values_list("pipeline_id", flat=True).first()
    if pipeline_id is None:
        return None
    return pipeline_id, _stages_of(pipeline_id)


def _active_rules(pipeline_id: int) -> list[AlertRule]:
    return list(AlertRule.objects.filter(pipeline_id=pipeline_id, is_active=True))


def _clear(
    content_type: ContentType, pk: int, now: dt.datetime, kinds: Iterable[str] | None = None
) -> None:
    found = Alert.objects.filter(content_type=content_type, object_id=pk, cleared_at__isnull=True)
    if kinds is not None:
        found = found.filter(kind__in=list(kinds))
    found.update(cleared_at=now)


def resync(subject: subjects.Subject, pk: Any, *, reset_stalled: bool = False) -> None:
    """Bring one record's timers and time-based alerts in line with it as it is now."""
    with transaction.atomic():
        record = _locked_record(subject, pk)
        if record is None:
            return
        _resync_locked(subject, record, clock.now(), reset_stalled=reset_stalled)


def resync_many(
    subject: subjects.Subject, pks: Iterable[int], *, kinds: Iterable[str] | None = None
) -> None:
    """``resync`` for many records of one type at once, one lock and one sync per pipeline;
    for the rules of ``kinds`` only, where given."""
    with transaction.atomic():
        records = list(
            subject.model._default_manager.select_for_update()
            .filter(pk__in=set(pks))
            .order_by("pk")  # in one order: two calls on the same records do not deadlock
        )
        pipeline_of = dict(
            Stage.objects.filter(
                pk__in={getattr(r, subject.stage_field + "_id") for r in records}
            ).values_list("pk", "pipeline_id")
        )
        by_pipeline: dict[int, list[Any]] = defaultdict(list)
        for record in records:
            pipeline_id = pipeline_of.get(getattr(record, subject.stage_field + "_id"))
            if pipeline_id is not None:
                by_pipeline[pipeline_id].append(record)
        now = clock.now()
        for pipeline_id, members in by_pipeline.items():
            rules = [r for r in _active_rules(pipeline_id) if kinds is None or r.kind in kinds]
            _sync(subject, pipeline_id, rules, members, now, fire=False)


def _resync_locked(
    subject: subjects.Subject, record: Any, now: dt.datetime, *, reset_stalled: bool = False
) -> list[AlertRule]:
    where = _pipeline_of(subject, record)
    if where is None:
        return []
    pipeline_id, stages = where
    rules = _active_rules(pipeline_id)
    _sync(
        subject,
        pipeline_id,
        rules,
        [record],
        now,
        fire=False,
        reset_stalled=reset_stalled,
        stages=stages,
    )
    return rules


def on_stage_changed(subject: subjects.Subject, payload: Mapping[str, Any]) -> None:
    with transaction.atomic():
        record = _locked_record(subject, payload.get("id"))
        change = (
            StageChange.objects.select_related("from_stage", "to_stage")
            .filter(pk=payload.get("change_id"))
            .first()
        )
        if record is None or change is None:
            return
        now = clock.now()
        content_type = _content_type(subject)
        rules = _resync_locked(subject, record, now)
        closed = change.to_stage.kind != Stage.Kind.OPEN
        if closed:
            # The deal is won or lost (or the lead qualified): nothing is left to watch.
            _clear(content_type, record.pk, now)
            return
        if change.direction == StageChange.Direction.FORWARD:
            _clear(content_type, record.pk, now, [Kind.MOVED_BACKWARD])
        rule = next((r for r in rules if r.kind == Kind.MOVED_BACKWARD), None)
        if (
            rule is None
            or change.direction != StageChange.Direction.BACKWARD
            or change.from_stage is None
        ):
            return
        back = _stages_between(change.to_stage, change.from_stage)
        if back < rule.threshold:
            return
        details = {
            "from_stage_id": change.from_stage_id,
            "to_stage_id": change.to_stage_id,
            "stages": back,
            "change_id": change.pk,
        }
        _fire(
            subject,
            [_Firing(rule, record, f"change:{change.pk}", change.to_stage_id, details)],
            now,
            actor_id=payload.get("actor_id"),
        )


def _stages_between(lower: Stage, upper: Stage) -> int:
    """How many stages back a move from ``upper`` to ``lower`` goes, counting active stages."""
    return Stage.objects.filter(
        pipeline_id=lower.pipeline_id,
        is_active=True,
        order__gte=lower.order,
        order__lt=upper.order,
    ).count() or max(upper.order - lower.order, 1)


def on_updated(subject: subjects.Subject, payload: Mapping[str, Any]) -> None:
    changed = set(payload.get("changed") or ())
    amount, close = subject.amount_field, subject.close_date_field
    if not changed & {amount, close, "owner"} - {""}:
        return
    with transaction.atomic():
        record = _locked_record(subject, payload.get("id"))
        if record is None:
            return
        now = clock.now()
        content_type = _content_type(subject)
        if "owner" in changed:
            Alert.objects.filter(
                content_type=content_type, object_id=record.pk, cleared_at__isnull=True
            ).update(owner_id=getattr(record, "owner_id", None))
        rules = _resync_locked(subject, record, now)
        stage_id = getattr(record, subject.stage_field + "_id")
        actor_id = payload.get("actor_id")
        if not stage_id or not Stage.objects.filter(pk=stage_id, kind=Stage.Kind.OPEN).exists():
            return
        by_kind = {rule.kind: rule for rule in rules}
        if amount and amount in changed:
            _amount_changed(subject, record, content_type, by_kind, now, actor_id)
        if close and close in changed and Kind.CLOSE_PUSHED in by_kind:
            _close_date_changed(
                subject, record, content_type, by_kind[Kind.CLOSE_PUSHED], now, actor_id
            )


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _amount_changed(
    subject: subjects.Subject,
    record: Any,
    content_type: ContentType,
    rules: Mapping[str, AlertRule],
    now: dt.datetime,
    actor_id: int | None,
) -> None:
    """Each recent change of the amount (in the audit log) that lowered it by more than the
    threshold fires once; an open drop alert clears once the amount is back within the
    threshold of what it was before the drop.

    Every change of the last hour is looked at, not only the latest: changes made in one
    transaction are heard together, after it commits. Older ones were heard before."""
    rule = rules.get(Kind.AMOUNT_DROPPED)
    currency = getattr(record, subject.currency_field, "") if subject.currency_field else ""
    stage_id = getattr(record, subject.stage_field + "_id")
    if rule is not None:
        entries = AuditEvent.objects.filter(
            content_type=content_type,
            object_id=record.pk,
            action=AuditEvent.Action.UPDATED,
            changes__has_key=subject.amount_field,
            at__gte=now - AMOUNT_WINDOW,
        ).order_by("-id")[:AMOUNT_HISTORY]
        items = []
        for entry in reversed(entries):
            if subject.currency_field and subject.currency_field in entry.changes:
                continue  # a change of currency is not a drop
            old, new = (_decimal(v) for v in entry.changes[subject.amount_field])
            if old is None or new is None or old <= 0 or new >= old:
                continue
            percent = (old - new) * 100 / old
            if percent <= rule.threshold:
                continue
            details = {
                "from": format(old, "f"),
                "to": format(new, "f"),
                "currency": currency,
                "percent": int(percent.to_integral_value()),
                "threshold": rule.threshold,
                "audit_id": entry.pk,
            }
            items.append(_Firing(rule, record, f"audit:{entry.pk}", stage_id, details))
        if items:
            _fire(subject, items, now, actor_id=actor_id, reopen=False)
    amount = _decimal(getattr(record, subject.amount_field))
    for alert in Alert.objects.filter(
        content_type=content_type,
        object_id=record.pk,
        kind=Kind.AMOUNT_DROPPED,
        cleared_at__isnull=True,
    ):
        before = _decimal(alert.details.get("from"))
        limit = Decimal(100 - int(alert.details.get("threshold", 0))) / 100
        if before is not None and amount is not None and amount >= before * limit:
            Alert.objects.filter(pk=alert.pk).update(cleared_at=now)


def _close_date_changed(
    subject: subjects.Subject,
    record: Any,
    content_type: ContentType,
    rule: AlertRule,
    now: dt.datetime,
    actor_id: int | None,
) -> None:
    """Count the record's push-outs (a close date moved later) from its audit history."""
    name = subject.close_date_field
    pushes = 0
    for changes in AuditEvent.objects.filter(
        content_type=content_type,
        object_id=record.pk,
        action=AuditEvent.Action.UPDATED,
        changes__has_key=name,
    ).values_list("changes", flat=True):
        old, new = changes[name]
        if old and new and str(new) > str(old):
            pushes += 1
    if pushes < rule.threshold:
        return
    close = getattr(record, name)
    details = {"times": pushes, "close_date": close.isoformat() if close else None}
    stage_id = getattr(record, subject.stage_field + "_id")
    _fire(subject, [_Firing(rule, record, "pushed", stage_id, details)], now, actor_id=actor_id)


def on_deleted(subject: subjects.Subject, payload: Mapping[str, Any]) -> None:
    try:
        pk = int(payload.get("id"))
    except (TypeError, ValueError):
        return
    content_type = _content_type(subject)
    with transaction.atomic():
        AlertTimer.objects.filter(content_type=content_type, object_id=pk).delete()
        _clear(content_type, pk, clock.now())


def on_activity(payload: Mapping[str, Any]) -> None:
    """A logged activity (call, meeting, e-mail, note) restarts the record's "stalled" clock."""
    subject = _subject(payload.get("related_type"))
    if subject is not None:
        resync(subject, payload.get("related_id"), reset_stalled=True)


# What a task decides of a record's alerts: whether it has a next step, and when its tasks
# fall overdue. The other kinds read the record, its stage and its activities.
TASK_KINDS = frozenset({Kind.NO_NEXT_STEP, Kind.TASK_OVERDUE})


def on_tasks(payloads: Iterable[Mapping[str, Any]]) -> None:
    """Tasks planned, rescheduled, done or cancelled on records re-sync what tasks decide of
    those records' alerts; each record once, however many of its tasks changed."""
    places = (
        Task.objects.filter(pk__in={p.get("id") for p in payloads})
        .exclude(thread__content_type=None)
        .values_list("thread__content_type", "thread__object_id")
        .distinct()
    )
    by_type: dict[int, set[int]] = defaultdict(set)
    for content_type_id, object_id in places:
        by_type[content_type_id].add(object_id)
    for content_type_id, ids in by_type.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        subject = subjects.for_model(model) if model is not None else None
        if subject is not None:
            resync_many(subject, ids, kinds=TASK_KINDS)


def _subject(object_type: Any) -> subjects.Subject | None:
    try:
        return subjects.get(str(object_type))
    except KeyError:
        return None


_TASK_EVENTS = {"task.created", "task.edited", "task.status_changed", "task.completed"}


def _is_task_change(name: str, payload: Mapping[str, Any]) -> bool:
    """A task event that can change a record's alerts: all but edits that leave the due time."""
    if name not in _TASK_EVENTS:
        return False
    return name != "task.edited" or "due_at" in (payload.get("changed") or ())


def heard(name: str, payload: dict[str, Any]) -> None:
    """The one subscriber: dispatches by the event's name."""
    if name in _TASK_EVENTS:
        if _is_task_change(name, payload):
            on_tasks([payload])
        return
    if name == "activity.logged":
        on_activity(payload)
        return
    object_type, _dot, what = name.rpartition(".")
    if what not in ("stage_changed", "updated", "deleted"):
        return
    subject = _subject(object_type)
    if subject is None:
        return
    if what == "stage_changed":
        on_stage_changed(subject, payload)
    elif what == "updated":
        on_updated(subject, payload)
    else:
        on_deleted(subject, payload)


def heard_many(items: list[tuple[str, dict[str, Any]]]) -> None:
    """The subscriber for events dispatched together: task events re-sync each record once;
    the others go one by one."""
    task_events = []
    for name, payload in items:
        if _is_task_change(name, payload):
            task_events.append(payload)
        elif name not in _TASK_EVENTS:
            heard(name, payload)
    if task_events:
        on_tasks(task_events)


events.subscribe("*", heard, many=heard_many)


# The sweep.


def sweep(limit: int = 2000) -> int:
    """Fire the alerts whose timers are due; returns how many fired."""
    now = clock.now()
    due = list(
        AlertTimer.objects.filter(due_at__lte=now)
        .order_by("due_at", "pk")
        .values_list("rule_id", "content_type_id", "object_id")[:limit]
    )
    if not due:
        return 0
    rules = AlertRule.objects.in_bulk({rule_id for rule_id, *_ in due})
    inactive = [pk for pk, rule in rules.items() if not rule.is_active]
    if inactive:
        AlertTimer.objects.filter(rule_id__in=inactive).delete()
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for rule_id, content_type_id, object_id in due:
        rule = rules.get(rule_id)
        if rule is not None and rule.is_active:
            groups[(content_type_id, rule.pipeline_id)].append(object_id)
    fired = 0
    for (content_type_id, pipeline_id), object_ids in groups.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        subject = subjects.for_model(model) if model is not None else None
        if subject is None:
            continue
        pipeline_rules = _active_rules(pipeline_id)
        stages = _stages_of(pipeline_id)
        unique = sorted(set(object_ids))
        for start in range(0, len(unique), BATCH):
            fired += _sweep_batch(
                subject,
                pipeline_id,
                pipeline_rules,
                stages,
                unique[start : start + BATCH],
                content_type_id,
            )
    return fired


def _sweep_batch(
    subject: subjects.Subject,
    pipeline_id: int,
    rules: list[AlertRule],
    stages: dict[int, Stage],
    ids: list[int],
    content_type_id: int,
) -> int:
    with transaction.atomic():
        now = clock.now()
        records = list(
            lock_skip_locked(subject.model._default_manager.filter(pk__in=ids).order_by("pk"))
        )
        if len(records) < len(ids):
            missing = set(ids) - {record.pk for record in records}
            # Records someone else holds wait for the next sweep; deleted ones lose their timers.
            present = set(
                subject.model._default_manager.filter(pk__in=missing).values_list("pk", flat=True)
            )
            deleted = missing - present
            if deleted:
                AlertTimer.objects.filter(
                    content_type_id=content_type_id, object_id__in=deleted
                ).delete()
                Alert.objects.filter(
                    content_type_id=content_type_id,
                    object_id__in=deleted,
                    cleared_at__isnull=True,
                ).update(cleared_at=now)
        return _sync(subject, pipeline_id, rules, records, now, fire=True, stages=stages)


sweeper.register("pipeline-alerts", sweep)


def plan(limit: int = PLAN_BATCH) -> int:
    """Plan the timers of rules that are new or changed, or whose pipeline's stages changed:
    one batch of records per rule and call, from the cursor kept on the rule. Returns how many
    records were planned, plus one for each rule brought up to date without a walk."""
    waiting = list(
        AlertRule.objects.filter(is_active=True, kind__in=TIMED)
        .exclude(planned_version=F("pipeline__version"))
        .values_list("pk", flat=True)[:20]
    )
    planned = 0
    for rule_id in waiting:
        with transaction.atomic():
            rule = lock_skip_locked(AlertRule.objects.filter(pk=rule_id, is_active=True)).first()
            if rule is None:
                continue
            version = Pipeline.objects.values_list("version", flat=True).get(pk=rule.pipeline_id)
            if rule.planned_version == version:
                continue
            if rule.planned_version is not None and rule.kind != Kind.OVER_DWELL:
                # Only dwell limits follow the pipeline's definition; the others stand.
                AlertRule.objects.filter(pk=rule.pk).update(
                    planned_version=version, planning_version=None, plan_cursor=0
                )
                planned += 1
                continue
            if rule.planning_version != version:
                # The stages changed during the walk (or it starts): from the beginning.
                rule.planning_version, rule.plan_cursor = version, 0
            subject = subjects.get(rule.pipeline.object_type)
            stages = _stages_of(rule.pipeline_id)
            open_stages = [pk for pk, stage in stages.items() if stage.kind == Stage.Kind.OPEN]
            ids = list(
                subject.model._default_manager.filter(
                    **{f"{subject.stage_field}_id__in": open_stages},
                    pk__gt=rule.plan_cursor,
                )
                .order_by("pk")
                .values_list("pk", flat=True)[:limit]
            )
            records = list(
                subject.model._default_manager.select_for_update().filter(pk__in=ids).order_by("pk")
            )
            _sync(
                subject, rule.pipeline_id, [rule], records, clock.now(), fire=False, stages=stages
            )
            planned += len(records)
            if len(ids) < limit:
                done = {"planned_version": version, "planning_version": None, "plan_cursor": 0}
                planned += not records
            else:
                done = {"planning_version": version, "plan_cursor": ids[-1]}
            AlertRule.objects.filter(pk=rule.pk).update(**done)
    return planned


sweeper.register("pipeline-alert-planning", plan)


def plan_all() -> int:
    """Plan every rule to the end (after a bulk load of records, which sends no events)."""
    total = 0
    while True:
        done = plan()
        total += done
        if not done:
            return total


# The digest.


def _digest_hour() -> int:
    return settings.TRELLIS.get("PIPELINES", {}).get(
        "DIGEST_HOUR", settings.TRELLIS["TASKS"]["DIGEST_HOUR"]
    )


def send_digests(limit: int = 200) -> int:
    """Send today's alert digests that are due; returns how many were sent."""
    now = clock.now()
    local = timezone.localtime(now)
    if local.hour < _digest_hour():
        return 0
    today = local.date()
    sent_today = AlertDigest.objects.filter(last_sent_on__gte=today).values("user_id")
    due = list(
        AlertNotice.objects.filter(digest_pending=True)
        .exclude(user_id__in=sent_today)
        .order_by("user_id")
        .values_list("user_id", flat=True)
        .distinct()[:limit]
    )
    sent = 0
    for user_id in due:
        with transaction.atomic():
            if not _claim_day(user_id, today):
                continue
            notices = list(
                lock_skip_locked(
                    AlertNotice.objects.filter(user_id=user_id, digest_pending=True)
                ).order_by("pk")
            )
            if not notices:
                continue
            AlertNotice.objects.filter(pk__in=[n.pk for n in notices]).update(
                digest_pending=False, digested_at=now
            )
            user = User.objects.filter(pk=user_id, is_active=True).first()
            if user is None or not user.email:
                continue
            sent += _send_digest(user, [n.alert_id for n in notices]) is not None
    return sent


def _claim_day(user_id: int, today: dt.date) -> bool:
    """The day's digest for the user, claimed by a conditional write: never two in one day."""
    if AlertDigest.objects.filter(pk=user_id, last_sent_on__lt=today).update(last_sent_on=today):
        return True
    if AlertDigest.objects.filter(pk=user_id).exists():
        return False
    try:
        with transaction.atomic():
            AlertDigest.objects.create(user_id=user_id, last_sent_on=today)
    except IntegrityError:
        return False
    return True


def _send_digest(user: User, alert_ids: list[int]) -> Any:
    alerts = list(
        Alert.objects.filter(pk__in=alert_ids, cleared_at__isnull=True)
        .select_related("pipeline")
        .order_by("pipeline__name", "-fired_at", "-pk")[: DIGEST_ROWS + 1]
    )
    if not alerts:
        return None
    more = len(alerts) > DIGEST_ROWS
    alerts = alerts[:DIGEST_ROWS]
    names = _record_names(alerts)
    stages = {
        s.pk: s for s in Stage.objects.filter(pipeline_id__in={a.pipeline_id for a in alerts})
    }
    base = settings.TRELLIS["BASE_URL"]
    with translation.override(user.language or settings.LANGUAGE_CODE):
        sections: dict[int, dict[str, Any]] = {}
        for alert in alerts:
            section = sections.setdefault(
                alert.pipeline_id,
                {
                    "pipeline": alert.pipeline.label,
                    "link": base + _alerts_path(alert.pipeline_id),
                    "rows": [],
                },
            )
            path = registry.record_path(_object_type(alert.content_type_id), alert.object_id)
            section["rows"].append(
                {
                    "text": one_line(
                        alert_text(
                            alert, names.get((alert.content_type_id, alert.object_id), "?"), stages
                        )
                    ),
                    "link": base + path if path else "",
                }
            )
        day = timezone.localdate(clock.now())
        subject = _("Pipeline alerts for %(day)s") % {"day": day.isoformat()}
        text = (
            render_to_string(
                "pipelines/mail/alert_digest.txt",
                {"name": str(user), "sections": list(sections.values()), "more": more},
            ).strip()
            + "\n"
        )
    return outbound.queue(
        to=[user.email],
        subject=subject,
        text=text,
        headers={"Auto-Submitted": "auto-generated"},
    )


def _alerts_path(pipeline_id: int) -> str:
    try:
        return reverse("pipelines:alerts", args=[pipeline_id])
    except NoReverseMatch:
        return ""


def _object_type(content_type_id: int) -> str:
    model = ContentType.objects.get_for_id(content_type_id).model_class()
    try:
        return registry.for_model(model).key
    except KeyError:
        return ""


def _record_names(alerts: Iterable[Alert]) -> dict[tuple[int, int], str]:
    """The name of each alert's record, one query per kind of record."""
    wanted: dict[int, set[int]] = defaultdict(set)
    for alert in alerts:
        wanted[alert.content_type_id].add(alert.object_id)
    names = {}
    for content_type_id, ids in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        if model is None:
            continue
        for record in model._default_manager.filter(pk__in=ids):
            names[(content_type_id, record.pk)] = str(record)
    return names


sweeper.register("pipeline-alert-digests", send_digests)


# Reads.


STATES = ("open", "cleared", "all")


def visible_alerts(user: User, pipeline: Pipeline | None = None) -> QuerySet[Alert]:
    """Alerts on records ``user`` may see (of one pipeline, or of all), newest first."""
    found = Alert.objects.all()
    if pipeline is not None:
        found = found.filter(pipeline=pipeline)
    condition = Q(pk__in=[])
    for subject in subjects.all_subjects():
        if pipeline is not None and subject.object_type != pipeline.object_type:
            continue
        scope = right(user, subject.object_type)[0]
        if scope == Scope.NONE:
            continue
        content_type = _content_type(subject)
        if scope == Scope.ALL:
            condition |= Q(content_type=content_type)
        else:
            records = visible(user, subject.model).values("pk")
            condition |= Q(content_type=content_type, object_id__in=records)
    return found.filter(condition).order_by("-fired_at", "-pk")


def alert_list(
    user: User,
    pipeline: Pipeline | None = None,
    *,
    kind: str = "",
    owner_id: int | None = None,
    state: str = "open",
) -> QuerySet[Alert]:
    found = visible_alerts(user, pipeline)
    if state == "open":
        found = found.filter(cleared_at__isnull=True)
    elif state == "cleared":
        found = found.filter(cleared_at__isnull=False)
    if kind:
        found = found.filter(kind=kind)
    if owner_id:
        found = found.filter(owner_id=owner_id)
    return found.select_related("owner", "stage", "pipeline")


@dataclass
class Row:
    """An alert as lists show it."""

    alert: Alert
    object_type: str
    record_name: str
    record_link: str
    text: str
    stage: str


def rows(alerts: Sequence[Alert]) -> list[Row]:
    """The alerts of a page with their records' names and links, in the active language."""
    names = _record_names(alerts)
    stages = {
        s.pk: s for s in Stage.objects.filter(pipeline_id__in={a.pipeline_id for a in alerts})
    }
    result = []
    for alert in alerts:
        object_type = _object_type(alert.content_type_id)
        name = names.get((alert.content_type_id, alert.object_id), "?")
        result.append(
            Row(
                alert=alert,
                object_type=object_type,
                record_name=name,
                record_link=registry.record_path(object_type, alert.object_id),
                text=describe(alert, stages),
                stage=alert.stage.label if alert.stage_id else "",
            )
        )
    return result


def viewable_pipeline(user: User, pk: int) -> Pipeline:
    """A pipeline of a kind of record the user may see; any other is ``NotFound``."""
    pipeline = Pipeline.objects.filter(pk=pk).first()
    if pipeline is None or not can(user, "view", pipeline.object_type):
        raise NotFound(_("No such pipeline."))
    return pipeline


# For benchmarks and operators.


def timer_count() -> int:
    return AlertTimer.objects.filter(due_at__isnull=False).count()


def due_time_of_nth_timer(n: int) -> dt.datetime | None:
    """The moment at which ``n`` timers are due (the due time of the n-th soonest)."""
    found = (
        AlertTimer.objects.filter(due_at__isnull=False)
        .order_by("due_at")
        .values_list("due_at", flat=True)[max(n - 1, 0) : n]
    )
    return next(iter(found), None)
