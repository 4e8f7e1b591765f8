"""Reads of pipelines for the people who work in them: the kanban board of a pipeline, one of
its columns a page at a time, one card, and a record's stage panel with its history.

Every record comes through ``core.visibility.visible``: a card of a record the user may not
see never shows, and is not counted or summed either. The board costs the same few queries
however many cards it shows: one for the pipeline and its stages, one aggregate for the counts
and sums of every column, and one for the first cards of every column (a window function
numbers the records of each stage, newest-entered first).

The engine knows records only through ``subjects``: which fields hold the stage, when it was
entered, the amount, the currency and the expected close date.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Count, F, Prefetch, Sum
from django.utils.translation import gettext as _

from trellis.core import calendar, clock, registry
from trellis.core.errors import NotFound, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, Team, User
from trellis.core.money import format_money
from trellis.core.visibility import can, visible

from . import subjects
from .models import GatedMove, Pipeline, Stage, StageChange

# Cards per column on the first page of the board, and at most on any page of a column.
PER_STAGE = 50
MAX_PER_STAGE = 100
# A record's panel lists at most this many past stays, the latest ones.
HISTORY_LIMIT = 200

OWNER_ALL = "all"
OWNER_MINE = "mine"


# Filters.


@dataclass(frozen=True)
class Filters:
    """Whose records the board shows: ``owner`` is "all", "mine" or a user's id; ``team`` a
    team's id or None for every team."""

    owner: str = OWNER_ALL
    team: int | None = None

    def apply(self, user: User, records: models.QuerySet) -> models.QuerySet:
        if self.owner == OWNER_MINE:
            records = records.filter(owner_id=user.pk)
        elif self.owner != OWNER_ALL:
            records = records.filter(owner_id=int(self.owner))
        if self.team is not None:
            records = records.filter(team_id=self.team)
        return records

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters, leaving out the defaults."""
        query = {}
        if self.owner != OWNER_ALL:
            query["owner"] = self.owner
        if self.team is not None:
            query["team"] = str(self.team)
        return query


def filters_from(owner: Any = None, team: Any = None) -> Filters:
    """Filters from query parameters; a value that means nothing is a ``ValidationFailed``
    naming it (a misspelt filter must not quietly show everything)."""
    errors: dict[str, list[str]] = {}
    owner_value = OWNER_ALL
    if owner not in (None, ""):
        owner = str(owner).strip()
        if owner in (OWNER_ALL, OWNER_MINE):
            owner_value = owner
        elif owner.isdigit() and 0 < int(owner) < 2**63:
            owner_value = str(int(owner))
        else:
            errors["owner"] = [_('Give "mine", "all" or the id of a user.')]
    team_value = None
    if team not in (None, ""):
        team = str(team).strip()
        if team.isdigit() and 0 < int(team) < 2**63:
            team_value = int(team)
        else:
            errors["team"] = [_("Give the id of a team.")]
    if errors:
        raise ValidationFailed(errors)
    return Filters(owner_value, team_value)


def owner_choices(user: User) -> list[tuple[str, str]]:
    """What the board's owner filter offers: everyone, me, and each active person."""
    people = (
        User.objects.filter(is_active=True)
        .exclude(username=SYSTEM_USERNAME)
        .order_by("first_name", "last_name", "username")
    )
    return [
        (OWNER_ALL, _("Everyone")),
        (OWNER_MINE, _("Mine")),
        *((str(person.pk), str(person)) for person in people if person.pk != user.pk),
    ]


def team_choices() -> list[tuple[str, str]]:
    return [("", _("All teams")), *((str(t.pk), t.name) for t in Team.objects.order_by("name"))]


# Time in a stage.


def over_limit(stage: Stage, entered_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Has a record that entered ``stage`` at ``entered_at`` been there longer than the
    stage's expected maximum dwell time?"""
    if entered_at is None or stage.max_dwell_days is None:
        return False
    due = calendar.add_days(entered_at, stage.max_dwell_days, business=stage.dwell_in_business_days)
    return now > due


# The board.


@dataclass
class Card:
    record: Any
    object_type: str
    stage: Stage
    entered_at: dt.datetime | None
    in_stage: dt.timedelta | None
    over_limit: bool
    amount: Decimal | None = None
    currency: str = ""
    close_date: dt.date | None = None
    # A move into an approve stage waiting for its approval.
    waiting: GatedMove | None = None

    @property
    def pk(self) -> int:
        return self.record.pk

    @property
    def name(self) -> str:
        return str(self.record)

    @property
    def version(self) -> int:
        return self.record.version

    @property
    def owner(self) -> User | None:
        return getattr(self.record, "owner", None)

    @property
    def owner_name(self) -> str:
        owner = self.owner
        return (owner.first_name or owner.username) if owner else ""

    @property
    def days_in_stage(self) -> int | None:
        return self.in_stage.days if self.in_stage is not None else None

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency) if self.amount is not None else ""


