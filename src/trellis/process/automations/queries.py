"""Reads of automations. Rules are seen by the people who may define them for their kind of
record (``definitions.may_define``); anyone else gets 404 for them. Holds are seen by whoever
may see records of their kind; a hold's queue by whoever may edit them, and it lists only the
records the reader may see."""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils.translation import gettext as _

from trellis.core import clock, registry
from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import User
from trellis.core.paging import Page, paginate
from trellis.core.visibility import can, visible

from .. import cel
from . import definitions, engine, subjects
from .models import Hold, HoldPlacement, Rule, RuleRun

# The window of the fired and failed counts on the rule list.
RECENT_DAYS = 7


def definable_types(user: User) -> list[str]:
    """The kinds of record the user may define rules for, in the order they were registered."""
    return [
        s.object_type
        for s in subjects.all_subjects()
        if definitions.may_define(user, s.object_type)
    ]


def viewable_types(user: User) -> list[str]:
    return [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]


# Rules.


def rules(user: User, object_type: str | None = None) -> models.QuerySet[Rule]:
    """The rules the user may define, in the order they run."""
    types = definable_types(user)
    if object_type is not None:
        types = [t for t in types if t == object_type]
    return Rule.objects.filter(object_type__in=types)


def _recent_count(outcome: str, since: dt.datetime) -> Coalesce:
    counted = (
        RuleRun.objects.filter(rule=OuterRef("pk"), outcome=outcome, at__gte=since)
        .order_by()
        .values("rule")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted), 0)


def rule_list(user: User, object_type: str) -> list[Rule]:
    """The rules of one kind of record with, each, ``last_run_at`` and how many runs fired
    and failed in the last ``RECENT_DAYS`` days; one query whatever the number of rules."""
    since = clock.now() - dt.timedelta(days=RECENT_DAYS)
    last = RuleRun.objects.filter(rule=OuterRef("pk")).order_by("-at").values("at")[:1]
    return list(
        rules(user, object_type).annotate(
            last_run_at=Subquery(last),
            fired_recently=_recent_count(RuleRun.Outcome.FIRED, since),
            failed_recently=_recent_count(RuleRun.Outcome.FAILED, since),
        )
    )


def get_rule(user: User, pk: int) -> Rule:
    rule = Rule.objects.select_related("created_by").filter(pk=pk).first()
    if rule is None or not definitions.may_define(user, rule.object_type):
        raise NotFound(_("No such rule."))
    return rule


def runs(rule: Rule, *, outcome: str = "", page: int = 1, page_size: int | None = None) -> Page:
    """A rule's run history, newest first."""
    found = RuleRun.objects.filter(rule=rule)
    if outcome:
        found = found.filter(outcome=outcome)
    found = found.select_related("content_type").order_by("-at", "-pk")
    result = paginate(found, page, page_size)
    _attach_records(result.items)
    return result


def runs_of_record(user: User, object_type: str, object_id: int, limit: int = 50) -> list[RuleRun]:
    """The latest runs of every rule on one record the user may see, newest first."""
    record = _visible_record(user, object_type, object_id)
    content_type = ContentType.objects.get_for_model(type(record))
    return list(
        RuleRun.objects.filter(content_type=content_type, object_id=record.pk)
        .select_related("rule")
        .order_by("-at", "-pk")[:limit]
    )


def _attach_records(items: list[Any]) -> None:
    """Give each run or placement its ``record`` (None when gone), one query per kind."""
    wanted: dict[int, set[int]] = {}
    for item in items:
        wanted.setdefault(item.content_type_id, set()).add(item.object_id)
    found: dict[tuple[int, int], models.Model] = {}
    for content_type_id, ids in wanted.items():
        model = ContentType.objects.get_for_id(content_type_id).model_class()
        for record in model._default_manager.filter(pk__in=ids):
            found[content_type_id, record.pk] = record
    for item in items:
        item.record = found.get((item.content_type_id, item.object_id))


def record_url(record: models.Model | None) -> str:
    if record is None:
        return ""
    from django.urls import reverse

    name = registry.for_model(type(record)).detail_url_name
    return reverse(name, args=[record.pk]) if name else ""


