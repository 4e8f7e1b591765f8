from decimal import Decimal

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F
from django.db.models.functions import Upper
from django.utils.translation import gettext_lazy as _

from trellis.core import clock
from trellis.core.models import OwnedRecord
from trellis.core.money import Currency


class InPipeline(models.Model):
    """A record that runs in a pipeline: its stage and when it entered it.

    Only the pipeline services write these (``process.pipelines.services``), with a stage-change
    row for every move.
    """

    stage = models.ForeignKey(
        "process.Stage",
        verbose_name=_("stage"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
    )
    stage_entered_at = models.DateTimeField(
        _("in stage since"), null=True, blank=True, editable=False
    )

    class Meta:
        abstract = True


class Searchable(models.Model):
    # Lower-cased name, e-mail and phone digits; one trigram index on PostgreSQL answers partial
    # matches in any script (see core.validators.search_key).
    search_text = models.TextField(default="", editable=False)

    class Meta:
        abstract = True


class Account(OwnedRecord, Searchable, InPipeline):
    name = models.CharField(_("name"), max_length=200)
    business_registration_number = models.CharField(
        _("business registration number"),
        max_length=12,
        blank=True,
        help_text=_("Korean 사업자등록번호, 10 digits: 123-45-67890."),
    )
    industry = models.CharField(_("industry"), max_length=100, blank=True)
    website = models.URLField(_("website"), max_length=200, blank=True)
    email = models.EmailField(_("e-mail"), max_length=254, blank=True)
    phone = models.CharField(_("phone"), max_length=20, blank=True)
    address = models.CharField(_("address"), max_length=300, blank=True)
    country = models.CharField(_("country"), max_length=2, blank=True, default="KR")
    description = models.TextField(_("description"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("account")
        verbose_name_plural = _("accounts")
        indexes = [
            models.Index(fields=["owner", "-id"], name="account_owner"),
            models.Index(fields=["team", "-id"], name="account_team"),
            # A board column: the newest arrivals in a stage first.
            models.Index(
                F("stage"),
                F("stage_entered_at").desc(),
                F("id").desc(),
                name="account_stage",
            ),
            models.Index(fields=["name"], name="account_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Contact(OwnedRecord, Searchable):
    name = models.CharField(_("name"), max_length=200)
    title = models.CharField(_("job title"), max_length=100, blank=True)
    email = models.EmailField(_("e-mail"), max_length=254, blank=True)
    phone = models.CharField(_("phone"), max_length=20, blank=True)
    mobile = models.CharField(_("mobile"), max_length=20, blank=True)
    accounts = models.ManyToManyField(
        Account, verbose_name=_("accounts"), blank=True, related_name="contacts"
    )
    notes = models.TextField(_("notes"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        indexes = [
            models.Index(fields=["owner", "-id"], name="contact_owner"),
            models.Index(fields=["team", "-id"], name="contact_team"),
            # Mail finds the contact of a sender case-blind (``email__iexact``).
            models.Index(Upper("email"), name="contact_email_ci"),
        ]

    def __str__(self) -> str:
        return self.name


class Lead(OwnedRecord, Searchable, InPipeline):
    class Source(models.TextChoices):
        WEB = "web", _("web site")
        REFERRAL = "referral", _("referral")
        EVENT = "event", _("event")
        COLD_CALL = "cold_call", _("cold call")
        PARTNER = "partner", _("partner")
        ADVERTISING = "advertising", _("advertising")
        OTHER = "other", _("other")

    class Status(models.TextChoices):
        NEW = "new", _("new")
        CONTACTED = "contacted", _("contacted")
        QUALIFIED = "qualified", _("qualified")
        UNQUALIFIED = "unqualified", _("unqualified")
        CONVERTED = "converted", _("converted")

    name = models.CharField(_("name"), max_length=200)
    company = models.CharField(_("company"), max_length=200, blank=True)
    email = models.EmailField(_("e-mail"), max_length=254, blank=True)
    phone = models.CharField(_("phone"), max_length=20, blank=True)
    source = models.CharField(_("source"), max_length=20, choices=Source, default=Source.OTHER)
    status = models.CharField(_("status"), max_length=20, choices=Status, default=Status.NEW)
    notes = models.TextField(_("notes"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("lead")
        verbose_name_plural = _("leads")
        indexes = [
            models.Index(fields=["owner", "-id"], name="lead_owner"),
            models.Index(fields=["team", "-id"], name="lead_team"),
            # A board column: the newest arrivals in a stage first.
            models.Index(
                F("stage"),
                F("stage_entered_at").desc(),
                F("id").desc(),
                name="lead_stage",
            ),
            models.Index(fields=["status", "-id"], name="lead_status"),
        ]

    def __str__(self) -> str:
        return self.name


class Opportunity(OwnedRecord, Searchable, InPipeline):
    class Status(models.TextChoices):
        OPEN = "open", _("open")
        WON = "won", _("won")
        LOST = "lost", _("lost")

    name = models.CharField(_("name"), max_length=200)
    account = models.ForeignKey(
        Account,
        verbose_name=_("account"),
        on_delete=models.PROTECT,
        related_name="opportunities",
    )
    contact = models.ForeignKey(
        Contact,
        verbose_name=_("contact"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="opportunities",
    )
    amount = models.DecimalField(
        _("amount"),
        max_digits=18,
        decimal_places=2,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
    )
    currency = models.CharField(_("currency"), max_length=3, choices=Currency, default="KRW")
    expected_close_date = models.DateField(_("expected close date"), null=True, blank=True)
    probability = models.PositiveSmallIntegerField(
        _("probability"),
        default=10,
        validators=[MaxValueValidator(100)],
        help_text=_("Percent, 0 to 100."),
    )
    # Set once the owner gives a probability by hand; a stage move then keeps it.
    probability_manual = models.BooleanField(default=False, editable=False)
    # Follows the kind of the stage (open, won, lost) while the deal is in a pipeline.
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.OPEN)
    description = models.TextField(_("description"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("opportunity")
        verbose_name_plural = _("opportunities")
        indexes = [
            models.Index(fields=["owner", "-id"], name="opportunity_owner"),
            models.Index(fields=["team", "-id"], name="opportunity_team"),
            # A board column: the newest arrivals in a stage first.
            models.Index(
                F("stage"),
                F("stage_entered_at").desc(),
                F("id").desc(),
                name="opportunity_stage",
            ),
            models.Index(fields=["status", "-id"], name="opportunity_status"),
            models.Index(fields=["account", "-id"], name="opportunity_account"),
            models.Index(fields=["expected_close_date"], name="opportunity_close"),
        ]

    def __str__(self) -> str:
        return self.name


class Product(OwnedRecord):
    name = models.CharField(_("name"), max_length=200)
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    description = models.TextField(_("description"), blank=True, max_length=5000)
    unit_price = models.DecimalField(
        _("unit price"), max_digits=18, decimal_places=2, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(_("currency"), max_length=3, choices=Currency, default="KRW")
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("product")
        verbose_name_plural = _("products")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"


class Order(OwnedRecord):
    class Status(models.TextChoices):
        DRAFT = "draft", _("draft")
        PLACED = "placed", _("placed")
        FULFILLED = "fulfilled", _("fulfilled")
        CANCELLED = "cancelled", _("cancelled")

    account = models.ForeignKey(
        Account, verbose_name=_("account"), on_delete=models.PROTECT, related_name="orders"
    )
    opportunity = models.ForeignKey(
        Opportunity,
        verbose_name=_("opportunity"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="orders",
    )
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.DRAFT)
    currency = models.CharField(_("currency"), max_length=3, choices=Currency, default="KRW")
    order_date = models.DateField(_("order date"), default=clock.today)
    # The sum of the lines, kept by the service that writes the lines.
    total = models.DecimalField(
        _("total"), max_digits=18, decimal_places=2, default=Decimal(0), editable=False
    )
    notes = models.TextField(_("notes"), blank=True, max_length=5000)

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        indexes = [
            models.Index(fields=["owner", "-id"], name="order_owner"),
            models.Index(fields=["account", "-id"], name="order_account"),
        ]

    def __str__(self) -> str:
        return _("Order %(number)s") % {"number": self.pk}


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(
        Product, verbose_name=_("product"), on_delete=models.PROTECT, related_name="+"
    )
    quantity = models.PositiveIntegerField(_("quantity"), validators=[MinValueValidator(1)])
    unit_price = models.DecimalField(_("unit price"), max_digits=18, decimal_places=2)
    discount_pct = models.DecimalField(
        _("discount %"),
        max_digits=5,
        decimal_places=2,
        default=Decimal(0),
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )

    class Meta:
        ordering = ["id"]
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")

    def __str__(self) -> str:
        return f"{self.quantity} × {self.product_id}"

    @property
    def line_total(self) -> Decimal:
        return self.quantity * self.unit_price * (Decimal(100) - self.discount_pct) / 100


class Activity(OwnedRecord):
    """A call, meeting, e-mail or note about a record; a note may be the voice of the customer."""

    class Kind(models.TextChoices):
        CALL = "call", _("call")
        MEETING = "meeting", _("meeting")
        EMAIL = "email", _("e-mail")
        NOTE = "note", _("note")

    kind = models.CharField(_("kind"), max_length=10, choices=Kind, default=Kind.NOTE)
    subject = models.CharField(_("subject"), max_length=200)
    body = models.TextField(_("details"), blank=True, max_length=20000)
    occurred_at = models.DateTimeField(_("when"), default=clock.now)
    is_voc = models.BooleanField(
        _("voice of the customer"),
        default=False,
        help_text=_("Mark a note that records what the customer said they need or dislike."),
    )
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    related = GenericForeignKey("content_type", "object_id")

    class Meta:
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        indexes = [
            models.Index(fields=["content_type", "object_id", "-occurred_at"], name="activity_rec"),
            models.Index(fields=["owner", "-id"], name="activity_owner"),
        ]

    def __str__(self) -> str:
        return self.subject
