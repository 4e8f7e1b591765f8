"""Sending mail through the task queue, with retries.

``queue`` writes an ``OutboundMessage`` and, once the caller's transaction commits, enqueues the
``send_message`` task for it. Sending claims the row first: under a row lock it checks that the
message is still queued and due, and moves ``next_attempt_at`` a lease ahead, so a second task
or a sweep running at the same time leaves it alone. The SMTP conversation happens after the
claim's commit, not inside it: on SQLite a transaction holds the database's one write lock, and
no one else should wait for a slow relay. A failure counts an attempt and sets the next one after
a growing pause (1, 5, 30, 120, 360 minutes); after MAIL["SEND_ATTEMPTS"] attempts, or at once
when the relay refuses for good (a 5xx answer), the message is marked failed, for an admin to
retry. The sweeper sends retries that are due, and queued messages whose task was lost.

Stored fields keep Message-IDs without angle brackets (as ``MessageLink`` and the parser do);
the brackets are added to the headers when the message is sent.
"""

import functools
import logging
import re
import smtplib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from email.utils import make_msgid, parseaddr

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.db import models, transaction
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events, sweep
from trellis.core.errors import Conflict, NotFound, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.paging import Page, paginate

from . import routing
from .inbound import clean_message_id, lock_skip_locked, one_line, require_admin, storable
from .models import OutboundMessage

log = logging.getLogger(__name__)

Status = OutboundMessage.Status

# Minutes to wait after the first, second, ... failed attempt (the last one repeats).
BACKOFF_MINUTES = (1, 5, 30, 120, 360)
# How long a claimed message is left to the sender that claimed it.
LEASE = timedelta(minutes=10)
# A queued message that no task has sent after this long is sent by the sweeper.
LOST_TASK_AFTER = timedelta(minutes=5)
MAX_SUBJECT = 300
MAX_RECIPIENTS = 100
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII without ":" (RFC 5322)
# Set by ``queue`` from its own arguments; not overridable through ``headers``.
_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "message-id",
        "in-reply-to",
        "references",
        "date",
        "sender",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
)
# The messages queued inside ``queued_together``, with their records; written at its end.
_together: ContextVar[list[tuple[OutboundMessage, models.Model | None]] | None] = ContextVar(
    "outbound_together", default=None
)


def queue(
    *,
    to: list[str] | str,
    subject: str,
    text: str,
    html: str = "",
    record: models.Model | None = None,
    reply_to: str | None = None,
    in_reply_to: str = "",
    references: Iterable[str] = (),
    headers: dict[str, str] | None = None,
    from_address: str | None = None,
) -> OutboundMessage:
    """Queue one message; it is sent by a task after the caller's transaction commits.

    With ``record``, the message belongs to it: replies reach it through the ``Reply-To``
    address (by default the record's reply address) and through its Message-ID.
    """
    errors: dict[str, list[str]] = {}
    recipients = _addresses([to] if isinstance(to, str) else list(to), "to", errors)
    if not recipients and "to" not in errors:
        errors["to"] = [_("Give at least one recipient.")]
    if len(recipients) > MAX_RECIPIENTS:
        errors["to"] = [_("At most %(n)d recipients.") % {"n": MAX_RECIPIENTS}]
    if reply_to is None and record is not None:
        # Made here, from the record: nothing to check (and, unique to each record, it would
        # miss the cache of checked addresses every time).
        replies = [routing.reply_address(record)]
    else:
        replies = _addresses([reply_to], "reply_to", errors) if reply_to else []
    sender = _addresses([from_address or settings.DEFAULT_FROM_EMAIL], "from_address", errors)
    extra = _headers(headers or {}, errors)
    if errors:
        raise ValidationFailed(errors)

    message_id = make_msgid(domain=settings.MAIL_DOMAIN).strip("<>")
    referenced = [clean_message_id(m) for m in references]
    # Everything was checked above; what is left cannot fail for a reason the caller could
    # recover from, so the caller's transaction needs no savepoint for it.
    with transaction.atomic(savepoint=False):
        message = OutboundMessage(
            created_at=clock.now(),
            from_address=sender[0],
            to=recipients,
            reply_to=replies[0] if replies else "",
            subject=one_line(subject)[:MAX_SUBJECT],
            text=storable(text or ""),
            html=storable(html or ""),
            message_id=message_id,
            in_reply_to=clean_message_id(in_reply_to),
            references=" ".join(m for m in referenced if m),
            headers=extra,
        )
        if record is not None:
            message.content_type = ContentType.objects.get_for_model(type(record))
            message.object_id = record.pk
        together = _together.get()
        if together is not None:
            together.append((message, record))
            return message
        message.save()
        if record is not None:
            routing.link_message(message_id, record)
        transaction.on_commit(lambda: _enqueue(message.pk))
    return message


