"""Pipelines, their stages, and the history of moves between stages."""

from django.contrib.contenttypes.models import ContentType
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import clock
from trellis.core.i18n import in_language
from trellis.core.models import User

from ..approvals.models import ApprovalProcess, ApprovalRequest


class Pipeline(models.Model):
    """An ordered set of stages for one object type; a type may have several."""

    object_type = models.CharField(_("object type"), max_length=40)
    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name (English)"), max_length=100)
    name_ko = models.CharField(_("name (Korean)"), max_length=100, blank=True)
    # The pipeline a new record of the type enters when none is named.
    is_default = models.BooleanField(_("default for its object type"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)

    class Meta:
        verbose_name = _("pipeline")
        verbose_name_plural = _("pipelines")
        ordering = ["object_type", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["object_type"],
                condition=Q(is_default=True),
                name="pipeline_one_default_per_type",
            )
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return in_language(self.name, self.name_ko)


class Stage(models.Model):
    class Kind(models.TextChoices):
        OPEN = "open", _("open")
        WON = "won", _("won")
        LOST = "lost", _("lost")

    class Gate(models.TextChoices):
        FREE = "free", _("free")
        WARN = "warn", _("warn")
        REQUIRE = "require", _("require")
        APPROVE = "approve", _("approve")

    pipeline = models.ForeignKey(
        Pipeline, verbose_name=_("pipeline"), on_delete=models.CASCADE, related_name="stages"
    )
    code = models.SlugField(_("code"), max_length=40)
    name = models.CharField(_("name (English)"), max_length=100)
    name_ko = models.CharField(_("name (Korean)"), max_length=100, blank=True)
    order = models.PositiveSmallIntegerField(pgettext_lazy("position in a list", "order"))
    kind = models.CharField(_("kind"), max_length=4, choices=Kind, default=Kind.OPEN)
    probability = models.PositiveSmallIntegerField(
        _("default probability"), default=0, validators=[MaxValueValidator(100)]
    )
    # How long a record is expected to stay at most; empty for no limit.
    max_dwell_days = models.PositiveSmallIntegerField(
        _("expected maximum dwell time (days)"), null=True, blank=True
    )
    dwell_in_business_days = models.BooleanField(_("count business days"), default=False)
    # What people are expected to do in the stage, as a checklist: [{"en": ..., "ko": ...}].
    expected_activities = models.JSONField(_("expected activities"), default=list, blank=True)
    gate = models.CharField(_("gate"), max_length=8, choices=Gate, default=Gate.FREE)
    # A CEL condition over the record's fields, for the warn and require gates.
    gate_condition = models.TextField(_("gate condition"), blank=True, max_length=2000)
    gate_message = models.CharField(_("gate message (English)"), max_length=300, blank=True)
    gate_message_ko = models.CharField(_("gate message (Korean)"), max_length=300, blank=True)
    # For the approve gate: entering the stage submits the record to this process.
    approval_process = models.ForeignKey(
        ApprovalProcess,
        verbose_name=_("approval process"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # A stage that has been used is never deleted, only retired, so history keeps its name.
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("stage")
        verbose_name_plural = _("stages")
        ordering = ["pipeline", "order"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "code"], name="stage_code_per_pipeline")
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return in_language(self.name, self.name_ko)

    @property
    def message(self) -> str:
        return in_language(self.gate_message, self.gate_message_ko)

    def activities(self) -> list[str]:
        """The expected activities in the active language."""
        return [in_language(item["en"], item.get("ko", "")) for item in self.expected_activities]


class StageChange(models.Model):
    """One move of one record: from, to, when, who, and the deal as it stood at that moment.

    ``from_entered_at`` is when the record entered ``from_stage``, so the time spent there is
    ``at - from_entered_at`` on this one row: time-in-stage reports are plain aggregates.
    """

    class Direction(models.TextChoices):
        ENTERED = "entered", _("entered the pipeline")
        FORWARD = "forward", _("forward")
        BACKWARD = "backward", _("backward")

    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="+")
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.BigIntegerField()
    from_stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="+")
    direction = models.CharField(max_length=8, choices=Direction)
    at = models.DateTimeField(default=clock.now)
    from_entered_at = models.DateTimeField(null=True, blank=True)
    actor = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    owner = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    amount = models.DecimalField(max_digits=18, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    expected_close_date = models.DateField(null=True, blank=True)
    probability = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["content_type", "object_id", "at"], name="stage_change_record"),
            models.Index(fields=["pipeline", "at"], name="stage_change_pipeline_at"),
            models.Index(fields=["to_stage", "at"], name="stage_change_to_at"),
            models.Index(fields=["from_stage", "at"], name="stage_change_from_at"),
        ]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_id} {self.from_stage_id}->{self.to_stage_id}"


