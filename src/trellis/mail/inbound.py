"""Receiving mail: the raw store, processing, the quarantine.

``store`` keeps a message exactly as it arrived and commits it; the SMTP listener answers 250
only after that. ``process`` then decides, once, what the message is: a duplicate of one already
handled, noise (auto-replies, bounces, a sender over the rate limit), or mail for a record or a
mailbox, whose handler makes it part of a record. Whatever cannot be handled goes to the
quarantine with a reason an admin can read, and stays there until the admin re-runs it, files it
into a record by hand, or dismisses it. Nothing is ever deleted.

The rows are the queue: each processor locks the row it works on (``SKIP LOCKED`` on
PostgreSQL, so many processors can share a database; SQLite's write lock serialises them) and
handles only rows still ``received``. A row left behind by a crash is picked up by the sweeper.
"""

import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events, ratelimit, sweep
from trellis.core.errors import Conflict, NotFound, ServiceError, ValidationFailed
from trellis.core.models import AuditEvent, User
from trellis.core.paging import Page, paginate
from trellis.core.visibility import is_admin

from . import parsing, routing
from .models import MESSAGE_ID_LENGTH, InboundMessage
from .parsing import ParsedMessage, Unparseable

log = logging.getLogger(__name__)

Status = InboundMessage.Status

# Statuses an admin may send through processing again, file by hand, or dismiss.
RERUNNABLE = frozenset({Status.QUARANTINED, Status.IGNORED})
FILEABLE = frozenset({Status.QUARANTINED, Status.IGNORED})
DISMISSABLE = frozenset({Status.QUARANTINED})
# A message with this Message-ID already made something of it.
HANDLED = (Status.PROCESSED, Status.FILED, Status.DUPLICATE)
# How long a row may stay ``received`` before the sweeper takes it: long enough for the
# listener's own processing threads to get to it first.
LEFT_BEHIND_AFTER = timedelta(minutes=2)
# How much of a header block the cheap read looks at.
_HEADER_BYTES = 256 * 1024
_TRANSIENT_ERRORS = (OperationalError, InterfaceError)


class MessageTooLarge(Exception):
    """Over MAIL["MAX_MESSAGE_BYTES"] with OVERSIZE "refuse"."""


# Storing.


def store(
    raw: bytes,
    *,
    envelope_from: str,
    recipients: list[str],
    peer: str = "",
    channel: str = InboundMessage.Channel.SMTP,
    also: Callable[[InboundMessage], None] | None = None,
) -> InboundMessage:
    """Keep ``raw`` as received; committed when this returns.

    Over the size limit the message is refused (``MessageTooLarge``) or, with OVERSIZE
    "truncate", cut at the limit and flagged. The Message-ID, sender and subject come from a
    quick read of the headers that never fails; processing reads the message properly.
    ``also`` writes what must be committed with the message, or not at all (how far an IMAP
    mailbox was read).
    """
    mail = settings.TRELLIS["MAIL"]
    limit = mail["MAX_MESSAGE_BYTES"]
    size = len(raw)
    truncated = size > limit
    if truncated and mail["OVERSIZE"] != "truncate":
        raise MessageTooLarge(f"{size} bytes is over the limit of {limit}")
    if truncated:
        raw = raw[:limit]
    summary = header_summary(raw)
    # durable=True: the caller answers 250 on the strength of this commit, so it must not be
    # swallowed by an outer transaction that could still roll back.
    with transaction.atomic(durable=True):
        message = InboundMessage.objects.create(
            received_at=clock.now(),
            channel=channel,
            peer=storable(peer)[:100],
            envelope_from=storable(envelope_from)[:320],
            recipients=[storable(r)[:320] for r in recipients],
            raw=raw,
            size=size,
            truncated=truncated,
            message_id=summary["message_id"],
            from_address=summary["from_address"],
            subject=summary["subject"],
            flags=["truncated"] if truncated else [],
        )
        if also is not None:
            also(message)
    return message


