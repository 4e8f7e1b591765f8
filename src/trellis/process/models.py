"""Task threads: work handed from person to person, each step asking "what is next?".

A ``Thread`` is the chain of tasks about one piece of work, optionally about one record of any
type (an opportunity, a case, ...). Each ``Task`` has exactly one assignee: a user, a team's
queue, or an external participant known only by e-mail, who acts through an ``ExternalLink``
or by replying to the task's e-mail. ``TaskEvent`` rows are a task's history, so a thread's
timeline is its tasks' events in order.
"""

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import clock
from trellis.core.i18n import in_language
from trellis.core.models import Team, User
from trellis.mail.models import InboundMessage, OutboundMessage

# Approvals and pipelines live in their own packages; importing them here registers them with
# the app.
from .approvals.models import (  # noqa: F401
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalProcessVersion,
    ApprovalRequest,
    ApprovalStepRun,
    Delegation,
    ExceptionRequest,
)
from .automations.models import Hold, HoldPlacement, Rule, RuleRun, RuleTimer  # noqa: F401
from .pipelines.models import (  # noqa: F401
    Alert,
    AlertDigest,
    AlertNotice,
    AlertRule,
    AlertTimer,
    BlackoutWindow,
    Pipeline,
    PipelineSnapshot,
    Stage,
    StageChange,
    StageDay,
    StageDwellBucket,
)


class TaskType(models.Model):
    """A kind of task the admin defines, named in both languages."""

    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name (English)"), max_length=100)
    name_ko = models.CharField(_("name (Korean)"), max_length=100, blank=True)
    requires_next_step = models.BooleanField(
        _("requires the next step"),
        default=False,
        help_text=_(
            "Completing a task of this type asks for the next task, or for a statement that "
            "the thread is finished."
        ),
    )
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("task type")
        verbose_name_plural = _("task types")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """The name in the active language; the English one when no Korean name is given."""
        return in_language(self.name, self.name_ko)


