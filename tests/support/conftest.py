"""What the support tests share: an agent, a customer's case, and mail handed to the intake.

``mail_in(...)`` stores a message row and gives the intake's mailbox handler a
``ParsedMessage`` made here, so intake behaviour is tested apart from the parser; the tests that
go through the SMTP listener use real bytes.
"""

import itertools
from email.utils import make_msgid

import pytest
from django.conf import settings

from trellis.core.models import Role
from trellis.mail import routing
from trellis.mail.models import InboundMessage
from trellis.mail.parsing import Attachment, ParsedMessage
from trellis.support import intake
from trellis.support.models import Case, CaseEvent

from .. import factories

_serial = itertools.count(1)
CUSTOMER = "kim@example.co.kr"


@pytest.fixture
def agent(db, team):
    """A support agent whose surname and address must never reach a customer."""
    return factories.user(
        Role.SUPPORT,
        username="agent",
        first_name="Minji",
        last_name="Zwolinski",
        email="minji.zwolinski@staff.example.com",
        team=team,
    )


def parsed(
    subject: str = "Export fails",
    *,
    text: str = "The export to Excel fails since this morning.",
    sender: str = CUSTOMER,
    name: str = "Kim Minji",
    message_id: str | None = None,
    in_reply_to: list[str] | None = None,
    references: list[str] | None = None,
    language: str = "en",
    html: str = "",
    attachments: list[Attachment] | None = None,
    automated: str = "",
) -> ParsedMessage:
    return ParsedMessage(
        message_id=message_id if message_id is not None else make_msgid().strip("<>"),
        in_reply_to=in_reply_to or [],
        references=references or [],
        subject=subject,
        from_address=sender,
        from_name=name,
        to=[settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]],
        cc=[],
        date=None,
        text=text,
        html=html,
        attachments=attachments or [],
        language=language,
        automated=automated,
    )


def stored(message: ParsedMessage) -> InboundMessage:
    """The row the listener would have stored for ``message``."""
    raw = f"Subject: {message.subject}\r\n\r\n{message.text}\r\n".encode()
    return InboundMessage.objects.create(
        envelope_from=message.from_address,
        recipients=[settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]],
        raw=raw,
        size=len(raw),
        message_id=message.message_id,
        from_address=message.from_address,
        subject=message.subject[:300],
    )


@pytest.fixture
def mail_in(db):
    """``mail_in(subject, text=..., sender=...)``: hand a message to the support mailbox."""

    def deliver(*args, **kwargs) -> Case:
        message = parsed(*args, **kwargs)
        case = intake.handle_mail(stored(message), message)
        # What the mail layer does with the record a handler returns: replies to it find it.
        routing.link_message(message.message_id, case)
        return case

    return deliver


@pytest.fixture
def open_web_case(db):
    """``open_web_case(**overrides)`` -> (case, access key), as the web form would open it."""

    def open_case(**overrides):
        values = {
            "channel": Case.Channel.WEB,
            "subject": f"Export fails {next(_serial)}",
            "body": "The export to Excel fails since this morning.",
            "requester_email": CUSTOMER,
            "requester_name": "Kim Minji",
        }
        values.update(overrides)
        return intake.open_case(**values)

    return open_case


def add_event(case: Case, kind: str, *, public: bool, body: str = "", actor=None, **data):
    """A timeline entry as the agent side writes it (for what the customer may see)."""
    return CaseEvent.objects.create(
        case=case,
        kind=kind,
        public=public,
        actor=actor,
        author=actor.first_name if actor is not None else "",
        body=body,
        data=data,
    )