def _visible_record(user: User, object_type: str, object_id: Any) -> models.Model:
    subject = subjects.find(object_type)
    try:
        pk = int(object_id)
    except (TypeError, ValueError):
        pk = 0
    record = visible(user, subject.model).filter(pk=pk).first() if subject else None
    if record is None:
        raise NotFound(_("No such record."))
    return record


def sample_records(user: User, object_type: str, count: int) -> list[models.Model]:
    """The ``count`` newest records of the kind the user may see."""
    return list(visible(user, subjects.get(object_type).model).order_by("-pk")[:count])


def chosen_records(user: User, object_type: str, ids: list[int]) -> tuple[list, list[int]]:
    """The records of ``ids`` the user may see, in the order asked, and the ids they may not
    (missing and hidden look the same)."""
    found = visible(user, subjects.get(object_type).model).in_bulk(ids)
    return [found[i] for i in ids if i in found], [i for i in ids if i not in found]


# Holds.


def holds(user: User) -> models.QuerySet[Hold]:
    """Holds of the kinds of record the user may see."""
    return Hold.objects.filter(object_type__in=viewable_types(user))


def get_hold(user: User, pk: int) -> Hold:
    hold = holds(user).filter(pk=pk).first()
    if hold is None:
        raise NotFound(_("No such hold."))
    return hold


def hold_list(user: User) -> list[Hold]:
    """The holds the user may see, each with ``waiting``: how many records the user may see
    wait in it."""
    found = list(holds(user))
    counts: dict[int, int] = {}
    # One count per kind of record, whatever the number of holds.
    for object_type in {hold.object_type for hold in found}:
        model = subjects.get(object_type).model
        counts.update(
            HoldPlacement.objects.filter(
                hold__object_type=object_type,
                released_at__isnull=True,
                object_id__in=visible(user, model).values("pk"),
            )
            .order_by()
            .values_list("hold")
            .annotate(n=Count("pk"))
        )
    for hold in found:
        hold.waiting = counts.get(hold.pk, 0)
    return found


def _waiting(user: User, hold: Hold) -> models.QuerySet[HoldPlacement]:
    model = subjects.get(hold.object_type).model
    return HoldPlacement.objects.filter(
        hold=hold,
        released_at__isnull=True,
        object_id__in=visible(user, model).values("pk"),
    )


@dataclass
class Waiting:
    """A record waiting in a hold, and for how long so far."""

    placement: HoldPlacement
    record: models.Model | None
    waiting_seconds: int

    @property
    def since(self) -> dt.datetime:
        return self.placement.placed_at


def hold_queue(
    user: User, hold: Hold, *, page: int = 1, page_size: int | None = None
) -> tuple[Page, list[Waiting]]:
    """The records the user may see waiting in ``hold``, the longest waiting first. The queue
    is a work list for the people who may release what waits in it: those who may edit records
    of its kind."""
    if not can(user, "edit", hold.object_type):
        raise PermissionDenied(_("You may not edit this kind of record."))
    found = _waiting(user, hold).select_related("placed_by", "hold").order_by("placed_at", "pk")
    result = paginate(found, page, page_size)
    _attach_records(result.items)
    now = clock.now()
    rows = [
        Waiting(p, p.record, max(int((now - p.placed_at).total_seconds()), 0)) for p in result.items
    ]
    return result, rows


def placements_of(user: User, object_type: str, object_id: Any) -> list[HoldPlacement]:
    """The holds a record the user may see waits in, and its earlier stays, newest first."""
    record = _visible_record(user, object_type, object_id)
    return list(
        HoldPlacement.objects.filter(
            content_type=ContentType.objects.get_for_model(type(record)), object_id=record.pk
        )
        .select_related("hold", "placed_by", "released_by")
        .order_by("-placed_at", "-pk")[:50]
    )


def placement(user: User, pk: int) -> HoldPlacement:
    """One stay in a hold, of a record the user may see."""
    found = HoldPlacement.objects.select_related("hold", "placed_by", "released_by").filter(pk=pk)
    found = found.first()
    if found is None:
        raise NotFound(_("No such hold placement."))
    _visible_record(user, found.hold.object_type, found.object_id)
    return found


# Trying rules.

DEFAULT_SAMPLE = 10
MAX_SAMPLE = 50