def headers_of(raw: bytes) -> list[tuple[str, str]]:
    """The header fields of a raw message, decoded as far as possible; never fails."""
    try:
        head = raw[:_HEADER_BYTES]
        for separator in (b"\r\n\r\n", b"\n\n"):
            end = head.find(separator)
            if end != -1:
                head = head[: end + len(separator)]
                break
        message = BytesHeaderParser(policy=compat32).parsebytes(head)
        return [(storable(name), _decoded(value)) for name, value in message.items()]
    except Exception:
        log.warning("could not read the headers of a message", exc_info=True)
        return []


def header_summary(raw: bytes) -> dict[str, str]:
    """Message-ID (without angle brackets), the From address and the subject, cheaply."""
    headers = {}
    for name, value in headers_of(raw):
        headers.setdefault(name.lower(), value)
    addresses = getaddresses([headers.get("from", "")])
    from_address = addresses[0][1].strip().lower() if addresses else ""
    return {
        "message_id": clean_message_id(headers.get("message-id", "")),
        "from_address": from_address[:320],
        "subject": one_line(headers.get("subject", ""))[:300],
    }


def clean_message_id(value: str) -> str:
    """``<abc@host>`` -> ``abc@host``, cut to what the index keeps."""
    return storable(value).strip().strip("<>").strip()[:MESSAGE_ID_LENGTH]


def one_line(text: str) -> str:
    return " ".join(storable(text).split())


def _decoded(value: object) -> str:
    try:
        text = str(make_header(decode_header(str(value))))
    except Exception:
        text = str(value)
    return storable(text)


def storable(text: str) -> str:
    """``text`` without what the databases refuse: NUL characters and lone surrogates."""
    text = str(text).replace("\x00", "")
    return text.encode("utf-8", "replace").decode("utf-8")


# Processing.


def process(inbound_id: int, *, rerun: bool = False) -> InboundMessage:
    """Make something of one stored message; see the module's docstring.

    A row that is no longer ``received`` (or, with ``rerun``, no longer re-runnable), or that
    another processor holds, is returned as it is. A database that is busy or gone raises
    (``OperationalError`` or ``InterfaceError``) and leaves the row ``received``.
    """
    try:
        with transaction.atomic():
            message = lock_skip_locked(InboundMessage.objects.filter(pk=inbound_id)).first()
            if message is None:
                # Another processor holds it, or there is no such message.
                current = InboundMessage.objects.filter(pk=inbound_id).defer("raw").first()
                if current is None:
                    raise NotFound(_("No such message."))
                return current
            if not _may_process(message, rerun):
                return message
            # Parsed under the row lock: a big message holds up only this row.
            parsed, failure = _parse(message)
            _process_row(message, parsed, failure, rerun=rerun)
        return message
    except (NotFound, *_TRANSIENT_ERRORS):
        # Transient: the database is busy or gone; the row stays received, to be tried again.
        raise
    except Exception as exc:
        log.exception("processing message %s failed", inbound_id)
        reason = _("Processing failed: %(error)s") % {"error": describe_error(exc)}
        statuses = [Status.RECEIVED, *(RERUNNABLE if rerun else ())]
        try:
            InboundMessage.objects.filter(pk=inbound_id, status__in=statuses).update(
                status=Status.QUARANTINED, reason=reason, attempts=models.F("attempts") + 1
            )
        except DatabaseError:
            log.exception("could not quarantine message %s", inbound_id)
        return InboundMessage.objects.defer("raw").get(pk=inbound_id)


def process_pending(limit: int = 100, older_than: timedelta | None = None) -> int:
    """Process up to ``limit`` messages still ``received``, oldest first; return how many."""
    pending = InboundMessage.objects.filter(status=Status.RECEIVED)
    if older_than is not None:
        pending = pending.filter(received_at__lte=clock.now() - older_than)
    done = 0
    for pk in pending.order_by("pk").values_list("pk", flat=True)[:limit]:
        try:
            if process(pk).status != Status.RECEIVED:
                done += 1
        except NotFound:
            continue
    return done


