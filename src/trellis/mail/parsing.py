"""Raw RFC 5322 bytes in, a ``ParsedMessage`` out: what the rest of Trellis reads of an e-mail.

Customer mail is hostile and often broken. Parsing never refuses a message for a bad charset: it
decodes by best effort and notes what it guessed in ``flags``. It raises ``Unparseable`` only
when nothing useful can be read (no headers at all), which sends the message to the quarantine.
"""

from dataclasses import dataclass, field
from datetime import datetime


class Unparseable(Exception):
    """The message cannot be read; the text says why, for the quarantine list."""


@dataclass(frozen=True)
class Attachment:
    # A safe file name: no directories, no control characters, at most 200 characters.
    filename: str
    content_type: str
    data: bytes
    # False when its type or ending is on MAIL["FORBIDDEN_EXTENSIONS"] or it is over
    # MAIL["MAX_ATTACHMENT_BYTES"] (then ``data`` is empty and ``size`` the original size).
    allowed: bool = True
    size: int = 0


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str  # without angle brackets; "" when the message has none
    in_reply_to: list[str]  # Message-IDs, without angle brackets
    references: list[str]
    subject: str  # decoded (RFC 2047), one line, no CR/LF
    from_address: str  # lower-cased address; "" when missing or unreadable
    from_name: str
    to: list[str]
    cc: list[str]
    date: datetime | None
    text: str  # the readable body: text/plain, or text made from the HTML part
    html: str  # the HTML part sanitised with nh3 ("" when there is none)
    attachments: list[Attachment] = field(default_factory=list)
    # "ko" when the subject or text is mostly Hangul, else "en".
    language: str = "en"
    # Why this is not a person writing: "auto-reply: Auto-Submitted: auto-replied",
    # "bounce: delivery status notification", "list: Precedence: bulk"; "" for a person.
    automated: str = ""
    flags: list[str] = field(default_factory=list)


def parse(raw: bytes) -> ParsedMessage:
    raise NotImplementedError
