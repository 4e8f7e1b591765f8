"""Support cases: one tracking number, one owner, one timeline of public and internal events."""

from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import clock
from trellis.core.models import Team, User
from trellis.crm.models import Account, Contact, Product
from trellis.mail.models import InboundMessage, OutboundMessage


class Case(models.Model):
    class Status(models.TextChoices):
        NEW = "new", _("new")
        OPEN = "open", _("open")
        WAITING_ON_CUSTOMER = "waiting_on_customer", _("waiting on customer")
        IN_PROGRESS = "in_progress", _("fix in progress")
        RESOLVED = "resolved", _("resolved")
        CLOSED = "closed", _("closed")

    class Kind(models.TextChoices):
        UNCLASSIFIED = "unclassified", _("not classified")
        DEFECT = "defect", _("defect")
        FEATURE_REQUEST = "feature_request", _("feature request")
        QUESTION = "question", _("question / how-to")
        BILLING = "billing", _("billing")
        OTHER = "other", _("other")

    class Channel(models.TextChoices):
        EMAIL = "email", _("e-mail")
        WEB = "web", _("web form")
        API = "api", _("API")
        PHONE = "phone", pgettext_lazy("case channel", "phone")

    class Priority(models.TextChoices):
        LOW = "low", _("low")
        NORMAL = "normal", _("normal")
        HIGH = "high", _("high")
        URGENT = "urgent", _("urgent")

    tracking_number = models.CharField(_("tracking number"), max_length=20, unique=True)
    # SHA-256 of the access key the customer got; the key itself is never stored.
    access_key_hash = models.CharField(max_length=64)
    subject = models.CharField(_("subject"), max_length=300)
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(_("status"), max_length=30, choices=Status, default=Status.NEW)
    kind = models.CharField(_("class"), max_length=20, choices=Kind, default=Kind.UNCLASSIFIED)
    # What the keyword model proposed from past cases; the agent decides.
    suggested_kind = models.CharField(_("suggested class"), max_length=20, choices=Kind, blank=True)
    channel = models.CharField(_("channel"), max_length=10, choices=Channel)
    priority = models.CharField(
        _("priority"), max_length=10, choices=Priority, default=Priority.NORMAL
    )
    # Null while the case waits in its team's queue; never two owners (see services.claim).
    owner = models.ForeignKey(
        User,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    contact = models.ForeignKey(
        Contact,
        verbose_name=_("contact"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cases",
    )
    account = models.ForeignKey(
        Account,
        verbose_name=_("account"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cases",
    )
    product = models.ForeignKey(
        Product,
        verbose_name=_("product"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cases",
    )
    requester_email = models.EmailField(_("customer e-mail"), max_length=254)
    requester_name = models.CharField(_("customer name"), max_length=200, blank=True)
    # The customer's language (of their first message): their e-mails and status page use it.
    language = models.CharField(_("language"), max_length=10, default="en")
    feature = models.ForeignKey(
        "Feature",
        verbose_name=_("feature"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="cases",
    )
    merged_into = models.ForeignKey(
        "self",
        verbose_name=_("merged into"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="merged_cases",
    )
    split_from = models.ForeignKey(
        "self",
        verbose_name=_("split from"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="split_cases",
    )
    acknowledged_at = models.DateTimeField(_("acknowledged"), null=True, blank=True)
    first_response_at = models.DateTimeField(_("first response"), null=True, blank=True)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)

    class Meta:
        verbose_name = _("case")
        verbose_name_plural = _("cases")
        indexes = [
            models.Index(fields=["owner", "status", "-id"], name="case_owner"),
            models.Index(fields=["team", "status", "-id"], name="case_team"),
            models.Index(fields=["status", "-id"], name="case_status"),
            models.Index(fields=["requester_email", "-id"], name="case_requester"),
            models.Index(fields=["kind", "-id"], name="case_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.tracking_number} {self.subject}"


class CaseEvent(models.Model):
    """One entry on a case's timeline. Public entries are what the customer sees."""

    class Kind(models.TextChoices):
        RECEIVED = "received", _("received")
        CUSTOMER_MESSAGE = "customer_message", _("message from the customer")
        REPLY = "reply", _("reply to the customer")
        NOTE = "note", _("internal note")
        PHONE_CALL = "phone_call", _("phone call")
        STATUS = "status", _("status changed")
        ASSIGNED = "assigned", _("assigned")
        CLASSIFIED = "classified", _("classified")
        MERGED = "merged", _("merged")
        SPLIT = "split", _("split")
        EDITED = "edited", _("details changed")

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind)
    public = models.BooleanField(_("visible to the customer"), default=False)
    at = models.DateTimeField(default=clock.now)
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What the customer sees as the author: their own name, or an agent's first name only.
    author = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True)
    # Sanitised HTML of an e-mail; shown only to agents, never loads remote images by default.
    html = models.TextField(blank=True)
    # Kind-specific facts, e.g. {"from": "new", "to": "open"} or {"owner": 3, "note": "..."}.
    data = models.JSONField(default=dict)
    inbound = models.ForeignKey(
        InboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    outbound = models.ForeignKey(
        OutboundMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["case", "at", "id"], name="case_event_timeline")]

    def __str__(self) -> str:
        return f"{self.case_id} {self.kind} {self.at:%Y-%m-%d %H:%M}"


class CaseAttachment(models.Model):
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="attachments")
    event = models.ForeignKey(
        CaseEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    filename = models.CharField(_("file name"), max_length=200)
    content_type = models.CharField(_("type"), max_length=100)
    size = models.PositiveIntegerField(_("size"))
    data = models.BinaryField()
    # False for a forbidden type or an oversized file: kept as a record, never served.
    allowed = models.BooleanField(default=True)
    public = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.filename


class Feature(models.Model):
    """An entry on the product-feedback list: one feature, the cases (and customers) asking."""

    class Status(models.TextChoices):
        OPEN = "open", _("under consideration")
        PLANNED = "planned", _("planned")
        SHIPPED = "shipped", _("shipped")
        DECLINED = "declined", _("declined")

    title = models.CharField(_("title"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.OPEN)
    product = models.ForeignKey(
        Product,
        verbose_name=_("product"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=clock.now)

    class Meta:
        verbose_name = _("feature request")
        verbose_name_plural = _("feature requests")
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title


class AssignmentRule(models.Model):
    """On arrival, the first active rule (by ``order``) whose conditions all hold picks the owner.

    Empty conditions match everything. Skill tags are keywords: a case whose subject or text
    contains one of them goes to the agents who know that subject.
    """

    class Method(models.TextChoices):
        USER = "user", _("a named user")
        ROUND_ROBIN = "round_robin", _("round robin in the team")
        LEAST_OPEN = "least_open", _("team member with the fewest open cases")
        QUEUE = "queue", _("the team's queue (first to claim)")

    name = models.CharField(_("name"), max_length=100)
    order = models.PositiveIntegerField(pgettext_lazy("position in a list", "order"), default=100)
    is_active = models.BooleanField(_("active"), default=True)
    language = models.CharField(_("customer language"), max_length=10, blank=True)
    product = models.ForeignKey(
        Product,
        verbose_name=_("product"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    account = models.ForeignKey(
        Account,
        verbose_name=_("account"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    skill_tags = models.CharField(
        _("skill tags"), max_length=300, blank=True, help_text=_("Comma-separated keywords.")
    )
    method = models.CharField(_("method"), max_length=20, choices=Method, default=Method.QUEUE)
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    user = models.ForeignKey(
        User,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    # Round robin remembers whom it chose last.
    last_assigned = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        verbose_name = _("assignment rule")
        verbose_name_plural = _("assignment rules")
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name


class ReplyTemplate(models.Model):
    name = models.CharField(_("name"), max_length=100)
    language = models.CharField(_("language"), max_length=10, default="en")
    body = models.TextField(_("text"))

    class Meta:
        verbose_name = _("reply template")
        verbose_name_plural = _("reply templates")
        ordering = ["name", "language"]

    def __str__(self) -> str:
        return self.name