def _sweep_left_behind() -> int:
    return process_pending(limit=500, older_than=LEFT_BEHIND_AFTER)


sweep.register("mail-inbound", _sweep_left_behind)


def _may_process(message: InboundMessage, rerun: bool) -> bool:
    return message.status == Status.RECEIVED or (rerun and message.status in RERUNNABLE)


def lock_skip_locked(queryset: models.QuerySet) -> models.QuerySet:
    """``queryset`` locked for update, without the rows another transaction holds (on
    PostgreSQL; SQLite's write lock serialises writers anyway)."""
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset.select_for_update()


def _parse(message: InboundMessage) -> tuple[ParsedMessage | None, str]:
    """The parsed message, or ``None`` and why it cannot be read."""
    try:
        return parsing.parse(bytes(message.raw)), ""
    except Unparseable as exc:
        return None, _("Unparseable: %(error)s") % {"error": exc}
    except Exception as exc:
        log.exception("the parser failed on message %s", message.pk)
        return None, _("The parser failed: %(error)s") % {"error": describe_error(exc)}


def _process_row(
    message: InboundMessage, parsed: ParsedMessage | None, failure: str, *, rerun: bool
) -> None:
    message.attempts += 1
    if parsed is None:
        _finish(message, Status.QUARANTINED, failure)
        return
    message.message_id = clean_message_id(parsed.message_id)
    message.from_address = storable(parsed.from_address)[:320]
    message.subject = one_line(parsed.subject)[:300]
    message.flags = [*message.flags, *(f for f in parsed.flags if f not in message.flags)]

    if message.message_id:
        original = _original_of(message)
        if original is not None:
            message.content_type_id = original.content_type_id
            message.object_id = original.object_id
            reason = _("The same Message-ID as message %(id)s.") % {"id": original.pk}
            _finish(message, Status.DUPLICATE, reason)
            return
    if parsed.automated:
        _finish(message, Status.IGNORED, parsed.automated)
        return
    if not rerun and not _within_rate_limit(message, parsed):
        mail = settings.TRELLIS["MAIL"]
        reason = _(
            "Rate limit: more than %(limit)s messages from %(sender)s in %(minutes)s minutes."
        ) % {
            "limit": mail["SENDER_LIMIT"],
            "sender": _sender_key(message, parsed),
            "minutes": mail["SENDER_WINDOW_SECONDS"] // 60,
        }
        _finish(message, Status.IGNORED, reason)
        return

    route = routing.route(message, parsed)
    if route.record is not None:
        record = route.record
        reply_handler = routing.reply_handler(type(record))
        if reply_handler is None:
            reason = _("No handler for replies to a %(type)s.") % {
                "type": record._meta.verbose_name
            }
            _finish(message, Status.QUARANTINED, reason)
            return

        def handle() -> models.Model | None:
            return reply_handler(record, message, parsed)

    elif route.mailbox is not None:
        mailbox = route.mailbox

        def handle() -> models.Model | None:
            return mailbox(message, parsed)

    else:
        addresses = ", ".join(message.recipients) or _("no recipient")
        _finish(
            message, Status.QUARANTINED, _("No mailbox for %(address)s.") % {"address": addresses}
        )
        return

    try:
        # A savepoint: a failing handler leaves nothing half-written.
        with transaction.atomic():
            made = handle()
    except Exception as exc:
        log.exception("the handler of message %s failed", message.pk)
        reason = _("The handler failed: %(error)s") % {"error": describe_error(exc)}
        _finish(message, Status.QUARANTINED, reason)
        return
    if made is not None:
        _link(message, made)
    _finish(message, Status.PROCESSED, "")


