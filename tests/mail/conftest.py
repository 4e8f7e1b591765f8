"""What the mail tests share: messages built with the stdlib, and a test mailbox.

The mailbox and reply handler here make core ``Team`` rows, so the transport is tested without
the support desk: a message to ``desk@<mail domain>`` becomes a team named after its subject,
and a reply to a team's reply address (or to a Message-ID linked to a team) is recorded as a
team "Re <id>: <subject>".
"""

import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid

import pytest
from django.conf import settings

from trellis.core.models import Team
from trellis.mail import inbound, routing
from trellis.mail.models import InboundMessage


def desk_address() -> str:
    return f"desk@{settings.MAIL_DOMAIN}"


def build(
    subject: str = "Export fails",
    *,
    sender: str = "kim@example.co.kr",
    to: str | None = None,
    body: str = "The export to Excel fails since this morning.\n",
    message_id: str | None = None,
    in_reply_to: str = "",
    references: str = "",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One plain message as raw bytes (CRLF line ends, as SMTP carries them)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to or desk_address()
    message["Subject"] = subject
    message["Date"] = "Mon, 02 Mar 2026 09:15:00 +0900"
    message["Message-ID"] = message_id or make_msgid(domain="example.co.kr")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()


def store(raw: bytes, *, to: list[str] | None = None, sender: str = "kim@example.co.kr"):
    return inbound.store(raw, envelope_from=sender, recipients=to or [desk_address()])


def send(port: int, raw: bytes, *, to: list[str] | None = None, sender: str = "kim@example.co.kr"):
    """Send through the listener as a mail server would; the answer to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.example.co.kr")
        code, answer = client.mail(sender)
        assert code == 250, answer
        for address in to or [desk_address()]:
            code, answer = client.rcpt(address)
            assert code == 250, answer
        return client.data(raw)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@dataclass
class Desk:
    """The test mailbox and reply handler, and what they were handed."""

    mails: list[int] = field(default_factory=list)
    replies: list[tuple[int, int]] = field(default_factory=list)
    # Raised by the handlers after they wrote their team, to test the rollback.
    fail_with: Exception | None = None

    def handle_mail(self, message: InboundMessage, parsed) -> Team:
        team = Team.objects.create(name=f"{parsed.subject} #{message.pk}")
        self.mails.append(message.pk)
        if self.fail_with is not None:
            raise self.fail_with
        return team

    def handle_reply(self, record: Team, message: InboundMessage, parsed) -> Team:
        Team.objects.create(name=f"Re {record.pk}: {parsed.subject} #{message.pk}")
        self.replies.append((record.pk, message.pk))
        if self.fail_with is not None:
            raise self.fail_with
        return record


def team_by_reference(reference: str) -> Team | None:
    prefix = "TEAM-"
    if not reference.upper().startswith(prefix) or not reference[len(prefix) :].isdigit():
        return None
    return Team.objects.filter(pk=int(reference[len(prefix) :])).first()


@pytest.fixture
def desk():
    """A mailbox desk@<mail domain>, replies to teams, and TEAM-<id> references."""
    handlers = Desk()
    routing.register_mailbox(desk_address(), handlers.handle_mail)
    previous = routing.reply_handler(Team)
    routing.register_reply_handler(Team, handlers.handle_reply)
    inbound.register_reference_resolver(team_by_reference)
    yield handlers
    routing.unregister_mailbox(desk_address().lower())
    if previous is None:
        routing.unregister_reply_handler(Team)
    else:
        routing.register_reply_handler(Team, previous)
    inbound.unregister_reference_resolver(team_by_reference)


@pytest.fixture
def mail_settings(monkeypatch):
    """``mail_settings(SENDER_LIMIT=3)``: change MAIL settings for this test."""

    def change(**values):
        for name, value in values.items():
            monkeypatch.setitem(settings.TRELLIS["MAIL"], name, value)

    return change