class Thread(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("open")
        FINISHED = "finished", _("finished")

    title = models.CharField(_("title"), max_length=300)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.OPEN)
    # The record the work is about; both empty for a free-standing thread.
    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    object_id = models.BigIntegerField(null=True, blank=True)
    record = GenericForeignKey("content_type", "object_id")
    created_by = models.ForeignKey(
        User, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    finished_by = models.ForeignKey(
        User,
        verbose_name=_("finished by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("thread")
        verbose_name_plural = _("threads")
        indexes = [
            models.Index(fields=["content_type", "object_id", "created_at"], name="thread_record")
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(content_type__isnull=True, object_id__isnull=True)
                | Q(content_type__isnull=False, object_id__isnull=False),
                name="thread_record_whole",
            )
        ]

    def __str__(self) -> str:
        return self.title


class Task(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("open")
        IN_PROGRESS = "in_progress", _("in progress")
        WAITING = "waiting", _("waiting on someone")
        DONE = "done", _("done")
        CANCELLED = "cancelled", _("cancelled")

    class Priority(models.TextChoices):
        LOW = "low", _("low")
        NORMAL = "normal", _("normal")
        HIGH = "high", _("high")
        URGENT = "urgent", _("urgent")

    class Assignee(models.TextChoices):
        USER = "user", _("a user")
        TEAM = "team", _("a team's queue")
        EXTERNAL = "external", _("an external participant")

    thread = models.ForeignKey(
        Thread, verbose_name=_("thread"), on_delete=models.PROTECT, related_name="tasks"
    )
    title = models.CharField(_("title"), max_length=300)
    description = models.TextField(_("description"), blank=True)
    task_type = models.ForeignKey(
        TaskType,
        verbose_name=_("type"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    assignee_kind = models.CharField(_("assigned to"), max_length=10, choices=Assignee)
    # The user who holds the task. Named ``owner`` because ``core.visibility`` filters on it:
    # with the "own" scope a user sees the tasks they hold.
    owner = models.ForeignKey(
        User,
        verbose_name=_("assignee"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # The queue of a team task; for a user's task their team, for an external participant's
    # the team of whoever handed it out, so that the "team" scope shows a team its work.
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    external_email = models.EmailField(_("participant's e-mail"), max_length=254, blank=True)
    external_name = models.CharField(_("participant's name"), max_length=200, blank=True)
    # The language of the e-mail an external participant gets.
    language = models.CharField(_("language"), max_length=10, default="en")
    due_at = models.DateTimeField(_("due"), null=True, blank=True)
    priority = models.CharField(
        _("priority"), max_length=10, choices=Priority, default=Priority.NORMAL
    )
    status = models.CharField(_("status"), max_length=20, choices=Status, default=Status.OPEN)
    created_by = models.ForeignKey(
        User, verbose_name=_("created by"), on_delete=models.PROTECT, related_name="+"
    )
    # Who gave the task to its current assignee, and when.
    assigned_by = models.ForeignKey(
        User,
        verbose_name=_("assigned by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    assigned_at = models.DateTimeField(_("assigned"), default=clock.now)
    # The task whose completion asked for this one.
    handed_from = models.ForeignKey(
        "self",
        verbose_name=_("handed on from"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="handed_to",
    )
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    # Empty when an external participant completed it (the event names their address).
    completed_by = models.ForeignKey(
        User,
        verbose_name=_("completed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)
    # When the reminder sweep next has something to send for this task (see ``reminders``);
    # empty when nothing is left to send.
    next_reminder_at = models.DateTimeField(null=True, blank=True, editable=False)
    reminded_before_at = models.DateTimeField(null=True, blank=True, editable=False)
    reminded_overdue_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
        indexes = [
            models.Index(fields=["owner", "status", "due_at"], name="task_owner"),
            models.Index(fields=["team", "status", "due_at"], name="task_team"),
            models.Index(fields=["assigned_by", "status", "-id"], name="task_assigned_by"),
            models.Index(fields=["thread", "created_at", "id"], name="task_thread"),
            models.Index(fields=["status", "-id"], name="task_status"),
            models.Index(fields=["next_reminder_at"], name="task_reminder_due"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(assignee_kind="user", owner__isnull=False, external_email="")
                | Q(assignee_kind="team", owner__isnull=True, external_email="")
                | (Q(assignee_kind="external", owner__isnull=True) & ~Q(external_email="")),
                name="task_one_assignee",
            )
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_closed(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.CANCELLED)


class TaskEvent(models.Model):
    """One entry in a task's history; ``public`` ones are shared with external participants."""

    class Kind(models.TextChoices):
        CREATED = "created", _("created")
        ASSIGNED = "assigned", _("assigned")
        CLAIMED = "claimed", pgettext_lazy("task event", "claimed")
        STATUS = "status", _("status changed")
        EDITED = "edited", _("edited")
        COMMENTED = "commented", _("comment")
        MAIL_REPLY = "mail_reply", _("reply by e-mail")
        ATTACHED = "attached", _("file attached")
        COMPLETED = "completed", _("completed")
        REMINDER = "reminder", _("reminder sent")
        LINK_ISSUED = "link_issued", _("link sent")
        LINK_USED = "link_used", _("link used")
        LINK_REVOKED = "link_revoked", _("link revoked")

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")
    # The task's thread again, so that a thread's timeline is one indexed range.
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind)
    at = models.DateTimeField(default=clock.now)
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The author when an external participant acted (through their link or by e-mail).
    external_email = models.EmailField(max_length=254, blank=True)
    body = models.TextField(blank=True)
    public = models.BooleanField(_("shared with the external participant"), default=False)
    # Kind-specific facts, e.g. {"from": {...}, "to": {...}} for a reassignment.
    data = models.JSONField(default=dict)
    inbound = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outbound = models.ForeignKey(
        OutboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["task", "at", "id"], name="task_event_task"),
            models.Index(fields=["thread", "at", "id"], name="task_event_thread"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} {self.kind} {self.at:%Y-%m-%d %H:%M}"


class TaskAttachment(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attachments")
    event = models.ForeignKey(
        TaskEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    filename = models.CharField(_("file name"), max_length=200)
    content_type = models.CharField(_("type"), max_length=100)
    size = models.PositiveIntegerField(_("size"))
    data = models.BinaryField()
    # False for a forbidden type or an oversized file that came by e-mail: kept, never served.
    allowed = models.BooleanField(default=True)
    public = models.BooleanField(_("shared with the external participant"), default=False)
    uploaded_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_by_email = models.EmailField(max_length=254, blank=True)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.filename


class ExternalLink(models.Model):
    """A link that lets an external participant act on one task without an account.

    Only the SHA-256 of its token is kept. It stops working when it expires, when it is
    revoked, and, for anything but reading, when the task is done or cancelled.
    """

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="links")
    email = models.EmailField(_("e-mail"), max_length=254)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(_("created"), default=clock.now)
    created_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(_("expires"))
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("external link")
        verbose_name_plural = _("external links")
        indexes = [models.Index(fields=["task", "-id"], name="external_link_task")]

    def __str__(self) -> str:
        return f"{self.email} / {self.task_id}"


class ExternalLinkUse(models.Model):
    """Every use of an external link, refused ones included."""

    class Outcome(models.TextChoices):
        OK = "ok", _("allowed")
        EXPIRED = "expired", _("refused: expired")
        REVOKED = "revoked", _("refused: revoked")
        CLOSED = "closed", _("refused: the task is closed")

    link = models.ForeignKey(ExternalLink, on_delete=models.CASCADE, related_name="uses")
    at = models.DateTimeField(default=clock.now)
    action = models.CharField(max_length=20)
    outcome = models.CharField(max_length=10, choices=Outcome)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["link", "at"], name="external_link_use")]

    def __str__(self) -> str:
        return f"{self.link_id} {self.action} {self.outcome}"


class Notification(models.Model):
    """A message to a user inside Trellis (reminders, hand-offs); read or not."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    text = models.CharField(max_length=500)
    link = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=clock.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "read_at", "-id"], name="notification_user")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.text}"


class TaskMailSettings(models.Model):
    """A user's choice of task e-mail: one per task event, or one digest a day."""

    user = models.OneToOneField(User, primary_key=True, on_delete=models.CASCADE, related_name="+")
    daily_digest = models.BooleanField(_("daily digest"), default=False)
    # The local day the last digest went out: never two on one day.
    last_digest_on = models.DateField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["daily_digest", "last_digest_on"], name="task_mail_digest_due")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {'digest' if self.daily_digest else 'each'}"


class RefusedReply(models.Model):
    """A quarantined message the refusal sweep has looked at, and the answer it sent, if any.

    A reply a task does not take is quarantined by the mail layer, which rolls back whatever
    the reply handler wrote, the answer to the sender included; the sweep answers afterwards
    (see ``mailreplies.answer_refused``), once per message.
    """

    inbound = models.OneToOneField(
        InboundMessage, primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    checked_at = models.DateTimeField(default=clock.now)
    answer = models.ForeignKey(
        OutboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.inbound_id}: {'answered' if self.answer_id else 'checked'}"