def _original_of(message: InboundMessage) -> InboundMessage | None:
    """The first message with the same Message-ID that was already made something of."""
    if connection.vendor == "postgresql":
        # Two copies processed at once would both find no original; the second waits here
        # until the first commits. (On SQLite the write lock already serialises them.)
        digest = hashlib.sha256(message.message_id.encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
            )
    return (
        InboundMessage.objects.filter(message_id=message.message_id, status__in=HANDLED)
        .exclude(pk=message.pk)
        .order_by("pk")
        .only("pk", "content_type_id", "object_id")
        .first()
    )


def _sender_key(message: InboundMessage, parsed: ParsedMessage) -> str:
    return parsed.from_address or message.envelope_from.lower() or message.peer or "unknown"


def _within_rate_limit(message: InboundMessage, parsed: ParsedMessage) -> bool:
    mail = settings.TRELLIS["MAIL"]
    return ratelimit.hit(
        "mail-sender:" + _sender_key(message, parsed),
        mail["SENDER_LIMIT"],
        mail["SENDER_WINDOW_SECONDS"],
    )


def _link(message: InboundMessage, record: models.Model) -> None:
    """Make ``message`` part of ``record`` (saved by the caller), and replies to it too."""
    message.content_type = ContentType.objects.get_for_model(type(record))
    message.object_id = record.pk
    routing.link_message(message.message_id, record)


def _finish(message: InboundMessage, status: str, reason: str) -> None:
    if status == Status.QUARANTINED:
        log.warning("message %s quarantined: %s", message.pk, reason)
    message.status = status
    message.reason = reason
    message.processed_at = clock.now()
    message.save(
        update_fields=[
            "status",
            "reason",
            "attempts",
            "processed_at",
            "message_id",
            "from_address",
            "subject",
            "flags",
            "content_type",
            "object_id",
        ]
    )


def describe_error(exc: BaseException) -> str:
    """An exception in words for the quarantine list."""
    if isinstance(exc, ValidationFailed):
        details = "; ".join(
            f"{name}: {' '.join(str(m) for m in messages)}" for name, messages in exc.errors.items()
        )
        return f"{exc.detail} {details}".strip()[:1000]
    if isinstance(exc, ServiceError):
        return str(exc.detail)[:1000]
    return f"{type(exc).__name__}: {exc}"[:1000]


# Reference resolvers: how an admin names a record to file a message into.

ReferenceResolver = Callable[[str], models.Model | None]
_resolvers: list[ReferenceResolver] = []


def register_reference_resolver(resolver: ReferenceResolver) -> None:
    """Let admins name records by a text reference, e.g. a tracking number ``CS-2026-000123``."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def unregister_reference_resolver(resolver: ReferenceResolver) -> None:
    if resolver in _resolvers:
        _resolvers.remove(resolver)


def resolve_reference(reference: str) -> models.Model | None:
    for resolver in _resolvers:
        try:
            record = resolver(reference)
        except Exception:
            log.exception("reference resolver %r failed on %r", resolver, reference)
            continue
        if record is not None:
            return record
    return None


# What admins do with the quarantine.


def require_admin(actor: User) -> None:
    """Mail is administered by superusers and users with the administrator role."""
    # Not a 403: whether a message exists is not told to those who may not see it.
    if not is_admin(actor):
        raise NotFound(_("No such message."))


def messages_for(actor: User, status: str | None = None) -> models.QuerySet[InboundMessage]:
    """Incoming messages an admin may look at, newest first, without their raw bytes."""
    require_admin(actor)
    messages = InboundMessage.objects.defer("raw").order_by("-id")
    return messages.filter(status=status) if status else messages


def page_of(
    actor: User, status: str | None = None, number: int | None = 1, size: int | None = None
) -> Page:
    return paginate(messages_for(actor, status), number, size)


def get(actor: User, inbound_id: int) -> InboundMessage:
    require_admin(actor)
    message = InboundMessage.objects.filter(pk=inbound_id).first()
    if message is None:
        raise NotFound(_("No such message."))
    return message


def rerun(actor: User, inbound_id: int) -> InboundMessage:
    """Process a quarantined or ignored message again, e.g. after a fix or a new mailbox."""
    require_admin(actor)
    with transaction.atomic():
        message = _locked_for_admin(inbound_id)
        if message.status not in RERUNNABLE:
            raise Conflict(_("Only quarantined or ignored messages can be re-run."))
        before = message.status
        parsed, failure = _parse(message)
        _process_row(message, parsed, failure, rerun=True)
        _audit(actor, message, before, _("Re-ran the message"))
    return message


def dismiss(actor: User, inbound_id: int, reason: str) -> InboundMessage:
    """Leave a quarantined message be: it is kept, marked ignored, with the admin's reason."""
    require_admin(actor)
    reason = one_line(reason or "")
    if not reason:
        raise ValidationFailed({"reason": [_("Say why this message is dismissed.")]})
    with transaction.atomic():
        message = _locked_for_admin(inbound_id)
        if message.status not in DISMISSABLE:
            raise Conflict(_("Only quarantined messages can be dismissed."))
        before = message.status
        message.status = Status.IGNORED
        message.reason = _("Dismissed by %(user)s: %(reason)s") % {
            "user": actor,
            "reason": reason[:500],
        }
        message.processed_at = clock.now()
        message.save(update_fields=["status", "reason", "processed_at"])
        _audit(actor, message, before, _("Dismissed the message"))
    return message


