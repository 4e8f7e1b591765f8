"""Rules, their runs and timers; holds and the records waiting in them."""

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from trellis.core import clock
from trellis.core.i18n import in_language
from trellis.core.models import User


class Hold(models.Model):
    """A named waiting area. While a record is in it, the changes it blocks are refused: a
    field taking a given value (``{"field": "status", "value": "fulfilled"}``), or a task of a
    given type on the record (``{"task_type": "shipping"}``)."""

    object_type = models.CharField(_("object type"), max_length=40)
    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name (English)"), max_length=100)
    name_ko = models.CharField(_("name (Korean)"), max_length=100, blank=True)
    # CEL over the record; empty for a hold that is only released by hand or by a rule.
    release_condition = models.TextField(_("release condition"), blank=True)
    blocks = models.JSONField(_("blocks"), default=list, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)

    class Meta:
        verbose_name = _("hold")
        verbose_name_plural = _("holds")
        ordering = ["object_type", "name"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return in_language(self.name, self.name_ko)


class HoldPlacement(models.Model):
    """One stay of one record in a hold; ``released_at`` is empty while it waits."""

    hold = models.ForeignKey(Hold, on_delete=models.CASCADE, related_name="placements")
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    placed_at = models.DateTimeField(default=clock.now)
    placed_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Why: the rule that placed it, or the person's note.
    reason = models.CharField(max_length=300, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    release_note = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hold", "content_type", "object_id"],
                condition=Q(released_at__isnull=True),
                name="hold_placement_waiting",
            )
        ]
        indexes = [
            models.Index(
                fields=["content_type", "object_id"],
                condition=Q(released_at__isnull=True),
                name="hold_placement_record",
            ),
            models.Index(fields=["hold", "released_at", "placed_at"], name="hold_placement_queue"),
        ]

    def __str__(self) -> str:
        return f"{self.hold_id} {self.content_type_id}:{self.object_id}"


class Rule(models.Model):
    class Trigger(models.TextChoices):
        CREATED = "created", _("created")
        UPDATED = "updated", _("updated")
        FIELD_CHANGED = "field_changed", _("a field changed")
        STAGE_ENTERED = "stage_entered", _("stage entered")
        STAGE_LEFT = "stage_left", _("stage left")
        APPROVAL_APPROVED = "approval_approved", _("approval approved")
        APPROVAL_REJECTED = "approval_rejected", _("approval rejected")
        TASK_COMPLETED = "task_completed", _("task completed")
        HOLD_RELEASED = "hold_released", _("hold released")
        TIME = "time", _("time relative to a date")

    class Mode(models.TextChoices):
        NEWLY = "newly", _("only when the record newly meets the condition")
        EVERY = "every", _("every time the trigger matches")

    object_type = models.CharField(_("object type"), max_length=40)
    name = models.CharField(_("name"), max_length=100)
    is_enabled = models.BooleanField(_("enabled"), default=True)
    # An explicit place in the order; rules without one run after, oldest first. Two rules
    # that write the same field on the same trigger must both have one (see ``graph``).
    position = models.PositiveIntegerField(_("order"), null=True, blank=True)
    trigger = models.CharField(_("trigger"), max_length=20, choices=Trigger)
    # What narrows the trigger, checked by the service: field, from, to, stage, process,
    # task_type, hold; for time: field, offset, unit, direction.
    trigger_params = models.JSONField(default=dict, blank=True)
    condition = models.TextField(_("condition"), blank=True)
    mode = models.CharField(_("runs"), max_length=10, choices=Mode, default=Mode.NEWLY)
    actions = models.JSONField(default=list)
    throttle_per_hour = models.PositiveSmallIntegerField(_("runs per record per hour"), default=10)
    # What the engine keeps between runs (the last person a round robin assigned).
    state = models.JSONField(default=dict, blank=True, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)

    class Meta:
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        ordering = [models.F("position").asc(nulls_last=True), "id"]
        indexes = [models.Index(fields=["object_type", "trigger"], name="rule_trigger")]

    def __str__(self) -> str:
        return self.name


class RuleRun(models.Model):
    class Outcome(models.TextChoices):
        FIRED = "fired", _("fired")
        SKIPPED = "skipped", _("skipped by condition")
        FAILED = "failed", _("failed")
        THROTTLED = "throttled", _("stopped by its throttle")
        STOPPED = "stopped", _("stopped: cascade too deep")

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="runs")
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    at = models.DateTimeField(default=clock.now)
    outcome = models.CharField(max_length=10, choices=Outcome)
    # The event that fired the rule ("opportunity.updated", "time"), and how deep in a cascade.
    event = models.CharField(max_length=60)
    depth = models.PositiveSmallIntegerField(default=0)
    # What each action did, or the error that stopped one.
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["rule", "-at"], name="rule_run_history"),
            models.Index(fields=["content_type", "object_id", "-at"], name="rule_run_record"),
            models.Index(
                fields=["rule", "content_type", "object_id", "at"],
                condition=Q(outcome="fired"),
                name="rule_run_throttle",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.content_type_id}:{self.object_id} {self.outcome}"


class RuleTimer(models.Model):
    """When a time rule next fires for one record. ``planned_from`` is the date field's value
    the time was computed from; once fired, ``due_at`` is emptied and the row stays, so the
    same date does not fire twice, and a changed date plans it again."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="timers")
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    planned_from = models.CharField(max_length=40)
    due_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "content_type", "object_id"], name="rule_timer_record"
            )
        ]
        indexes = [
            models.Index(
                fields=["due_at"], condition=Q(due_at__isnull=False), name="rule_timer_due"
            ),
            models.Index(fields=["content_type", "object_id"], name="rule_timer_by_record"),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.content_type_id}:{self.object_id} {self.due_at}"