@contextmanager
def queued_together() -> Iterator[None]:
    """Messages queued inside the block are written when it ends, all in one statement and
    their Message-ID links in another, and one task sends them all after the commit.

    Until the block ends, a message ``queue`` returned has no ``pk``: for callers that do not
    use it (the acknowledgements of a batch of new cases). Use inside a transaction; if the
    block raises, nothing of it is written.
    """
    together: list[tuple[OutboundMessage, models.Model | None]] = []
    token = _together.set(together)
    try:
        yield
    finally:
        _together.reset(token)
    if not together:
        return
    messages = OutboundMessage.objects.bulk_create([message for message, _record in together])
    routing.link_messages(
        [(message.message_id, record) for message, record in together if record is not None]
    )
    ids = [message.pk for message in messages]
    transaction.on_commit(lambda: _enqueue_many(ids))


def _addresses(values: list[str], field: str, errors: dict[str, list[str]]) -> list[str]:
    """Addresses, plain or with a name (``Kim <kim@example.com>``), each checked."""
    checked = []
    for value in values:
        value = str(value or "").strip()
        if not _is_address(value):
            errors.setdefault(field, []).append(
                _("Not a valid e-mail address: %(value)s") % {"value": value[:320]}
            )
            continue
        checked.append(value[:320])
    return checked


# The same few addresses come again and again (the support address on every acknowledgement),
# and Django's check of one costs more than the rest of queueing a message.
@functools.lru_cache(maxsize=4096)
def _is_address(value: str) -> bool:
    if any(c in value for c in "\r\n\x00"):
        return False
    _name, address = parseaddr(value)
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


def _headers(headers: dict[str, str], errors: dict[str, list[str]]) -> dict[str, str]:
    checked = {}
    for name, value in headers.items():
        name, value = str(name), str(value)
        if not _HEADER_NAME.match(name) or name.lower() in _RESERVED_HEADERS:
            errors.setdefault("headers", []).append(
                _("This header cannot be set: %(name)s") % {"name": name[:80]}
            )
        elif any(c in value for c in "\r\n\x00"):
            errors.setdefault("headers", []).append(
                _("A header value must be one line: %(name)s") % {"name": name}
            )
        else:
            checked[name] = value[:998]
    return checked


def _enqueue(outbound_id: int) -> None:
    from .tasks import send_message

    try:
        send_message.enqueue(outbound_id)
    except Exception:
        # The row is still queued; the sweeper sends it after LOST_TASK_AFTER.
        log.exception("could not enqueue outgoing message %s", outbound_id)


def _enqueue_many(outbound_ids: list[int]) -> None:
    from .tasks import send_messages

    try:
        send_messages.enqueue(outbound_ids)
    except Exception:
        # The rows are still queued; the sweeper sends them after LOST_TASK_AFTER.
        log.exception("could not enqueue %d outgoing messages", len(outbound_ids))


# Sending.


def send(outbound_id: int) -> OutboundMessage | None:
    """Send one queued message if it is due and no one else is sending it."""
    message = _claim(outbound_id)
    if message is None:
        return OutboundMessage.objects.filter(pk=outbound_id).first()
    try:
        deliver(message)
    except Exception as exc:
        _failed(message, exc)
    else:
        _sent(message)
    return message


def _claim(outbound_id: int) -> OutboundMessage | None:
    now = clock.now()
    with transaction.atomic():
        message = lock_skip_locked(OutboundMessage.objects.filter(pk=outbound_id)).first()
        if message is None or message.status != Status.QUEUED:
            return None
        if message.next_attempt_at is not None and message.next_attempt_at > now:
            return None
        message.next_attempt_at = now + LEASE
        message.save(update_fields=["next_attempt_at"])
    return message


