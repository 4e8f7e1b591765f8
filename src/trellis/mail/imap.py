"""Polling an IMAP mailbox for support mail, for sites whose mail arrives elsewhere.

``TRELLIS_IMAP_URL`` names the mailbox; the worker's sweep polls it, and ``trellis manage
imap_poll`` polls it once. Each new message is fetched without marking it read, stored raw
(``inbound.store``, channel IMAP) together with how far the mailbox has been read, and only after
that commit flagged ``\\Seen`` on the server; then it is processed like mail from the listener.

Messages are read by UID: ``ImapMailbox`` keeps the mailbox's UIDVALIDITY and the last UID
stored, so a message is fetched once, read or unread, whatever else reads the mailbox. When
the server announces another UIDVALIDITY (the mailbox was recreated) the mailbox is read again
from the start; messages already stored then come back as duplicates by their Message-ID.

A server that is down or refuses the login raises ``ImapError``; the sweep logs it and tries
again at its next run, and the messages wait on the server. A message that cannot be stored is
left unread and is tried again at the next poll, before any later message.
"""

import contextlib
import imaplib
import logging
import ssl
from datetime import timedelta
from email.utils import getaddresses
from typing import Any

from django.conf import settings
from django.db.models import Q

from trellis.core import clock, sweep

from . import inbound, routing
from .models import ImapMailbox, InboundMessage

log = logging.getLogger(__name__)

# Messages fetched in one poll; the rest wait for the next one.
BATCH = 200
TIMEOUT_SECONDS = 30
# How long one poller holds the mailbox; longer than a poll of BATCH messages takes.
LEASE = timedelta(minutes=10)


class ImapError(Exception):
    """The mailbox could not be read now (server down, login refused); nothing was lost."""


def configured() -> dict[str, Any] | None:
    return settings.TRELLIS["MAIL"]["IMAP"]


def poll(config: dict[str, Any] | None = None) -> int:
    """Store and process the new messages of the mailbox; how many were stored.

    Returns 0 at once when another poller holds the mailbox.
    """
    config = config or configured()
    if not config:
        return 0
    name = f"{config['USER']}@{config['HOST']}:{config['PORT']}/{config['MAILBOX']}"[:300]
    mailbox, _created = ImapMailbox.objects.get_or_create(name=name)
    if not _lease(mailbox):
        return 0
    stored: list[int] = []
    try:
        client = _connect(config)
        try:
            _read_new(client, config, mailbox, stored)
        finally:
            _logout(client)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{name}: {exc}") from exc
    finally:
        ImapMailbox.objects.filter(pk=mailbox.pk).update(leased_until=None, polled_at=clock.now())
        # What was stored is processed even when the server went away half-way.
        for start in range(0, len(stored), inbound.BATCH_SIZE):
            inbound.process_batch(stored[start : start + inbound.BATCH_SIZE])
    return len(stored)


def _lease(mailbox: ImapMailbox) -> bool:
    now = clock.now()
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    return bool(ImapMailbox.objects.filter(free, pk=mailbox.pk).update(leased_until=now + LEASE))


def _connect(config: dict[str, Any]) -> imaplib.IMAP4:
    host, port = config["HOST"], config["PORT"]
    if config["SECURITY"] == "ssl":
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
            host, port, ssl_context=ssl.create_default_context(), timeout=TIMEOUT_SECONDS
        )
    else:
        client = imaplib.IMAP4(host, port, timeout=TIMEOUT_SECONDS)
        if config["SECURITY"] == "starttls":
            client.starttls(ssl.create_default_context())
    try:
        client.login(config["USER"], config["PASSWORD"])
    except BaseException:
        _logout(client)
        raise
    return client


def _logout(client: imaplib.IMAP4) -> None:
    with contextlib.suppress(OSError, imaplib.IMAP4.error):
        client.logout()


def _read_new(
    client: imaplib.IMAP4, config: dict[str, Any], mailbox: ImapMailbox, stored: list[int]
) -> None:
    status, data = client.select(_quoted(config["MAILBOX"]))
    if status != "OK":
        raise imaplib.IMAP4.error(f"cannot open the mailbox: {data!r}")
    _kind, values = client.response("UIDVALIDITY")
    uidvalidity = int(values[0]) if values and values[0] else 0
    if uidvalidity != mailbox.uidvalidity:
        if mailbox.uidvalidity:
            log.warning(
                "IMAP mailbox %s has a new UIDVALIDITY (%s, was %s): reading it from the start",
                mailbox.name,
                uidvalidity,
                mailbox.uidvalidity,
            )
        mailbox.uidvalidity, mailbox.last_uid = uidvalidity, 0
        mailbox.save(update_fields=["uidvalidity", "last_uid"])
    status, data = client.uid("SEARCH", None, f"UID {mailbox.last_uid + 1}:*")
    if status != "OK":
        raise imaplib.IMAP4.error(f"cannot search the mailbox: {data!r}")
    # "n:*" names the last message even when its UID is below n.
    uids = sorted(int(uid) for uid in (data[0] or b"").split() if int(uid) > mailbox.last_uid)
    for uid in uids[:BATCH]:
        status, data = client.uid("FETCH", str(uid), "(UID BODY.PEEK[])")
        raw = next((part[1] for part in data if isinstance(part, tuple)), None)
        if status != "OK" or raw is None:
            # Deleted from the mailbox since the search.
            _remember(mailbox, uid)
            continue
        try:
            message = inbound.store(
                raw,
                envelope_from="",
                recipients=_recipients(raw),
                peer=config["HOST"],
                channel=InboundMessage.Channel.IMAP,
                also=lambda _message, uid=uid: _remember(mailbox, uid),
            )
        except inbound.MessageTooLarge:
            log.warning(
                "message UID %s of %s is over MAX_MESSAGE_BYTES; left unread on the server",
                uid,
                mailbox.name,
            )
            _remember(mailbox, uid)
            continue
        except Exception:
            log.exception(
                "could not store message UID %s of %s; it stays unread for the next poll",
                uid,
                mailbox.name,
            )
            return
        stored.append(message.pk)
        client.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Seen)")


def _recipients(raw: bytes) -> list[str]:
    """Our mailboxes the message is addressed to, else the support address.

    A polled mailbox has no envelope; what it holds is mostly mail for the support address,
    under whatever alias forwarded it there.
    """
    names = ("to", "cc", "delivered-to", "x-original-to")
    values = [value for name, value in inbound.headers_of(raw) if name.lower() in names]
    ours = [address for _name, address in getaddresses(values) if routing.mailbox(address)]
    return list(dict.fromkeys(ours)) or [settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]]


def _remember(mailbox: ImapMailbox, uid: int) -> None:
    mailbox.last_uid = uid
    mailbox.save(update_fields=["last_uid"])


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sweep() -> int:
    if not configured():
        return 0
    try:
        return poll()
    except ImapError as exc:
        log.warning("could not poll the IMAP mailbox (%s); trying again at the next sweep", exc)
        return 0


sweep.register("mail-imap", _sweep)