def file_into(actor: User, inbound_id: int, reference: str) -> InboundMessage:
    """File a message by hand into the record ``reference`` names, through its reply handler."""
    require_admin(actor)
    reference = one_line(reference or "")
    if not reference:
        raise ValidationFailed({"reference": [_("Name the record to file this message into.")]})
    with transaction.atomic():
        message = _locked_for_admin(inbound_id)
        if message.status not in FILEABLE:
            raise Conflict(_("Only quarantined or ignored messages can be filed by hand."))
        record = resolve_reference(reference)
        if record is None:
            raise ValidationFailed({"reference": [_("No record has this reference.")]})
        reply_handler = routing.reply_handler(type(record))
        if reply_handler is None:
            raise ValidationFailed(
                {"reference": [_("Mail cannot be filed into this kind of record.")]}
            )
        parsed, _failure = _parse(message)
        parsed = parsed or _stand_in(message)
        try:
            with transaction.atomic():
                made = reply_handler(record, message, parsed) or record
        except Exception as exc:
            log.warning("filing message %s into %r failed", message.pk, record, exc_info=True)
            raise Conflict(
                _("The record did not take the message: %(error)s") % {"error": describe_error(exc)}
            ) from exc
        before = message.status
        message.status = Status.FILED
        message.processed_at = clock.now()
        _link(message, made)
        message.save(update_fields=["status", "processed_at", "content_type", "object_id"])
        _audit(actor, message, before, _("Filed the message into %(record)s") % {"record": made})
    return message


def _locked_for_admin(inbound_id: int) -> InboundMessage:
    message = InboundMessage.objects.select_for_update().filter(pk=inbound_id).first()
    if message is None:
        raise NotFound(_("No such message."))
    return message


def _stand_in(message: InboundMessage) -> ParsedMessage:
    """What can be said of a message the parser cannot read, for filing it by hand."""
    return ParsedMessage(
        message_id=message.message_id,
        in_reply_to=[],
        references=[],
        subject=message.subject,
        from_address=message.from_address,
        from_name="",
        to=[],
        cc=[],
        date=None,
        text=storable(bytes(message.raw).decode("utf-8", "replace"))[:100_000],
        html="",
        flags=["unparseable"],
    )


def _audit(actor: User, message: InboundMessage, before: str, summary: str) -> None:
    audit.record(
        actor,
        message,
        AuditEvent.Action.UPDATED,
        {"status": [before, message.status]},
        summary,
    )
    events.emit("mail.inbound.changed", id=message.pk, status=message.status, actor_id=actor.pk)