def build(message: OutboundMessage) -> EmailMultiAlternatives:
    """The e-mail as Django sends it, with the threading headers."""
    headers = {**message.headers, "Message-ID": f"<{message.message_id}>"}
    if message.in_reply_to:
        headers["In-Reply-To"] = f"<{message.in_reply_to}>"
    references = message.references.split()
    if message.in_reply_to and message.in_reply_to not in references:
        references.append(message.in_reply_to)
    if references:
        headers["References"] = " ".join(f"<{m}>" for m in references)
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=message.from_address,
        to=list(message.to),
        reply_to=[message.reply_to] if message.reply_to else None,
        headers=headers,
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    return email


def deliver(message: OutboundMessage) -> None:
    email = build(message)
    with get_connection(fail_silently=False) as smtp:
        smtp.send_messages([email])


def _sent(message: OutboundMessage) -> None:
    message.status = Status.SENT
    message.attempts += 1
    message.sent_at = clock.now()
    message.next_attempt_at = None
    message.save(update_fields=["status", "attempts", "sent_at", "next_attempt_at"])
    events.emit("mail.outbound.sent", id=message.pk)


def _failed(message: OutboundMessage, exc: Exception) -> None:
    message.attempts += 1
    message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
    if message.attempts >= settings.TRELLIS["MAIL"]["SEND_ATTEMPTS"] or _permanent(exc):
        message.status = Status.FAILED
        message.next_attempt_at = None
        log.error("outgoing message %s failed for good: %s", message.pk, message.last_error)
        events.emit("mail.outbound.failed", id=message.pk)
    else:
        pause = BACKOFF_MINUTES[min(message.attempts, len(BACKOFF_MINUTES)) - 1]
        message.next_attempt_at = clock.now() + timedelta(minutes=pause)
        log.warning(
            "outgoing message %s failed (attempt %s), retrying in %s min: %s",
            message.pk,
            message.attempts,
            pause,
            message.last_error,
        )
    message.save(update_fields=["status", "attempts", "last_error", "next_attempt_at"])


def _permanent(exc: Exception) -> bool:
    """The relay refused for good: sending the same message again will not help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _text in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    return False


def send_due(limit: int = 100) -> int:
    """Send retries that are due and queued messages whose task was lost; return how many
    were sent."""
    now = clock.now()
    due = OutboundMessage.objects.filter(status=Status.QUEUED).filter(
        models.Q(next_attempt_at__lte=now)
        | models.Q(next_attempt_at__isnull=True, created_at__lte=now - LOST_TASK_AFTER)
    )
    sent = 0
    for pk in due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit]:
        message = send(pk)
        if message is not None and message.status == Status.SENT:
            sent += 1
    return sent


sweep.register("mail-outbound", send_due)


# What admins do with failed messages.


def messages_for(actor: User, status: str | None = None) -> models.QuerySet[OutboundMessage]:
    require_admin(actor)
    messages = OutboundMessage.objects.order_by("-id")
    return messages.filter(status=status) if status else messages


def page_of(
    actor: User, status: str | None = None, number: int | None = 1, size: int | None = None
) -> Page:
    return paginate(messages_for(actor, status), number, size)


def get(actor: User, outbound_id: int) -> OutboundMessage:
    require_admin(actor)
    message = OutboundMessage.objects.filter(pk=outbound_id).first()
    if message is None:
        raise NotFound(_("No such message."))
    return message


def retry(actor: User, outbound_id: int) -> OutboundMessage:
    """Send a failed message again now, with a fresh round of attempts."""
    require_admin(actor)
    with transaction.atomic():
        message = OutboundMessage.objects.select_for_update().filter(pk=outbound_id).first()
        if message is None:
            raise NotFound(_("No such message."))
        if message.status != Status.FAILED:
            raise Conflict(_("Only failed messages can be retried."))
        message.status = Status.QUEUED
        message.attempts = 0
        message.next_attempt_at = None
        message.save(update_fields=["status", "attempts", "next_attempt_at"])
        audit.record(
            actor,
            message,
            AuditEvent.Action.UPDATED,
            {"status": [Status.FAILED, Status.QUEUED]},
            _("Retried sending the message"),
        )
        events.emit("mail.outbound.retried", id=message.pk, actor_id=actor.pk)
        transaction.on_commit(lambda: _enqueue(message.pk))
    return message
