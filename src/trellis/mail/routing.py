"""Which record an incoming message belongs to, and who handles it.

Domain apps register handlers from ``AppConfig.ready``; mail never imports them.

- A *mailbox* handles mail to one address of ours (the support address): ``handler(inbound,
  parsed)`` returns the record the message became part of. A mailbox may also take many
  messages at once, in the processing transaction of a batch: its batch form, registered with
  it (``many``), is given ``(inbound, parsed)`` pairs and returns, for each, the record or the
  exception that stopped that message alone, having written nothing for it (see
  ``mailbox_batch``).
- A *reply handler* handles a reply to one record type: ``handler(record, inbound, parsed)``.

The mail layer links the message's Message-ID to the record a handler returns, so later replies
find it.

A message is routed, in this order, by a per-record reply address in its recipients
(``reply+<signed token>@domain``), by its In-Reply-To and References headers (every Message-ID we
sent or received for a record is a ``MessageLink``), and by the mailbox it was sent to.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils.crypto import constant_time_compare, salted_hmac

from .models import InboundMessage, MessageLink
from .parsing import ParsedMessage

MailboxHandler = Callable[[InboundMessage, ParsedMessage], models.Model | None]
BatchHandler = Callable[
    [list[tuple[InboundMessage, ParsedMessage]]], list[models.Model | Exception | None]
]
ReplyHandler = Callable[[models.Model, InboundMessage, ParsedMessage], models.Model | None]

_mailboxes: dict[str, MailboxHandler] = {}
# A mailbox handler's form that takes the messages of a batch together.
_batch_forms: dict[MailboxHandler, BatchHandler] = {}
_reply_handlers: dict[type[models.Model], ReplyHandler] = {}
_SALT = "trellis.mail.reply-address"


def register_mailbox(
    address: str, handler: MailboxHandler, *, many: BatchHandler | None = None
) -> None:
    """Mail to ``address`` goes to ``handler``; the messages of a batch go to ``many`` instead,
    if given."""
    _mailboxes[address.lower()] = handler
    if many is not None:
        _batch_forms[handler] = many


def register_reply_handler(model: type[models.Model], handler: ReplyHandler) -> None:
    _reply_handlers[model] = handler


def unregister_mailbox(address: str) -> None:
    handler = _mailboxes.pop(address.lower(), None)
    if handler is not None and handler not in _mailboxes.values():
        _batch_forms.pop(handler, None)


def unregister_reply_handler(model: type[models.Model]) -> None:
    _reply_handlers.pop(model, None)


def mailbox(address: str) -> MailboxHandler | None:
    return _mailboxes.get(address.lower())


def reply_handler(model: type[models.Model]) -> ReplyHandler | None:
    return _reply_handlers.get(model)


def mailbox_batch(handler: MailboxHandler) -> BatchHandler | None:
    """The mailbox's way of taking many messages at once, if it was registered with one."""
    return _batch_forms.get(handler)


def reply_address(record: models.Model) -> str:
    """The address whose mail reaches ``record``: ``reply+<type>-<id>-<mac>@domain``.

    The MAC makes it unguessable and unalterable; it is hex, so a mail server that changes the
    case of the local part does not break it.
    """
    content_type = ContentType.objects.get_for_model(record)
    value = f"{content_type.pk}-{record.pk}"
    local = settings.TRELLIS["MAIL"]["REPLY_LOCAL_PART"]
    return f"{local}+{value}-{_mac(value)}@{settings.MAIL_DOMAIN}"


def _mac(value: str) -> str:
    return salted_hmac(_SALT, value).hexdigest()[:20]


@dataclass(frozen=True)
class Route:
    record: models.Model | None = None
    mailbox: MailboxHandler | None = None


