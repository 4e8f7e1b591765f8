"""Approval processes, their published versions, requests and their steps, delegations, and
exception requests.

A process's definition is never edited in place: each publication is an ``ApprovalProcessVersion``
whose steps and actions are kept as checked JSON, so a running request finishes on the version
it started with. A request walks its steps as ``ApprovalStepRun`` rows (a step sent back and run
again gets a new row); each person who may decide a step has one ``ApprovalAssignment``, which
is also where their decision is recorded: its unique ``(step_run, user)`` and the row lock on
the request are what make every decision count exactly once.
"""

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import clock
from trellis.core.i18n import in_language
from trellis.core.models import User


class ApprovalProcess(models.Model):
    """The stable identity of a process; what it does is in its versions."""

    object_type = models.CharField(_("object type"), max_length=40)
    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name (English)"), max_length=100)
    name_ko = models.CharField(_("name (Korean)"), max_length=100, blank=True)
    # Decides exception requests, and gets the steps whose approvers resolve to nobody.
    owner = models.ForeignKey(
        User, verbose_name=_("process owner"), on_delete=models.PROTECT, related_name="+"
    )
    is_active = models.BooleanField(_("active"), default=True)
    # A setting of the process, not part of its versioned definition: it changes how the
    # report reads the history, not how any request runs, so changing it publishes no version
    # and applies at once to every version's requests.
    exception_alert_pct = models.PositiveSmallIntegerField(
        _("exception alert (%)"),
        null=True,
        blank=True,
        help_text=_(
            "The report flags a step whose exception requests per request pass this percentage."
        ),
    )
    # The number of the current published version; also what a client sends back to edit.
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)

    class Meta:
        verbose_name = _("approval process")
        verbose_name_plural = _("approval processes")
        ordering = ["object_type", "name"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return in_language(self.name, self.name_ko)


class ApprovalProcessVersion(models.Model):
    """One published definition. ``steps`` and ``actions`` hold what ``services`` checked."""

    process = models.ForeignKey(ApprovalProcess, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    entry_condition = models.TextField(blank=True, max_length=2000)
    # [{"name", "condition", "when_false", "approvers": [...], "rule", "required",
    #   "timeout_hours", "remind_before_hours", "escalation", "escalate_to", "on_reject"}]
    steps = models.JSONField(default=list)
    material_fields = models.JSONField(default=list)
    editable_fields = models.JSONField(default=list)
    # {"approve": [...], "reject": [...], "recall": [...]}
    actions = models.JSONField(default=dict)
    published_at = models.DateTimeField(default=clock.now)
    published_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["process", "number"], name="approval_version_once")
        ]

    def __str__(self) -> str:
        return f"{self.process_id} v{self.number}"


class ApprovalRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        RECALLED = "recalled", _("recalled")
        CANCELLED = "cancelled", _("cancelled")

    class Origin(models.TextChoices):
        SUBMITTED = "submitted", _("submitted")
        REOPENED = "reopened", _("reopened by a change")
        CLONED = "cloned", _("cloned and resumed")

    process = models.ForeignKey(ApprovalProcess, on_delete=models.PROTECT, related_name="requests")
    process_version = models.ForeignKey(
        ApprovalProcessVersion, on_delete=models.PROTECT, related_name="requests"
    )
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.BigIntegerField()
    submitter = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    origin = models.CharField(max_length=10, choices=Origin, default=Origin.SUBMITTED)
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The position of the step now running, from 0; the last one reached once finished.
    step_index = models.PositiveSmallIntegerField(default=0)
    comment = models.TextField(blank=True, max_length=4000)
    submitted_at = models.DateTimeField(default=clock.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The material fields' values when the request was approved, to see what changed since.
    approved_values = models.JSONField(default=dict, blank=True)
    # Bumped by every change of state.
    version = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["content_type", "object_id"],
                condition=Q(status="pending"),
                name="approval_one_pending_per_record",
            )
        ]
        indexes = [
            models.Index(
                fields=["content_type", "object_id", "-submitted_at"], name="approval_record"
            ),
            models.Index(fields=["process", "status"], name="approval_process_status"),
        ]

    def __str__(self) -> str:
        return _("Approval request #%(n)d") % {"n": self.pk} if self.pk else ""


