"""Mail in and out, kept whole.

Every message the listener accepts is an ``InboundMessage`` with its raw bytes, written before
the SMTP server answers 250; what became of it (a record, a duplicate, ignored as noise, or the
quarantine) is a status on the same row. Every message Trellis sends is an ``OutboundMessage``,
sent by the task queue with retries. ``MessageLink`` ties each Message-ID, in or out, to the record
it belongs to, so a reply finds its record by In-Reply-To and References.
"""

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils.translation import gettext_lazy as _

from trellis.core import clock

# RFC 5322 puts no limit on a Message-ID; longer ones are cut for the index (and still match,
# since both sides are cut the same way).
MESSAGE_ID_LENGTH = 250


class RecordLink(models.Model):
    """An optional pointer to the record a message belongs to."""

    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    object_id = models.BigIntegerField(null=True, blank=True)
    record = GenericForeignKey("content_type", "object_id")

    class Meta:
        abstract = True


class InboundMessage(RecordLink):
    class Status(models.TextChoices):
        RECEIVED = "received", _("received, waiting to be processed")
        PROCESSED = "processed", _("processed")
        DUPLICATE = "duplicate", _("duplicate")
        IGNORED = "ignored", _("ignored")
        QUARANTINED = "quarantined", _("quarantined")
        FILED = "filed", _("filed by hand")

    class Channel(models.TextChoices):
        SMTP = "smtp", _("SMTP")
        IMAP = "imap", _("IMAP")

    received_at = models.DateTimeField(_("received"), default=clock.now, db_index=True)
    channel = models.CharField(max_length=10, choices=Channel, default=Channel.SMTP)
    peer = models.CharField(_("sending host"), max_length=100, blank=True)
    envelope_from = models.CharField(_("envelope sender"), max_length=320, blank=True)
    recipients = models.JSONField(_("envelope recipients"), default=list)
    raw = models.BinaryField(_("raw message"))
    size = models.PositiveIntegerField(_("size in bytes"))
    # Cut at MAIL["MAX_MESSAGE_BYTES"] when the OVERSIZE setting is "truncate".
    truncated = models.BooleanField(_("truncated"), default=False)
    message_id = models.CharField(_("Message-ID"), max_length=MESSAGE_ID_LENGTH, blank=True)
    from_address = models.CharField(_("from"), max_length=320, blank=True)
    subject = models.CharField(_("subject"), max_length=300, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status, default=Status.RECEIVED)
    # Why it was ignored or quarantined, in words an admin understands.
    reason = models.TextField(_("reason"), blank=True)
    # What the parser had to guess, e.g. "charset-guessed: body".
    flags = models.JSONField(_("flags"), default=list)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)

    class Meta:
        verbose_name = _("incoming message")
        verbose_name_plural = _("incoming messages")
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "id"], name="inbound_status"),
            models.Index(fields=["message_id"], name="inbound_message_id"),
            models.Index(fields=["from_address", "-received_at"], name="inbound_sender"),
            models.Index(fields=["content_type", "object_id"], name="inbound_record"),
        ]

    def __str__(self) -> str:
        return f"{self.from_address or self.envelope_from}: {self.subject}"


class OutboundMessage(RecordLink):
    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        SENT = "sent", _("sent")
        FAILED = "failed", _("failed")

    created_at = models.DateTimeField(_("created"), default=clock.now, db_index=True)
    from_address = models.CharField(_("from"), max_length=320)
    to = models.JSONField(_("to"), default=list)
    reply_to = models.CharField(_("reply to"), max_length=320, blank=True)
    subject = models.CharField(_("subject"), max_length=300)
    text = models.TextField(_("text"))
    html = models.TextField(_("HTML"), blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=MESSAGE_ID_LENGTH, unique=True)
    in_reply_to = models.CharField(max_length=MESSAGE_ID_LENGTH, blank=True)
    references = models.TextField(blank=True)
    # Further headers, e.g. {"Auto-Submitted": "auto-replied"}.
    headers = models.JSONField(default=dict)
    status = models.CharField(_("status"), max_length=10, choices=Status, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("outgoing message")
        verbose_name_plural = _("outgoing messages")
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="outbound_due"),
            models.Index(
                fields=["content_type", "object_id", "created_at"], name="outbound_record"
            ),
        ]

    def __str__(self) -> str:
        return f"{', '.join(self.to)}: {self.subject}"


class MessageLink(models.Model):
    """A Message-ID seen or sent, and the record it belongs to."""

    message_id = models.CharField(max_length=MESSAGE_ID_LENGTH, unique=True)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.BigIntegerField()
    created_at = models.DateTimeField(default=clock.now)

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.content_type_id}:{self.object_id}"


class ImapMailbox(models.Model):
    """How far the intake has read a polled IMAP mailbox.

    UIDs only grow within one UIDVALIDITY; when the server announces another one (the mailbox
    was recreated), the UIDs start over and so does ``last_uid``.
    """

    # user@host:port/mailbox
    name = models.CharField(max_length=300, unique=True)
    uidvalidity = models.BigIntegerField(default=0)
    last_uid = models.BigIntegerField(default=0)
    polled_at = models.DateTimeField(null=True, blank=True)
    # Held by the poller reading it now, so that two workers do not both fetch its mail.
    leased_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} (UIDVALIDITY {self.uidvalidity}, UID {self.last_uid})"
