import hashlib
import secrets

from django.contrib.auth.models import AbstractUser, UserManager
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils.translation import gettext_lazy as _

from . import clock


class Team(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self) -> str:
        return self.name


class Role(models.Model):
    """A named set of rights. ``code`` is stable; ``name`` is what people read."""

    ADMIN = "admin"
    MANAGER = "manager"
    SALES = "sales"
    SUPPORT = "support"
    MARKETING = "marketing"
    READ_ONLY = "readonly"

    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=100)

    class Meta:
        ordering = ["name"]
        verbose_name = _("role")
        verbose_name_plural = _("roles")

    def __str__(self) -> str:
        return self.name


class Scope(models.TextChoices):
    NONE = "none", _("none")
    OWN = "own", _("own records")
    TEAM = "team", _("team's records")
    SUBORDINATES = "subordinates", _("own and subordinates' records")
    ALL = "all", _("all records")


class RoleRight(models.Model):
    """What a role may see and do with one object type (see ``core.registry``)."""

    role = models.ForeignKey(Role, on_delete=models.CASCADE, related_name="rights")
    object_type = models.CharField(_("object type"), max_length=40)
    scope = models.CharField(_("visibility"), max_length=20, choices=Scope, default=Scope.OWN)
    can_create = models.BooleanField(_("may create"), default=False)
    can_edit = models.BooleanField(_("may edit"), default=False)
    can_delete = models.BooleanField(_("may delete"), default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["role", "object_type"], name="role_right_unique")
        ]
        verbose_name = _("role right")
        verbose_name_plural = _("role rights")

    def __str__(self) -> str:
        return f"{self.role} / {self.object_type}: {self.scope}"


# The user that acts for writes no person made (see ``services.system_user``).
SYSTEM_USERNAME = "trellis"


class User(AbstractUser):
    email = models.EmailField(_("e-mail address"), blank=True)
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="members",
    )
    role = models.ForeignKey(
        Role,
        verbose_name=_("role"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="users",
    )
    manager = models.ForeignKey(
        "self",
        verbose_name=_("manager"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reports",
    )
    language = models.CharField(
        _("language"),
        max_length=10,
        blank=True,
        help_text=_("Empty: follow the browser."),
    )

    objects = UserManager()

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return self.get_full_name() or self.username

    def get_full_name(self) -> str:
        # A Korean name is written family name first, without a space: 최서연, not 서연 최.
        if _is_hangul(self.first_name) and _is_hangul(self.last_name):
            return f"{self.last_name}{self.first_name}"
        return super().get_full_name()


def _is_hangul(text: str) -> bool:
    return bool(text) and all("\uac00" <= ch <= "\ud7a3" for ch in text)


class OwnedRecord(models.Model):
    """Fields every CRM record shares: who owns it, which team it belongs to, its version."""

    owner = models.ForeignKey(
        User, verbose_name=_("owner"), on_delete=models.PROTECT, related_name="+"
    )
    team = models.ForeignKey(
        Team,
        verbose_name=_("team"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Bumped by every write; a client that sends an older one gets 409 (see services.update).
    version = models.PositiveIntegerField(_("version"), default=1, editable=False)
    created_at = models.DateTimeField(_("created"), default=clock.now, editable=False)
    updated_at = models.DateTimeField(_("updated"), default=clock.now, editable=False)

    class Meta:
        abstract = True


class AuditEvent(models.Model):
    """One change to one record: who, when, what, and each field's old and new value."""

    class Action(models.TextChoices):
        CREATED = "created", _("created")
        UPDATED = "updated", _("updated")
        DELETED = "deleted", _("deleted")

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    action = models.CharField(max_length=20, choices=Action)
    actor = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=clock.now, db_index=True)
    # {"field": [old, new]} for updates; the full values for creates and deletes.
    changes = models.JSONField(default=dict)
    summary = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["content_type", "object_id", "-at"], name="audit_record")]
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.content_type_id}:{self.object_id} by {self.actor_id}"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for scripts. Only its hash is stored; the raw value is shown once."""

    PREFIX = "trl_"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=clock.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.user} / {self.name}"

    @classmethod
    def new_raw_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)


class NumberSequence(models.Model):
    """The last number handed out for one prefix and year (tracking numbers, order numbers)."""

    prefix = models.CharField(max_length=10)
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prefix", "year"], name="number_sequence_unique")
        ]

    def __str__(self) -> str:
        return f"{self.prefix}-{self.year}: {self.last}"


class RateCounter(models.Model):
    """Hits on one key (an IP address, a sender) in one fixed time window, shared by every
    process; see ``core.ratelimit``."""

    key = models.CharField(max_length=200)
    window_start = models.DateTimeField()
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="rate_counter_unique")
        ]
        indexes = [models.Index(fields=["window_start"], name="rate_counter_window")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start}: {self.hits}"