@dataclass
class Total:
    currency: str
    amount: Decimal

    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)


@dataclass
class Column:
    stage: Stage
    count: int = 0
    sums: list[Total] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    offset: int = 0  # of the first card shown

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.cards)

    @property
    def has_more(self) -> bool:
        return self.next_offset < self.count


@dataclass
class Board:
    pipeline: Pipeline
    subject: subjects.Subject
    stages: list[Stage]
    columns: list[Column]
    filters: Filters
    per_stage: int

    @property
    def object_type(self) -> str:
        return self.subject.object_type

    @property
    def has_amounts(self) -> bool:
        return bool(self.subject.amount_field)


def pipeline_for(user: User, pk: int) -> Pipeline:
    """A pipeline of a kind of record the user may see, with its active stages in order
    (``active_stages``); any other is ``NotFound``."""
    viewable = [s.object_type for s in subjects.all_subjects() if can(user, "view", s.object_type)]
    pipeline = (
        Pipeline.objects.filter(pk=pk, object_type__in=viewable)
        .prefetch_related(
            Prefetch(
                "stages",
                queryset=Stage.objects.filter(is_active=True).order_by("order"),
                to_attr="active_stages",
            )
        )
        .first()
    )
    if pipeline is None:
        raise NotFound(_("No such pipeline."))
    return pipeline


def _records(user: User, subject: subjects.Subject, filters: Filters) -> models.QuerySet:
    records = visible(user, subject.model)
    if any(f.name == "owner" for f in subject.model._meta.fields):
        records = records.select_related("owner")
    return filters.apply(user, records)


def _card(subject: subjects.Subject, record: Any, stage: Stage, now: dt.datetime) -> Card:
    entered = getattr(record, subject.entered_field)
    return Card(
        record=record,
        object_type=subject.object_type,
        stage=stage,
        entered_at=entered,
        in_stage=(now - entered) if entered else None,
        over_limit=over_limit(stage, entered, now),
        amount=getattr(record, subject.amount_field) if subject.amount_field else None,
        currency=getattr(record, subject.currency_field) if subject.currency_field else "",
        close_date=getattr(record, subject.close_date_field) if subject.close_date_field else None,
    )


def _with_waiting_moves(subject: subjects.Subject, stages: list[Stage], cards: list[Card]) -> None:
    """Mark the cards whose move into an approve stage waits; one query, and none for a
    pipeline without an approve gate."""
    if not cards or not any(s.gate == Stage.Gate.APPROVE for s in stages):
        return
    found = waiting_moves(subject.model, [card.pk for card in cards])
    for card in cards:
        card.waiting = found.get(card.pk)


def _newest_first(subject: subjects.Subject) -> list[Any]:
    # Every record in a stage has the time it entered it, so no NULLs to place.
    return [F(subject.entered_field).desc(), F("pk").desc()]


def _totals(
    subject: subjects.Subject, records: models.QuerySet
) -> tuple[dict[int, int], dict[int, list[Total]]]:
    """Per stage id: how many records, and the sum of their amounts per currency."""
    stage_column = subject.stage_field + "_id"
    counts: dict[int, int] = defaultdict(int)
    sums: dict[int, list[Total]] = defaultdict(list)
    group = [stage_column]
    measures: dict[str, Any] = {"n": Count("pk")}
    if subject.amount_field:
        measures["total"] = Sum(subject.amount_field)
        if subject.currency_field:
            group.append(subject.currency_field)
    rows = records.order_by().values(*group).annotate(**measures)
    for row in sorted(rows, key=lambda r: (r[stage_column], r.get(subject.currency_field, ""))):
        stage_id = row[stage_column]
        counts[stage_id] += row["n"]
        if subject.amount_field and row["total"] is not None:
            currency = row.get(subject.currency_field, "") if subject.currency_field else ""
            sums[stage_id].append(Total(currency, row["total"]))
    return counts, sums