class GatedMove(models.Model):
    """A move into a stage with an ``approve`` gate, waiting for its approval request. The
    record stays where it was until the request is approved; the move is then made
    (``change``). A rejected, recalled or cancelled request leaves the record where it is."""

    request = models.OneToOneField(
        ApprovalRequest, on_delete=models.CASCADE, related_name="gated_move"
    )
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.BigIntegerField()
    from_stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_stage = models.ForeignKey(Stage, on_delete=models.PROTECT, related_name="+")
    # Who asked for the move: the submitter of the request, and the actor of the move made.
    mover = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField(default=clock.now)
    change = models.OneToOneField(
        StageChange, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["content_type", "object_id"], name="gated_move_record")]

    def __str__(self) -> str:
        return f"{self.content_type_id}:{self.object_id} ->{self.to_stage_id} ({self.request_id})"


class BlackoutWindow(models.Model):
    """A stretch of the calendar when a pipeline's work is known to stall, e.g. "no travel
    approvals after week 11 of the quarter". Either fixed dates, or the same weeks of every
    quarter; reports name a window as the cause of a bottleneck that falls in it."""

    pipeline = models.ForeignKey(
        Pipeline, verbose_name=_("pipeline"), on_delete=models.CASCADE, related_name="blackouts"
    )
    # The stage it holds up; empty for the whole pipeline.
    stage = models.ForeignKey(
        Stage,
        verbose_name=_("stage"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    name = models.CharField(_("name (English)"), max_length=200)
    name_ko = models.CharField(_("name (Korean)"), max_length=200, blank=True)
    starts_on = models.DateField(
        pgettext_lazy("first day of a period", "from"), null=True, blank=True
    )
    ends_on = models.DateField(pgettext_lazy("last day of a period", "to"), null=True, blank=True)
    # Weeks 1 to 14 of every quarter, counted from the quarter's first day.
    quarter_week_from = models.PositiveSmallIntegerField(
        _("from week of the quarter"), null=True, blank=True
    )
    quarter_week_to = models.PositiveSmallIntegerField(
        _("to week of the quarter"), null=True, blank=True
    )

    class Meta:
        verbose_name = _("blackout window")
        verbose_name_plural = _("blackout windows")
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(starts_on__isnull=False, ends_on__isnull=False)
                    & Q(quarter_week_from__isnull=True, quarter_week_to__isnull=True)
                )
                | (
                    Q(starts_on__isnull=True, ends_on__isnull=True)
                    & Q(quarter_week_from__isnull=False, quarter_week_to__isnull=False)
                ),
                name="blackout_dates_or_quarter_weeks",
            )
        ]

    def __str__(self) -> str:
        return in_language(self.name, self.name_ko)


class PipelineSnapshot(models.Model):
    """A pipeline's open value as it stood at the end of a day, per stage, owner and currency,
    so that trends can be drawn. Written once a day by the snapshot job; never changed."""

    day = models.DateField()
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    currency = models.CharField(max_length=3, blank=True)
    records = models.PositiveIntegerField(default=0)
    amount = models.DecimalField(max_digits=20, decimal_places=2, default=0)
    weighted_amount = models.DecimalField(max_digits=20, decimal_places=2, default=0)

    class Meta:
        indexes = [models.Index(fields=["pipeline", "day"], name="pipeline_snapshot_day")]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "stage", "owner", "currency"], name="pipeline_snapshot_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.stage_id} {self.owner_id}: {self.records}"


# The stage changes summed per day ahead of time, so that the funnel and time-in-stage reports
# read thousands of rows instead of millions (see ``rollups``). The owner is the user id of
# the record's owner at the time of the move (0 for none): a plain integer, so that rows
# without an owner still meet in the unique key that the upserts rely on.