class ApprovalStepRun(models.Model):
    """One run of one step of a request, with its due times."""

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting for a decision")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        SKIPPED = "skipped", _("skipped")
        CANCELLED = "cancelled", _("cancelled")

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveSmallIntegerField()
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    rule = models.CharField(max_length=10)
    required = models.PositiveSmallIntegerField(default=1)
    started_at = models.DateTimeField(default=clock.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    remind_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # When the sweep next has something to do for this step: the reminder, then the timeout.
    timer_at = models.DateTimeField(null=True, blank=True)
    # Why the step ended as it did when no approver decided it (skipped, escalated, ...).
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["request", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["request", "seq"], name="approval_step_seq_once")
        ]
        indexes = [
            models.Index(
                fields=["timer_at"],
                condition=Q(timer_at__isnull=False),
                name="approval_step_timer_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.request_id}#{self.seq} {self.name}: {self.status}"


class ApprovalAssignment(models.Model):
    """One person who may decide a step, and their decision once made."""

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        # The step ended without this person's decision, or it was handed to someone else.
        CLOSED = "closed", _("no longer needed")

    class Via(models.TextChoices):
        USER = "user", _("named user")
        ROLE = "role", _("role")
        MANAGER = "manager", _("submitter's manager")
        MANAGERS_MANAGER = "managers_manager", _("manager's manager")
        FIELD = "field", _("field of the record")
        FALLBACK = "fallback", _("process owner (no approver found)")
        ESCALATION = "escalation", _("escalation")
        REASSIGNED = "reassigned", _("reassigned by an administrator")

    step_run = models.ForeignKey(
        ApprovalStepRun, on_delete=models.CASCADE, related_name="assignments"
    )
    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    # Set when ``user`` stands in for an approver who is away (delegation).
    on_behalf_of = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    via = models.CharField(max_length=20, choices=Via)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    created_at = models.DateTimeField(default=clock.now)
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True, max_length=4000)
    # The step run's due time again, kept in step by the services, so the inbox reads its
    # first page in due order from one index instead of joining every waiting row first.
    due_at = models.DateTimeField(null=True, blank=True)
    # When the approver's notice and e-mail were written: a task does it after the decision
    # commits, and the sweep does it for an assignment whose task was lost.
    told_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step_run", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "user"], name="approval_assignment_once")
        ]
        indexes = [
            models.Index(
                fields=["user", "request"],
                condition=Q(status="pending"),
                name="approval_inbox",
            ),
            models.Index(
                fields=["user", "due_at", "id"],
                condition=Q(status="pending"),
                name="approval_inbox_due",
            ),
            models.Index(
                fields=["created_at"],
                condition=Q(status="pending", told_at__isnull=True),
                name="approval_untold",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_run_id} {self.user_id}: {self.status}"


class ApprovalEvent(models.Model):
    """One entry of a request's history."""

    class Kind(models.TextChoices):
        SUBMITTED = "submitted", _("submitted")
        STEP_STARTED = "step_started", _("step started")
        STEP_SKIPPED = "step_skipped", _("step skipped")
        STEP_APPROVED = "step_approved", _("step approved")
        STEP_REJECTED = "step_rejected", _("step rejected")
        SENT_BACK = "sent_back", _("sent back to the previous step")
        APPROVED = "approved", _("approved")
        REJECTED = "rejected", _("rejected")
        RECALLED = "recalled", _("recalled")
        CANCELLED = "cancelled", _("cancelled")
        FALLBACK = "fallback", _("no approver found: given to the process owner")
        REMINDED = "reminded", _("reminder sent")
        ESCALATED = "escalated", _("escalated")
        REASSIGNED = "reassigned", _("reassigned")
        ACTION = "action", _("action run")
        ACTION_FAILED = "action_failed", _("action failed")
        EXCEPTION = "exception", _("exception request")
        COMMENT = "comment", _("comment")

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind)
    at = models.DateTimeField(default=clock.now)
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    on_behalf_of = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    step_index = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.request_id} {self.kind}"


class Delegation(models.Model):
    """While it runs, approvals that would go to ``user`` go to ``delegate`` instead."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    delegate = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    starts_at = models.DateTimeField(pgettext_lazy("first day of a period", "from"))
    ends_at = models.DateTimeField(pgettext_lazy("last day of a period", "until"))
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        verbose_name = _("delegation")
        verbose_name_plural = _("delegations")
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="delegation_ends_after_start"
            ),
            models.CheckConstraint(
                condition=~Q(user=F("delegate")), name="delegation_not_to_oneself"
            ),
        ]
        indexes = [models.Index(fields=["user", "ends_at"], name="delegation_user_ends")]

    def __str__(self) -> str:
        return f"{self.user_id} -> {self.delegate_id}"


class ExceptionRequest(models.Model):
    """A request to bend a process for one record, kept whether it is granted or refused."""

    class Kind(models.TextChoices):
        OVERRIDE = "override", _("override a threshold")
        UNLOCK = "unlock", _("unlock the record")
        CANCEL = "cancel", _("cancel the request")
        CLONE = "clone", _("clone and resume from a step")
        CHANGE_TERMS = "change_terms", _("change the terms of an approved record")

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting for a decision")
        GRANTED = "granted", _("granted")
        REFUSED = "refused", _("refused")

    kind = models.CharField(max_length=20, choices=Kind)
    request = models.ForeignKey(
        ApprovalRequest, on_delete=models.PROTECT, related_name="exceptions"
    )
    # The request's process, step and record again, so reports count on one table.
    process = models.ForeignKey(ApprovalProcess, on_delete=models.PROTECT, related_name="+")
    step_index = models.PositiveSmallIntegerField(null=True, blank=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, related_name="+")
    object_id = models.BigIntegerField()
    reason = models.TextField(max_length=4000)
    # What is asked for: the step to resume from, the changed terms ({field: value}).
    data = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(default=clock.now)
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    decided_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True, max_length=4000)
    # A granted unlock lets its requester edit the locked record until then.
    unlocked_until = models.DateTimeField(null=True, blank=True)
    # The request a granted clone started.
    result_request = models.ForeignKey(
        ApprovalRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = _("exception request")
        verbose_name_plural = _("exception requests")
        indexes = [
            models.Index(fields=["content_type", "object_id"], name="approval_exception_record"),
            models.Index(fields=["process", "kind"], name="approval_exception_process"),
            models.Index(
                fields=["status"], condition=Q(status="pending"), name="approval_exception_open"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}: {self.status}"