def board(
    user: User, pipeline_pk: int, *, filters: Filters | None = None, per_stage: int = PER_STAGE
) -> Board:
    """The pipeline's active stages in order, each with the number and value of the records
    in it the user may see, and its first ``per_stage`` cards, newest-entered first."""
    filters = filters or Filters()
    per_stage = max(1, min(per_stage, MAX_PER_STAGE))
    pipeline = pipeline_for(user, pipeline_pk)
    subject = subjects.get(pipeline.object_type)
    stages = list(pipeline.active_stages)
    stage_column = subject.stage_field + "_id"
    records = _records(user, subject, filters).filter(
        **{stage_column + "__in": [s.pk for s in stages]}
    )
    counts, sums = _totals(subject, records)
    # One small query per column, each read in order from the (stage, entered) index: a
    # window over the whole pipeline would sort every record in it to keep fifty per stage.
    by_stage = {
        stage.pk: list(
            records.filter(**{stage_column: stage.pk}).order_by(*_newest_first(subject))[:per_stage]
        )
        for stage in stages
    }
    now = clock.now()
    columns = []
    for stage in stages:
        found = by_stage[stage.pk]
        columns.append(
            Column(
                stage=stage,
                count=counts.get(stage.pk, 0),
                sums=sums.get(stage.pk, []),
                cards=[_card(subject, record, stage, now) for record in found],
            )
        )
    _with_waiting_moves(subject, stages, [card for c in columns for card in c.cards])
    return Board(pipeline, subject, stages, columns, filters, per_stage)


def column(
    user: User,
    pipeline_pk: int,
    stage_pk: int,
    *,
    filters: Filters | None = None,
    offset: int = 0,
    limit: int = PER_STAGE,
) -> tuple[Pipeline, Column]:
    """One column of the board from ``offset`` on: the "more" of a long column."""
    filters = filters or Filters()
    limit = max(1, min(limit, MAX_PER_STAGE))
    offset = max(0, offset)
    pipeline = pipeline_for(user, pipeline_pk)
    stage = next((s for s in pipeline.active_stages if s.pk == stage_pk), None)
    if stage is None:
        raise NotFound(_("No such stage."))
    subject = subjects.get(pipeline.object_type)
    records = _records(user, subject, filters).filter(**{subject.stage_field + "_id": stage.pk})
    counts, sums = _totals(subject, records)
    page = list(records.order_by(*_newest_first(subject))[offset : offset + limit])
    now = clock.now()
    cards = [_card(subject, record, stage, now) for record in page]
    _with_waiting_moves(subject, list(pipeline.active_stages), cards)
    return pipeline, Column(
        stage=stage,
        count=counts.get(stage.pk, 0),
        sums=sums.get(stage.pk, []),
        cards=cards,
        offset=offset,
    )


def record_of(user: User, object_type: str, pk: int) -> tuple[subjects.Subject, Any]:
    """A record of a type that runs in pipelines, if the user may see it; else ``NotFound``."""
    try:
        subject = subjects.get(object_type)
    except KeyError:
        raise NotFound(_("This kind of record has no pipelines.")) from None
    records = visible(user, subject.model)
    if any(f.name == "owner" for f in subject.model._meta.fields):
        records = records.select_related("owner")
    record = records.select_related(subject.stage_field).filter(pk=pk).first()
    if record is None:
        raise NotFound(_("No such record."))
    return subject, record


def card(user: User, object_type: str, pk: int) -> Card | None:
    """The card of one record as the board shows it now; None when it is in no stage."""
    subject, record = record_of(user, object_type, pk)
    stage = getattr(record, subject.stage_field)
    if stage is None:
        return None
    found = _card(subject, record, stage, clock.now())
    _with_waiting_moves(subject, list(stage.pipeline.stages.filter(is_active=True)), [found])
    return found


# A record's stage panel.


@dataclass
class Stay:
    """One stretch of time a record spent in one stage."""

    stage: Stage
    entered_at: dt.datetime
    left_at: dt.datetime | None  # None while the record is still there
    spent: dt.timedelta
    actor: User | None  # who moved the record into the stage
    direction: str
    direction_label: str


@dataclass
class Startable:
    pipeline: Pipeline
    stage: Stage  # where the record would enter