class StageDay(models.Model):
    """Per stage, local day and owner: the stage entries that day (``entered``), how many of
    those entries later left forward to a stage that is not lost (``converted``, counted on
    the day of the entry), and the longest stay of the exits that day."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    owner_pk = models.IntegerField(default=0)
    entered = models.IntegerField(default=0)
    converted = models.IntegerField(default=0)
    dwell_max = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["pipeline", "day"], name="stage_day_pipeline_day")]
        constraints = [
            models.UniqueConstraint(fields=["stage", "day", "owner_pk"], name="stage_day_unique")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.stage_id} {self.owner_pk}: {self.entered} entered"


class StageDwellBucket(models.Model):
    """Per stage, local day of the exit and owner: how many exits stayed a time that falls in
    ``bucket`` (see ``rollups.bucket_of``), and the sum of those stays in seconds, from which
    medians are read without the rows of the moves."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    owner_pk = models.IntegerField(default=0)
    bucket = models.SmallIntegerField()
    count = models.IntegerField(default=0)
    dwell_sum = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["pipeline", "day"], name="stage_dwell_pipeline_day")]
        constraints = [
            models.UniqueConstraint(
                fields=["stage", "day", "owner_pk", "bucket"], name="stage_dwell_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.stage_id} {self.owner_pk} [{self.bucket}]: {self.count}"


# Watching the process: alert rules, their timers, and the alerts they fire.


class AlertRule(models.Model):
    """One kind of alert a pipeline watches for, with its threshold and who is told.

    ``threshold`` means something different for each kind (see ``THRESHOLDS`` in ``alerts``):
    days of grace, days without activity, a number of push-outs, stages back, or a percent.
    """

    class Kind(models.TextChoices):
        OVER_DWELL = "over_dwell", _("over the stage's dwell limit")
        PAST_CLOSE = "past_close", _("past the expected close date")
        CLOSE_PUSHED = "close_pushed", _("expected close date pushed out")
        STALLED = "stalled", _("stalled (no activity)")
        NO_NEXT_STEP = "no_next_step", _("no next step planned")
        MOVED_BACKWARD = "moved_backward", _("moved backward")
        AMOUNT_DROPPED = "amount_dropped", _("amount decreased")
        TASK_OVERDUE = "task_overdue", _("activity deadline missed")

    pipeline = models.ForeignKey(
        Pipeline, verbose_name=_("pipeline"), on_delete=models.CASCADE, related_name="alert_rules"
    )
    kind = models.CharField(_("kind"), max_length=20, choices=Kind)
    threshold = models.PositiveIntegerField(_("threshold"), default=0)
    is_active = models.BooleanField(_("active"), default=True)
    notify_owner = models.BooleanField(_("tell the owner"), default=True)
    notify_manager = models.BooleanField(_("tell the owner's manager"), default=False)
    email_digest = models.BooleanField(_("in the daily e-mail digest"), default=True)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)
    # The pipeline version the rule's timers were last planned for; empty until they are.
    # When it differs from the pipeline's (its stages changed) or is empty (the rule changed),
    # the planning sweep walks the pipeline's records from ``plan_cursor`` on.
    planned_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # The walk in progress: the pipeline version it plans for, and the last record planned.
    planning_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    plan_cursor = models.BigIntegerField(default=0, editable=False)

    class Meta:
        verbose_name = _("alert rule")
        verbose_name_plural = _("alert rules")
        ordering = ["pipeline", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "kind"], name="alert_rule_kind_once")
        ]

    def __str__(self) -> str:
        return f"{self.pipeline_id}: {self.kind}"


class Alert(models.Model):
    """One occurrence of a rule's cause on one record: fired once, cleared when the cause goes
    away. The unique ``(rule, record, occurrence)`` is what keeps two sweeps from firing one
    occurrence twice."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    # The rule's pipeline and kind again, so that lists filter on one indexed table.
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=AlertRule.Kind)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    occurrence = models.CharField(max_length=100)
    # The stage the record was in when the alert fired.
    stage = models.ForeignKey(
        Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    owner = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    fired_at = models.DateTimeField(default=clock.now)
    cleared_at = models.DateTimeField(null=True, blank=True)
    # What the alert is about, for its text: e.g. {"days": 12, "limit": 10}.
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "content_type", "object_id", "occurrence"],
                name="alert_once_per_occurrence",
            )
        ]
        indexes = [
            models.Index(
                fields=["pipeline", "-fired_at"],
                condition=Q(cleared_at__isnull=True),
                name="alert_open_pipeline",
            ),
            models.Index(
                fields=["owner", "-fired_at"],
                condition=Q(cleared_at__isnull=True),
                name="alert_open_owner",
            ),
            models.Index(fields=["content_type", "object_id", "cleared_at"], name="alert_record"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.content_type_id}:{self.object_id} {self.occurrence}"


class AlertTimer(models.Model):
    """When a time-based rule next has something to check on one record.

    One row per rule, record and ``slot`` ("dwell", "close", "stalled", "next_step", or
    "task:<id>" for each open task with a due time). ``occurrence`` names what fires at
    ``due_at``; once it has fired, ``due_at`` is emptied and the row stays, so that the same
    occurrence is not planned again. ``since`` is the moment the timer counts from, where that
    is not in the record itself (the last activity; the moment the last open task closed).
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="timers")
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    slot = models.CharField(max_length=40)
    occurrence = models.CharField(max_length=100)
    due_at = models.DateTimeField(null=True, blank=True)
    since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "content_type", "object_id", "slot"], name="alert_timer_slot"
            )
        ]
        indexes = [
            models.Index(
                fields=["due_at"], condition=Q(due_at__isnull=False), name="alert_timer_due"
            ),
            models.Index(fields=["content_type", "object_id"], name="alert_timer_record"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.content_type_id}:{self.object_id} {self.slot} {self.due_at}"


class AlertNotice(models.Model):
    """Who was told of an alert; ``digest_pending`` until it went out in their e-mail digest."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notices")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=clock.now)
    digest_pending = models.BooleanField(default=False)
    digested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["alert", "user"], name="alert_notice_once")]
        indexes = [
            models.Index(
                fields=["user", "alert"],
                condition=Q(digest_pending=True),
                name="alert_notice_digest_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.alert_id} -> {self.user_id}"


class AlertDigest(models.Model):
    """The local day a user's last alert digest went out: never two on one day."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    last_sent_on = models.DateField()

    def __str__(self) -> str:
        return f"{self.user_id}: {self.last_sent_on}"