def dry_run(
    user: User,
    object_type: Any,
    *,
    record_ids: list[int] | None = None,
    sample: int | None = None,
    rule_id: int | None = None,
    rule: dict[str, Any] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What ``engine.dry_run`` says for the chosen records (or a sample of the newest) and
    the chosen rule, a definition not saved yet, or every enabled rule of the kind; with
    ``changes`` (values by field name, as conditions name them), on each record's update by
    them. Faults are reported under their path (``record_ids.1``,
    ``rule.actions.0.values.amount``, ``changes.amount``)."""
    subject = subjects.find(object_type)
    if subject is None:
        raise ValidationFailed(
            {
                "object_type": [
                    _("Choose one of: %(choices)s.")
                    % {"choices": ", ".join(s.object_type for s in subjects.all_subjects())}
                ]
            }
        )
    if not definitions.may_define(user, subject.object_type):
        raise PermissionDenied(_("You may not define rules for this kind of record."))
    errors: dict[str, list[str]] = {}
    chosen = _rules_to_try(user, subject.object_type, rule_id, rule, errors)
    if record_ids and sample:
        errors["sample"] = [_("Give record ids or a sample size, not both.")]
    records: list[models.Model] = []
    if record_ids:
        records, missing = chosen_records(user, subject.object_type, list(record_ids))
        for missing_id in missing:
            errors[f"record_ids.{record_ids.index(missing_id)}"] = [_("No such record.")]
    elif sample is not None and not 1 <= sample <= MAX_SAMPLE:
        errors["sample"] = [
            _("Give a whole number from %(low)d to %(high)d.") % {"low": 1, "high": MAX_SAMPLE}
        ]
    else:
        records = sample_records(user, subject.object_type, sample or DEFAULT_SAMPLE)
    values = _tried_changes(subject, changes, errors) if changes is not None else None
    if errors:
        raise ValidationFailed(errors)
    # The engine's preview writes nothing; the savepoint rolled back makes sure of it.
    with transaction.atomic():
        results = engine.dry_run(chosen, records, values)
        transaction.set_rollback(True)
    return results


def _tried_changes(
    subject: subjects.Subject, changes: Mapping[str, Any], errors: dict[str, list[str]]
) -> dict[str, Any]:
    """The changes of a dry run as the model's values, each checked as its field checks it."""
    fields = cel.fields_by_name(subject.model)
    if not changes:
        errors["changes"] = [_("Give at least one field and its new value.")]
    values = {}
    for name, value in changes.items():
        model_field = fields.get(name)
        if model_field is None or model_field.primary_key:
            errors[f"changes.{name}"] = [_("No such field.")]
            continue
        if value == "" and not model_field.empty_strings_allowed:
            value = None  # an empty box on the form
        if value is None and not model_field.null:
            errors[f"changes.{name}"] = [_("This field cannot be empty.")]
            continue
        try:
            values[name] = model_field.to_python(value)
        except ValidationError as exc:
            errors[f"changes.{name}"] = list(exc.messages)
    return values


def _rules_to_try(
    user: User,
    object_type: str,
    rule_id: int | None,
    rule: dict[str, Any] | None,
    errors: dict[str, list[str]],
) -> list[Rule]:
    if rule_id is not None and rule is not None:
        errors["rule"] = [_("Give a rule id or a rule, not both.")]
        return []
    if rule_id is not None:
        found = Rule.objects.filter(pk=rule_id).first()
        if found is None or not definitions.may_define(user, found.object_type):
            errors["rule_id"] = [_("No such rule.")]
            return []
        if found.object_type != object_type:
            errors["rule_id"] = [_("This rule is about another kind of record.")]
            return []
        return [found]
    if rule is not None:
        rule_errors: dict[str, list[str]] = {}
        values = definitions.checked_rule(user, {"object_type": object_type, **rule}, rule_errors)
        if not rule_errors and values["object_type"] != object_type:
            rule_errors["object_type"] = [_("This rule is about another kind of record.")]
        errors.update({f"rule.{key}": messages for key, messages in rule_errors.items()})
        # Not saved: only what the preview reads is filled in.
        return [] if rule_errors else [Rule(created_by=user, **values)]
    return list(Rule.objects.filter(object_type=object_type, is_enabled=True))


def placement_record(placement: HoldPlacement) -> models.Model | None:
    """The record of a stay in a hold, for a caller that has checked it may see it."""
    model = subjects.get(placement.hold.object_type).model
    return model._default_manager.filter(pk=placement.object_id).first()