@dataclass
class Panel:
    record: Any
    subject: subjects.Subject
    pipeline: Pipeline | None
    stages: list[Stage]
    current: Stage | None
    entered_at: dt.datetime | None
    in_stage: dt.timedelta | None
    over_limit: bool
    activities: list[str]
    history: list[Stay]
    startable: list[Startable]  # pipelines a record in no stage may enter
    can_move: bool
    waiting: GatedMove | None = None  # a move into an approve stage waiting for approval

    @property
    def object_type(self) -> str:
        return self.subject.object_type

    @property
    def days_in_stage(self) -> int | None:
        return self.in_stage.days if self.in_stage is not None else None


def history(record: Any, now: dt.datetime | None = None) -> list[Stay]:
    """The record's stays in stages, oldest first, from its stage-change rows (the latest
    ``HISTORY_LIMIT``)."""
    now = now or clock.now()
    changes = list(
        StageChange.objects.filter(
            content_type=ContentType.objects.get_for_model(type(record)), object_id=record.pk
        )
        .select_related("to_stage", "actor")
        .order_by("-at", "-pk")[:HISTORY_LIMIT]
    )
    changes.reverse()
    labels = dict(StageChange.Direction.choices)
    stays = []
    for index, change in enumerate(changes):
        left = changes[index + 1].at if index + 1 < len(changes) else None
        stays.append(
            Stay(
                stage=change.to_stage,
                entered_at=change.at,
                left_at=left,
                spent=(left or now) - change.at,
                actor=change.actor,
                direction=change.direction,
                direction_label=str(labels.get(change.direction, change.direction)),
            )
        )
    return stays


def panel(user: User, record: Any) -> Panel | None:
    """Where a record the user sees stands in its pipeline; None for a type with none."""
    subject = subjects.for_model(type(record))
    if subject is None:
        return None
    now = clock.now()
    current = None
    stage_id = getattr(record, subject.stage_field + "_id")
    if stage_id is not None:
        current = Stage.objects.select_related("pipeline").get(pk=stage_id)
    can_move = can(user, "edit", subject.object_type)
    pipeline, stages, startable = None, [], []
    if current is not None:
        pipeline = current.pipeline
        stages = [s for s in pipeline.stages.order_by("order") if s.is_active or s.pk == current.pk]
    else:
        pipelines = Pipeline.objects.filter(
            object_type=subject.object_type, is_active=True
        ).order_by("-is_default", "name")
        for candidate in pipelines.prefetch_related(
            Prefetch(
                "stages",
                queryset=Stage.objects.filter(is_active=True, kind=Stage.Kind.OPEN).order_by(
                    "order"
                ),
                to_attr="open_stages",
            )
        ):
            if candidate.open_stages:
                startable.append(Startable(candidate, candidate.open_stages[0]))
    entered = getattr(record, subject.entered_field) if current else None
    return Panel(
        record=record,
        subject=subject,
        pipeline=pipeline,
        stages=stages,
        current=current,
        entered_at=entered,
        in_stage=(now - entered) if entered else None,
        over_limit=over_limit(current, entered, now) if current else False,
        activities=current.activities() if current else [],
        history=history(record, now),
        startable=startable,
        can_move=can_move,
        waiting=_waiting_move(record, stages),
    )


# Moves waiting for approval (the approve gate).


def _waiting_move(record: Any, stages: list[Stage]) -> GatedMove | None:
    if not any(s.gate == Stage.Gate.APPROVE for s in stages):
        return None
    return waiting_move(record)


def waiting_move(record: models.Model) -> GatedMove | None:
    """The move of ``record`` into an approve stage that waits for its approval, if any."""
    return (
        GatedMove.objects.filter(
            content_type=ContentType.objects.get_for_model(type(record)),
            object_id=record.pk,
            request__status="pending",
        )
        .select_related("to_stage", "request__process")
        .first()
    )


def waiting_moves(model: type[models.Model], ids: Sequence[int]) -> dict[int, GatedMove]:
    """Per record id, the move waiting for approval, for the records among ``ids`` with one."""
    if not ids:
        return {}
    found = GatedMove.objects.filter(
        content_type=ContentType.objects.get_for_model(model),
        object_id__in=list(ids),
        request__status="pending",
    ).select_related("to_stage", "request__process")
    return {gated.object_id: gated for gated in found}


def record_label(object_type: str) -> str:
    return registry.get(object_type).label
