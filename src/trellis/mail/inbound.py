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

import contextlib
import hashlib
import logging
from collections.abc import Callable
from contextvars import ContextVar
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
# Stored messages one processing transaction takes at most (see ``process_batch``).
BATCH_SIZE = 50
# True while a batch is processed: finished rows are saved together at the end.
_in_batch: ContextVar[bool] = ContextVar("mail_in_batch", default=False)


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
    row = InboundMessage(
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
    if also is None and not connection.in_atomic_block:
        # Outside any transaction the INSERT commits by itself: one round trip to the
        # database, where an atomic block adds a BEGIN and a COMMIT of their own.
        row.save(force_insert=True)
        return row
    # durable=True: the caller answers 250 on the strength of this commit, so it must not be
    # swallowed by an outer transaction that could still roll back.
    with transaction.atomic(durable=True):
        row.save(force_insert=True)
        if also is not None:
            also(row)
    return row


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


def process_batch(inbound_ids: list[int]) -> None:
    """Process several stored messages in one transaction; each ends as ``process`` would
    have left it.

    Reads are made for all of them at once (earlier copies by Message-ID, the records their
    In-Reply-To and References name) and a mailbox that can take many messages at once
    (``routing.mailbox_batch``) gets them together, so that it can write its rows in bulk; the
    rows of the messages are saved together at the end. A message whose handler fails is
    quarantined alone; if the batch fails as a whole (a bulk write refused, the database busy),
    nothing of it is kept and each message is processed alone with ``process``. A process
    killed mid-batch leaves every row ``received``, for the sweeper or the listener's start.

    A message is put off to be processed alone after the batch commits when what it depends on
    is written in the same batch: a later copy (same Message-ID) of a message the batch did not
    make something of, and a reply to a message of the batch.
    """
    if len(inbound_ids) <= 1:
        for pk in inbound_ids:
            _process_alone(pk)
        return
    token = _in_batch.set(True)
    try:
        # The batch's events reach their subscribers together once it commits: a subscriber
        # with a batch form does once what it would do for each message.
        with events.dispatched_together(), transaction.atomic():
            put_off = _process_together(inbound_ids)
    except Exception:
        log.exception("a batch of %d messages failed; processing them one by one", len(inbound_ids))
        put_off = inbound_ids
    finally:
        _in_batch.reset(token)
    for pk in put_off:
        _process_alone(pk)


def _process_alone(inbound_id: int) -> None:
    with contextlib.suppress(NotFound):
        process(inbound_id)


def _process_together(inbound_ids: list[int]) -> list[int]:
    """The batch's work inside its transaction; the ids left for one-by-one processing."""
    rows = list(
        lock_skip_locked(
            InboundMessage.objects.filter(pk__in=inbound_ids, status=Status.RECEIVED)
        ).order_by("pk")
    )
    readable: list[tuple[InboundMessage, ParsedMessage]] = []
    for message in rows:
        parsed, failure = _parse(message)
        if _read(message, parsed, failure):
            assert parsed is not None
            readable.append((message, parsed))

    message_ids = [m.message_id for m, _p in readable if m.message_id]
    _lock_message_ids(message_ids)
    originals = _originals_by_message_id(message_ids)
    first_copies: dict[str, InboundMessage] = {}
    later_copies: list[tuple[InboundMessage, InboundMessage]] = []
    put_off: list[InboundMessage] = []
    fresh: list[tuple[InboundMessage, ParsedMessage]] = []
    for message, parsed in readable:
        if message.message_id:
            original = originals.get(message.message_id)
            if original is not None:
                _finish_duplicate(message, original)
                continue
            if message.message_id in first_copies:
                later_copies.append((message, first_copies[message.message_id]))
                continue
        referred = {*parsed.in_reply_to, *parsed.references}
        if referred & first_copies.keys():
            put_off.append(message)
            continue
        if message.message_id:
            first_copies[message.message_id] = message
        fresh.append((message, parsed))
    within = _within_rate_limits([(m, p) for m, p in fresh if not p.automated])
    routable = [
        (message, parsed)
        for message, parsed in fresh
        if not _screened_out(message, parsed, rerun=False, within=within.get(message.pk))
    ]

    made: list[tuple[InboundMessage, models.Model]] = []
    together: dict[routing.MailboxHandler, list[tuple[InboundMessage, ParsedMessage]]] = {}
    for (message, parsed), route in zip(routable, routing.route_many(routable), strict=True):
        if route.mailbox is not None and routing.mailbox_batch(route.mailbox) is not None:
            together.setdefault(route.mailbox, []).append((message, parsed))
            continue
        handle = _handler(message, parsed, route)
        if handle is None:
            continue
        try:
            with transaction.atomic():
                record = handle()
        except Exception as exc:
            _handler_failed(message, exc)
            continue
        made.append((message, record))
    for mailbox, pairs in together.items():
        many = routing.mailbox_batch(mailbox)
        assert many is not None
        for (message, _parsed), result in zip(pairs, many(pairs), strict=True):
            if isinstance(result, Exception):
                _handler_failed(message, result)
            else:
                made.append((message, result))

    content_types = ContentType.objects
    links = []
    for message, record in made:
        if record is not None:
            message.content_type = content_types.get_for_model(type(record))
            message.object_id = record.pk
            links.append((message.message_id, record))
        _finish(message, Status.PROCESSED, "")
    routing.link_messages(links)
    for message, first in later_copies:
        if first.status in HANDLED:
            _finish_duplicate(message, first)
        else:
            put_off.append(message)
    _save_finished([m for m in rows if m.status != Status.RECEIVED])
    return [m.pk for m in put_off]


def _save_finished(messages: list[InboundMessage]) -> None:
    """Save what processing wrote to these rows, in one round trip.

    One UPDATE by primary key, run for every row (``executemany``, pipelined by psycopg):
    ``bulk_update``'s CASE expressions cost more Python than the rest of a batch's writes.
    """
    if not messages:
        return
    meta = InboundMessage._meta
    fields = [meta.get_field(name) for name in _FINISHED_FIELDS]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    # Only names from the model are formatted in; values go as parameters.
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "  # noqa: S608
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    rows = [
        [field.get_db_prep_save(getattr(m, field.attname), connection) for field in fields] + [m.pk]
        for m in messages
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _originals_by_message_id(message_ids: list[str]) -> dict[str, InboundMessage]:
    """For each Message-ID, the first message with it that was already made something of."""
    if not message_ids:
        return {}
    originals: dict[str, InboundMessage] = {}
    for original in (
        InboundMessage.objects.filter(message_id__in=set(message_ids), status__in=HANDLED)
        .order_by("pk")
        .only("pk", "message_id", "content_type_id", "object_id")
    ):
        originals.setdefault(original.message_id, original)
    return originals


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
    if not _read(message, parsed, failure):
        return
    assert parsed is not None
    if message.message_id:
        _lock_message_ids([message.message_id])
        original = _original_of(message)
        if original is not None:
            _finish_duplicate(message, original)
            return
    if _screened_out(message, parsed, rerun=rerun):
        return
    route = routing.route(message, parsed)
    handle = _handler(message, parsed, route)
    if handle is None:
        return
    try:
        # A savepoint: a failing handler leaves nothing half-written.
        with transaction.atomic():
            made = handle()
    except Exception as exc:
        _handler_failed(message, exc)
        return
    if made is not None:
        _link(message, made)
    _finish(message, Status.PROCESSED, "")


def _read(message: InboundMessage, parsed: ParsedMessage | None, failure: str) -> bool:
    """Take what the parser read into the row; ``False`` (and quarantined) if it read nothing."""
    message.attempts += 1
    if parsed is None:
        _finish(message, Status.QUARANTINED, failure)
        return False
    message.message_id = clean_message_id(parsed.message_id)
    message.from_address = storable(parsed.from_address)[:320]
    message.subject = one_line(parsed.subject)[:300]
    message.flags = [*message.flags, *(f for f in parsed.flags if f not in message.flags)]
    return True


def _finish_duplicate(message: InboundMessage, original: InboundMessage) -> None:
    message.content_type_id = original.content_type_id
    message.object_id = original.object_id
    reason = _("The same Message-ID as message %(id)s.") % {"id": original.pk}
    _finish(message, Status.DUPLICATE, reason)


def _screened_out(
    message: InboundMessage, parsed: ParsedMessage, *, rerun: bool, within: bool | None = None
) -> bool:
    """Automated mail and a sender over the rate limit are ignored (and finished here).

    ``within`` is whether the sender is within the rate limit, when the caller counted it.
    """
    if parsed.automated:
        _finish(message, Status.IGNORED, parsed.automated)
        return True
    if within is None and not rerun:
        within = _within_rate_limit(message, parsed)
    if not rerun and not within:
        mail = settings.TRELLIS["MAIL"]
        reason = _(
            "Rate limit: more than %(limit)s messages from %(sender)s in %(minutes)s minutes."
        ) % {
            "limit": mail["SENDER_LIMIT"],
            "sender": _sender_key(message, parsed),
            "minutes": mail["SENDER_WINDOW_SECONDS"] // 60,
        }
        _finish(message, Status.IGNORED, reason)
        return True
    return False


def _handler(
    message: InboundMessage, parsed: ParsedMessage, route: routing.Route
) -> Callable[[], models.Model | None] | None:
    """What makes the message part of a record; ``None`` (and quarantined) when nothing can."""
    if route.record is not None:
        record = route.record
        reply_handler = routing.reply_handler(type(record))
        if reply_handler is None:
            reason = _("No handler for replies to a %(type)s.") % {
                "type": record._meta.verbose_name
            }
            _finish(message, Status.QUARANTINED, reason)
            return None
        return lambda: reply_handler(record, message, parsed)
    if route.mailbox is not None:
        mailbox = route.mailbox
        return lambda: mailbox(message, parsed)
    addresses = ", ".join(message.recipients) or _("no recipient")
    _finish(message, Status.QUARANTINED, _("No mailbox for %(address)s.") % {"address": addresses})
    return None


def _handler_failed(message: InboundMessage, exc: BaseException) -> None:
    log.error("the handler of message %s failed", message.pk, exc_info=exc)
    reason = _("The handler failed: %(error)s") % {"error": describe_error(exc)}
    _finish(message, Status.QUARANTINED, reason)


def _lock_message_ids(message_ids: list[str]) -> None:
    """Two copies processed at once would both find no original; the second waits here until
    the first commits. (On SQLite the write lock already serialises them.) Taken in one order,
    so that two batches waiting for each other's Message-IDs cannot deadlock."""
    if connection.vendor != "postgresql" or not message_ids:
        return
    keys = sorted(
        {
            int.from_bytes(hashlib.sha256(m.encode()).digest()[:8], "big", signed=True)
            for m in message_ids
        }
    )
    with connection.cursor() as cursor:
        if len(keys) == 1:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", keys)
        else:
            cursor.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", [keys]
            )


def _original_of(message: InboundMessage) -> InboundMessage | None:
    """The first message with the same Message-ID that was already made something of."""
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
    return _within_rate_limits([(message, parsed)])[message.pk]


def _within_rate_limits(pairs: list[tuple[InboundMessage, ParsedMessage]]) -> dict[int, bool]:
    """``_within_rate_limit`` of each message (by id), counted in one statement for all of
    them. A counter's row stays locked until the batch commits; the rows are bumped in the
    order of the senders, so two batches with the same senders wait for each other instead
    of deadlocking."""
    mail = settings.TRELLIS["MAIL"]
    keys = ["mail-sender:" + _sender_key(message, parsed) for message, parsed in pairs]
    within = ratelimit.hit_many(keys, mail["SENDER_LIMIT"], mail["SENDER_WINDOW_SECONDS"])
    return {message.pk: ok for (message, _parsed), ok in zip(pairs, within, strict=True)}


def _link(message: InboundMessage, record: models.Model) -> None:
    """Make ``message`` part of ``record`` (saved by the caller), and replies to it too."""
    message.content_type = ContentType.objects.get_for_model(type(record))
    message.object_id = record.pk
    routing.link_message(message.message_id, record)


# What processing writes to a message's row.
_FINISHED_FIELDS = [
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


def _finish(message: InboundMessage, status: str, reason: str) -> None:
    """Set the outcome and save it; in a batch, the rows are saved together at its end."""
    if status == Status.QUARANTINED:
        log.warning("message %s quarantined: %s", message.pk, reason)
    message.status = status
    message.reason = reason
    message.processed_at = clock.now()
    if not _in_batch.get():
        message.save(update_fields=_FINISHED_FIELDS)


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
