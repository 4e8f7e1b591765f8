"""Support cases: one tracking number, one owner, one timeline of public and internal events."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from trellis.core import clock
from trellis.core.models import OwnedRecord, Team, User
from trellis.core.money import Currency
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
    # The support contract that covers the case (see ``contracts.link_case``); null: not covered.
    contract = models.ForeignKey(
        "SupportContract",
        verbose_name=_("support contract"),
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
        COVERAGE = "coverage", _("contract coverage")
        FEE_PROPOSED = "fee_proposed", _("support fee proposed")
        FEE_AGREED = "fee_agreed", _("support fee agreed")
        FEE_DECLINED = "fee_declined", _("support fee declined")
        FEE_WAIVED = "fee_waived", _("support fee waived")
        CHARGE = "charge", _("support fee charge")

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


class SupportContract(OwnedRecord):
    """유지보수 계약: what an account's support covers, from ``start_date`` to ``end_date``.

    Seen by whoever may see its account (see ``contracts.visible_contracts``). Work outside it
    is paid by the fee terms (``fee_basis``, ``fee_amount``, ``currency``).
    """

    class FeeBasis(models.TextChoices):
        NONE = "", _("no fee terms")
        HOURLY = "hourly", _("hourly rate")
        PER_CASE = "per_case", _("fixed fee per case")

    number = models.CharField(_("contract number"), max_length=20, unique=True, editable=False)
    account = models.ForeignKey(
        Account,
        verbose_name=_("account"),
        on_delete=models.PROTECT,
        related_name="support_contracts",
    )
    name = models.CharField(_("name"), max_length=200)
    start_date = models.DateField(_("start date"))
    end_date = models.DateField(_("end date"))
    all_products = models.BooleanField(_("covers all products"), default=True)
    products = models.ManyToManyField(
        Product, verbose_name=_("covered products"), blank=True, related_name="+"
    )
    response_hours = models.PositiveIntegerField(
        _("response target (hours)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(8760)],
    )
    fee_basis = models.CharField(
        _("fee for work outside the contract"),
        max_length=10,
        choices=FeeBasis,
        default=FeeBasis.NONE,
        blank=True,
    )
    fee_amount = models.DecimalField(
        _("fee amount"), max_digits=18, decimal_places=2, null=True, blank=True
    )
    currency = models.CharField(_("currency"), max_length=3, choices=Currency, default="KRW")
    notes = models.TextField(_("notes"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("support contract")
        verbose_name_plural = _("support contracts")
        indexes = [
            models.Index(fields=["account", "end_date"], name="contract_account"),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.name}"

    def is_active_on(self, day) -> bool:
        return self.start_date <= day <= self.end_date


class SupportFee(models.Model):
    """기술지원료: a fee an agent proposes on a case and the customer agrees to or declines.

    An agreed fee becomes a ``Charge`` when the case is resolved (see ``billing``).
    """

    class Status(models.TextChoices):
        PROPOSED = "proposed", _("waiting for the customer")
        AGREED = "agreed", _("agreed")
        DECLINED = "declined", pgettext_lazy("support fee status", "declined")
        WAIVED = "waived", _("waived")

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="fees")
    amount = models.DecimalField(_("amount"), max_digits=18, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3, choices=Currency)
    description = models.TextField(_("description"), max_length=2000)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.PROPOSED)
    # The contract that covered the case when the fee was proposed: the fee is for work
    # outside its coverage.
    contract = models.ForeignKey(
        SupportContract,
        verbose_name=_("support contract"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    proposed_by = models.ForeignKey(
        User, verbose_name=_("proposed by"), on_delete=models.PROTECT, related_name="+"
    )
    proposed_at = models.DateTimeField(_("proposed"), default=clock.now)
    answered_at = models.DateTimeField(_("answered"), null=True, blank=True)
    waived_by = models.ForeignKey(
        User,
        verbose_name=_("waived by"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    waived_at = models.DateTimeField(_("waived"), null=True, blank=True)
    waive_reason = models.TextField(_("reason"), blank=True, max_length=2000)

    class Meta:
        verbose_name = _("support fee")
        verbose_name_plural = _("support fees")
        ordering = ["proposed_at", "id"]

    def __str__(self) -> str:
        return f"{self.case_id}: {self.amount} {self.currency}"


class Charge(models.Model):
    """An agreed fee of a resolved case, for finance to bill.

    Its status follows from its case (see ``billing.charge_status``): to bill while the case is
    resolved (or closed), waiting while it is reopened, billed once an invoice is made.
    ``owner`` (who proposed the fee) and ``team`` (the case's) let ``core.visibility`` apply.
    """

    class Status(models.TextChoices):
        WAITING = "waiting", _("waiting for the case to be resolved")
        TO_BILL = "to_bill", _("to bill")
        BILLED = "billed", _("billed")
        WAIVED = "waived", _("waived")

    fee = models.OneToOneField(SupportFee, on_delete=models.PROTECT, related_name="charge")
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="charges")
    account = models.ForeignKey(
        Account,
        verbose_name=_("account"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    amount = models.DecimalField(_("amount"), max_digits=18, decimal_places=2)
    currency = models.CharField(_("currency"), max_length=3, choices=Currency)
    description = models.TextField(_("description"), max_length=2000)
    charged_at = models.DateTimeField(_("charged"), default=clock.now)
    billed_at = models.DateTimeField(_("billed"), null=True, blank=True)
    billed_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    invoice_reference = models.CharField(_("invoice reference"), max_length=100, blank=True)
    waived_at = models.DateTimeField(_("waived"), null=True, blank=True)

    class Meta:
        verbose_name = _("support fee charge")
        verbose_name_plural = _("support fee charges")
        indexes = [
            models.Index(fields=["billed_at", "charged_at"], name="charge_billing"),
            models.Index(fields=["account", "charged_at"], name="charge_account"),
            models.Index(fields=["charged_at"], name="charge_month"),
        ]

    def __str__(self) -> str:
        return f"{self.case_id}: {self.amount} {self.currency}"