def record_for_address(address: str) -> models.Model | None:
    """The record a reply address names, or ``None`` if it is not a valid one of ours."""
    local, _, domain = address.strip().lower().rpartition("@")
    prefix = settings.TRELLIS["MAIL"]["REPLY_LOCAL_PART"] + "+"
    if domain != settings.MAIL_DOMAIN.lower() or not local.startswith(prefix):
        return None
    try:
        content_type_id, object_id, mac = local[len(prefix) :].split("-")
        value = f"{int(content_type_id)}-{int(object_id)}"
    except ValueError:
        return None
    if not constant_time_compare(mac, _mac(value)):
        return None
    return _record(int(content_type_id), int(object_id))


def record_for_message_ids(message_ids: list[str]) -> models.Model | None:
    """The record the newest known of these Message-IDs belongs to."""
    if not message_ids:
        return None
    link = (
        MessageLink.objects.filter(message_id__in=[m[:250] for m in message_ids])
        .order_by("-id")
        .first()
    )
    return _record(link.content_type_id, link.object_id) if link else None


def link_message(message_id: str, record: models.Model) -> None:
    """Remember that ``message_id`` belongs to ``record`` (first record wins)."""
    link_messages([(message_id, record)])


def link_messages(links: list[tuple[str, models.Model]]) -> None:
    """``link_message`` for many Message-IDs, in one statement."""
    rows = [
        MessageLink(
            message_id=message_id[:250],
            content_type=ContentType.objects.get_for_model(type(record)),
            object_id=record.pk,
        )
        for message_id, record in links
        if message_id
    ]
    if rows:
        # One INSERT ... ON CONFLICT DO NOTHING: no read first, and no savepoint to recover
        # from a duplicate inside the caller's transaction.
        MessageLink.objects.bulk_create(rows, ignore_conflicts=True)


def route(inbound: InboundMessage, parsed: ParsedMessage) -> Route:
    return route_many([(inbound, parsed)])[0]


def route_many(pairs: list[tuple[InboundMessage, ParsedMessage]]) -> list[Route]:
    """The route of each message; the Message-IDs of all of them are looked up in one query."""
    routes: list[Route | None] = []
    referring: dict[int, list[str]] = {}
    for n, (inbound, parsed) in enumerate(pairs):
        record = _record_for_addresses(_recipients(inbound, parsed))
        routes.append(Route(record=record) if record is not None else None)
        if record is None:
            referring[n] = [m[:250] for m in [*parsed.in_reply_to, *parsed.references] if m]
    wanted = {message_id for ids in referring.values() for message_id in ids}
    # The newest link of each Message-ID wins, as in ``record_for_message_ids``.
    links: dict[str, tuple[int, int, int]] = {}
    if wanted:
        for link_id, message_id, content_type_id, object_id in MessageLink.objects.filter(
            message_id__in=wanted
        ).values_list("id", "message_id", "content_type_id", "object_id"):
            links[message_id] = (link_id, content_type_id, object_id)
    records: dict[tuple[int, int], models.Model | None] = {}
    for n, ids in referring.items():
        found = [links[m] for m in ids if m in links]
        if found:
            _link_id, content_type_id, object_id = max(found)
            key = (content_type_id, object_id)
            if key not in records:
                records[key] = _record(content_type_id, object_id)
            if records[key] is not None:
                routes[n] = Route(record=records[key])
    for n, (inbound, parsed) in enumerate(pairs):
        if routes[n] is None:
            handler = next(
                filter(None, map(mailbox, _recipients(inbound, parsed))),
                None,
            )
            routes[n] = Route(mailbox=handler)
    return routes  # type: ignore[return-value]


def _recipients(inbound: InboundMessage, parsed: ParsedMessage) -> list[str]:
    return [*inbound.recipients, *parsed.to, *parsed.cc]


def _record_for_addresses(addresses: list[str]) -> models.Model | None:
    for address in addresses:
        record = record_for_address(address)
        if record is not None:
            return record
    return None


def _record(content_type_id: int, object_id: int) -> models.Model | None:
    try:
        model = ContentType.objects.get_for_id(content_type_id).model_class()
    except ContentType.DoesNotExist:
        return None
    if model is None:
        return None
    return model._default_manager.filter(pk=object_id).first()
