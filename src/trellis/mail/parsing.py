"""Raw RFC 5322 bytes in, a ``ParsedMessage`` out: what the rest of Trellis reads of an e-mail.

Customer mail is hostile and often broken. Parsing never refuses a message for a bad charset: it
decodes by best effort and notes what it guessed in ``flags``. It raises ``Unparseable`` only
when nothing useful can be read (no headers at all), which sends the message to the quarantine.

The MIME structure is read by the stdlib ``email`` package with a ``policy.default`` variant that
hands back header values as they came. Headers are decoded here instead of by the stdlib's
header registry because that registry (a) is about ten times slower than the whole rest of the
parse, too slow for the intake's 200 messages a second, (b) decodes EUC-KR and Outlook's
``ks_c_5601-1987`` as strict EUC-KR, losing the CP949 syllables Korean Windows mailers send under
those labels, (c) leaves raw 8-bit header bytes as lone surrogates that no database can store,
and (d) decodes a multibyte character split across two encoded-words as two broken halves.

Charsets: every EUC-KR label decodes as CP949 (its superset); a missing, unknown or wrong label
falls back to UTF-8, then CP949, then Windows-1252 with undecodable bytes replaced, and the part
is flagged ``charset-guessed:<where>`` (``subject``, ``from``, ``text``, ``html``, ``attachment``).

Automated mail (``ParsedMessage.automated``), checked in this order: a delivery status report
(multipart/report; report-type=delivery-status) or mail from MAILER-DAEMON / postmaster is a
bounce; a read receipt (report-type=disposition-notification) is a receipt; RFC 3834
``Auto-Submitted`` other than "no", ``X-Autoreply``, ``X-Autorespond`` and ``X-Autoresponder``
mark an auto-reply; ``Precedence: bulk / junk / list`` and ``List-Id`` (RFC 2919: a post to a
mailing list, which RFC 3834 says not to answer) mark list mail; then vacation subjects in
English and Korean. ``List-Unsubscribe`` alone is not enough: since the 2024 bulk-sender rules
of Gmail and Yahoo, mail a person sends through a CRM or a ticket system carries it too, and
missing a customer's message costs more than an unwanted case.
"""

import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache
from mimetypes import guess_extension

from django.conf import settings

from .sanitize import clean_html_checked, render_text


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
    # The Content-ID without angle brackets, for an image the HTML shows inline ("cid:...").
    content_id: str = ""


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
    # Lower-cased Reply-To addresses (where the sender wants answers to go), if any.
    reply_to: list[str] = field(default_factory=list)


SUBJECT_LENGTH = 300
FILENAME_LENGTH = 200
# Beyond this a body is cut (the raw message keeps all of it) and flagged "body-truncated".
BODY_CHARS = 1_000_000
# Deeper MIME nesting than this is not read (and flagged "mime-too-deep").
MAX_DEPTH = 20
# A message declaring more multiparts and attached messages than this is not read at all.
MAX_CONTAINERS = 100
_CONTAINER_MARKERS = (
    b"multipart/",
    b"Multipart/",
    b"MULTIPART/",
    b"message/rfc822",
    b"Message/rfc822",
)
# Longer header values are cut (and flagged "header-truncated:<name>"); address lists and
# encoded-words cost time per character.
HEADER_CHARS = 32_768


class _RawHeaders(EmailPolicy):
    """``policy.default`` whose headers come back as the unfolded source text."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        if "\n" in value or "\r" in value:
            value = value.replace("\r", "").replace("\n", "")
        return value.strip()


_POLICY = _RawHeaders()


def parse(raw: bytes) -> ParsedMessage:
    """Read ``raw`` (the message as received). Raises ``Unparseable`` only for non-mail."""
    raw = bytes(raw).lstrip(b"\r\n")
    if not raw.strip():
        raise Unparseable("The message is empty.")
    if sum(raw.count(marker) for marker in _CONTAINER_MARKERS) > MAX_CONTAINERS:
        # The stdlib parser's cost grows with lines times nesting depth.
        raise Unparseable(f"The message has more than {MAX_CONTAINERS} nested MIME parts.")
    try:
        msg = message_from_bytes(raw, policy=_POLICY)
    except RecursionError:
        raise Unparseable("The MIME structure is nested too deeply to read.") from None
    headers: dict[str, str] = {}
    flags: list[str] = []
    for name, value in msg.items():
        name = name.lower()
        if name not in headers:
            if len(value) > HEADER_CHARS:
                value = value[:HEADER_CHARS]
                flags.append(f"header-truncated:{name}")
            headers[name] = value
    if not headers.keys() & _KNOWN_HEADERS:
        raise Unparseable("There is no e-mail header in the message.")

    subject, guessed = decode_header(headers.get("subject", ""))
    if guessed:
        flags.append("charset-guessed:subject")
    subject = one_line(subject)[:SUBJECT_LENGTH]

    from_name, from_address = "", ""
    senders = _addresses(headers.get("from", ""), flags, "from")
    if senders:
        from_name, from_address = senders[0]
    else:
        flags.append("from-missing")

    body = _Body(flags)
    pieces, html_pieces = body.entity(msg, 0)
    text, html = _text(pieces), "\n".join(html_pieces)
    if len(text) > BODY_CHARS:
        text = text[:BODY_CHARS]
        flags.append("body-truncated")

    return ParsedMessage(
        message_id=next(iter(_message_ids(headers.get("message-id", ""))), ""),
        in_reply_to=_message_ids(headers.get("in-reply-to", "")),
        references=_message_ids(headers.get("references", "")),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=[a for _, a in _addresses(headers.get("to", ""), flags, "to")],
        cc=[a for _, a in _addresses(headers.get("cc", ""), flags, "cc")],
        reply_to=[a for _, a in _addresses(headers.get("reply-to", ""), flags, "reply-to")],
        date=_date(headers.get("date", "")),
        text=text,
        html=html,
        attachments=body.attachments,
        language=language(subject, text),
        automated=automated(msg, headers, subject, from_address),
        flags=list(dict.fromkeys(flags)),
    )


_KNOWN_HEADERS = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
        "in-reply-to", "references", "mime-version", "content-type", "received", "return-path",
        "delivered-to", "x-mailer", "user-agent", "auto-submitted",
    }
)  # fmt: skip


# --- charsets -----------------------------------------------------------------------------

# EUC-KR labels: Korean Windows mailers write CP949 (a superset) under all of them.
_CP949_LABELS = (
    "euc-kr", "euc_kr", "euckr", "ks_c_5601-1987", "ks_c_5601_1987", "ks_c_5601", "ksc5601",
    "ksc_5601", "ks_x_1001", "korean", "iso-ir-149", "csksc56011987", "x-windows-949",
    "windows-949", "ms949", "cp949", "uhc", "x-uhc",
)  # fmt: skip
_ALIASES = {
    **dict.fromkeys(_CP949_LABELS, "cp949"),
    # As browsers do (WHATWG Encoding): these labels mean their superset in practice.
    **dict.fromkeys(("iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1"), "cp1252"),
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "euc-cn"), "gb18030"),
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "utf8": "utf-8",
}
# Codecs Python knows that no mailer means, or that turn bytes into lone surrogates.
_REFUSED_CODECS = frozenset({"unicode_escape", "raw_unicode_escape", "undefined", "idna"})
# Labels that say "I do not know".
_UNKNOWN_LABELS = frozenset({"unknown-8bit", "x-unknown", "unknown", "8bit", "x-user-defined"})
_ISO_2022_KR = b"\x1b$)C"


@lru_cache(maxsize=256)
def codec_for(label: str) -> str | None:
    """The Python codec to read ``label`` with, or ``None`` when the label is unknown."""
    label = label.strip().strip("\"'").lower().partition("*")[0]
    if label in _ALIASES:
        return _ALIASES[label]
    if not label or label in _UNKNOWN_LABELS or len(label) > 40:
        return None
    try:
        name = codecs.lookup(label).name
        b"a".decode(name)
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None
    name = name.replace("-", "_")
    if name in _REFUSED_CODECS or name == "euc_kr":
        return "cp949" if name == "euc_kr" else None
    return name


def decode_bytes(data: bytes, label: str | None) -> tuple[str, bool]:
    """``data`` as text, and whether the charset had to be guessed (``label`` was missing,
    unknown or wrong). Never fails."""
    codec = codec_for(label) if label else None
    if codec != "iso2022_kr" and _ISO_2022_KR in data and data.isascii():
        # ISO-2022-KR is 7-bit: without its label it passes for ASCII with stray escapes.
        try:
            return _scrub(data.decode("iso2022_kr")), True
        except UnicodeError:
            pass
    if codec == "cp1252" and not data.isascii():
        # Valid UTF-8 that is not ASCII is almost never Latin-1 text: a mislabelled message.
        try:
            return _scrub(data.decode("utf-8")), True
        except UnicodeError:
            pass
    if codec:
        try:
            return _scrub(data.decode(codec)), False
        except (UnicodeError, ValueError, LookupError):
            pass
    elif data.isascii():
        return _scrub(data.decode("ascii")), False
    for guess in ("utf-8", "cp949"):
        try:
            return _scrub(data.decode(guess)), True
        except UnicodeError:
            pass
    return _scrub(data.decode("cp1252", errors="replace")), True


_SURROGATES = re.compile("[\ud800-\udfff]")


def _scrub(text: str) -> str:
    """``text`` without NUL and lone surrogates, which no database stores."""
    if text.isascii():
        return text.replace("\x00", "") if "\x00" in text else text
    return _SURROGATES.sub("\ufffd", text.replace("\x00", ""))


def _source_bytes(value: str) -> bytes:
    """The bytes a parsed value came from (raw 8-bit bytes are kept as lone surrogates)."""
    return value.encode("utf-8", "surrogateescape")


# --- headers ------------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,60})\?([bBqQ])\?([^?]*)\?=")


def decode_header(value: str) -> tuple[str, bool]:
    """An unfolded header value with its RFC 2047 encoded-words and raw 8-bit bytes decoded,
    and whether a charset had to be guessed.

    Adjacent encoded-words in the same charset are joined before decoding, since Korean mailers
    split a syllable's bytes across two of them.
    """
    if "=?" not in value:
        if value.isascii():
            return value, False
        return _decode_raw(value)
    pieces: list[tuple[str | None, bytes | str]] = []  # (charset, data) or (None, text)
    guessed = False
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        position = match.end()
        charset, encoding, payload = match.groups()
        if between and not (between.isspace() and pieces and pieces[-1][0] is not None):
            text, raw_guess = _decode_raw(between)
            guessed |= raw_guess
            pieces.append((None, text))
        data = _word_bytes(encoding, payload)
        if pieces and pieces[-1][0] is not None and pieces[-1][0].lower() == charset.lower():
            previous = pieces[-1][1]
            assert isinstance(previous, bytes)
            pieces[-1] = (charset, previous + data)
        else:
            pieces.append((charset, data))
    rest = value[position:]
    if rest:
        text, raw_guess = _decode_raw(rest)
        guessed |= raw_guess
        pieces.append((None, text))
    out = []
    for charset, data in pieces:
        if isinstance(data, bytes):
            text, word_guess = decode_bytes(data, charset)
            guessed |= word_guess
            out.append(text)
        else:
            out.append(data)
    return "".join(out), guessed


def _decode_raw(value: str) -> tuple[str, bool]:
    """Unencoded header text: ASCII, or raw 8-bit (UTF-8 by RFC 6532, else guessed)."""
    if value.isascii():
        return value, False
    data = _source_bytes(value)
    try:
        return _scrub(data.decode("utf-8")), False
    except UnicodeError:
        return decode_bytes(data, None)


_NOT_BASE64 = bytes(
    set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
)


def _base64(data: bytes) -> bytes:
    """Base64 decoded leniently: stray characters skipped, missing padding added."""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    data = data.translate(None, _NOT_BASE64)
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = _source_bytes(payload)
    if encoding in "bB":
        return _base64(data)
    return binascii.a2b_qp(data, header=True)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """``text`` as one line: control characters (CR, LF, ...) gone, whitespace collapsed.

    What keeps a decoded subject from injecting headers into a reply that quotes it.
    """
    return " ".join(_CONTROL.sub(" ", text).split())


def _addresses(value: str, flags: list[str], where: str) -> list[tuple[str, str]]:
    """(display name, lower-cased address) of each readable address in a header value."""
    if not value:
        return []
    found = []
    for name, address in getaddresses([value]):
        if not address.isascii():
            address, _ = _decode_raw(address)
        address = address.strip().lower()
        if "@" not in address or not address.isprintable() or " " in address:
            continue
        name, guessed = decode_header(name)
        if guessed:
            flags.append(f"charset-guessed:{where}")
        found.append((one_line(name).strip("\"' "), address[:320]))
    return found


_ANGLE_ID = re.compile(r"<([^<>\s]+)>")


def _message_ids(value: str) -> list[str]:
    """The Message-IDs in a header value, without angle brackets, in order, each once."""
    if not value:
        return []
    # Without angle brackets, only what looks like an id ("Your message of ..." does not).
    ids = _ANGLE_ID.findall(value) or [i for i in value.split() if "@" in i]
    if not value.isascii():
        ids = [_decode_raw(i)[0] for i in ids]
    return list(dict.fromkeys(i.strip("<>") for i in ids if i.strip("<>").isprintable()))


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- body and attachments -----------------------------------------------------------------


@dataclass
class _Html:
    """A sanitized HTML piece of the body, turned into text only if it is needed."""

    html: str


class _Body:
    """Walks the MIME tree, collecting body pieces in order, the HTML and the attachments."""

    def __init__(self, flags: list[str]) -> None:
        self.flags = flags
        self.attachments: list[Attachment] = []
        mail = settings.TRELLIS["MAIL"]
        self.max_attachment = mail["MAX_ATTACHMENT_BYTES"]
        self.forbidden = tuple(e.lower() for e in mail["FORBIDDEN_EXTENSIONS"])

    def entity(self, part: Message, depth: int) -> tuple[list[str | _Html], list[str]]:
        """(body pieces, sanitized HTML pieces) of one MIME entity; attachments on the side."""
        if depth > MAX_DEPTH:
            self.flags.append("mime-too-deep")
            return [], []
        for defect in part.defects:
            self.flags.append(f"mime-defect:{type(defect).__name__.removesuffix('Defect')}")
        content_type = part.get_content_type()
        maintype = content_type.partition("/")[0]
        if part.is_multipart():
            children = [p for p in part.get_payload() if isinstance(p, Message)]
            if content_type in ("message/rfc822", "message/global"):
                return (self._forwarded(children[0], depth), []) if children else ([], [])
            if maintype != "multipart":
                # message/delivery-status and the like: machine-readable header blocks.
                return [], []
            results = [self.entity(child, depth + 1) for child in children]
            if content_type == "multipart/alternative" and results:
                return _choose_alternative(results)
            pieces: list[str | _Html] = []
            html: list[str] = []
            for child_pieces, child_html in results:
                pieces += child_pieces
                html += child_html
            return pieces, html
        params = _params(part)
        if maintype == "multipart":
            # A multipart whose boundary never appears: read what is there as text.
            self.flags.append("mime-broken")
            content_type = "text/plain"
        elif content_type not in ("text/plain", "text/html") or _is_attachment(part, params):
            self._attachment(part, content_type)
            return [], []
        data = _transfer_decode(part)
        where = "html" if content_type == "text/html" else "text"
        text, guessed = decode_bytes(data, params.get("charset"))
        if guessed:
            self.flags.append(f"charset-guessed:{where}")
        if where == "html":
            if len(text) > 2 * BODY_CHARS:
                text = text[: 2 * BODY_CHARS]
                self.flags.append("body-truncated")
            clean, flattened = clean_html_checked(text)
            if flattened:
                self.flags.append("html-too-deep")
            return [_Html(clean)], [clean]
        if "\r" in text:
            text = _LINE_END.sub("\n", text)
        if params.get("format", "").lower() == "flowed":
            text = _unflow(text, params.get("delsp", "").lower() == "yes")
        return [_CONTROL_IN_TEXT.sub("", text).strip("\n")], []

    def _forwarded(self, inner: Message, depth: int) -> list[str | _Html]:
        """A forwarded message as a quoted block in the text; its attachments join ours.

        Its HTML is not added to ours: the text has all of it, and one HTML document is shown.
        """
        headers = {name.lower(): value for name, value in reversed(inner.items())}
        lines = ["---------- Forwarded message ----------"]
        for label, name in (("From", "from"), ("Date", "date"), ("Subject", "subject")):
            if headers.get(name):
                lines.append(f"{label}: {one_line(decode_header(headers[name])[0])}")
        if headers.get("to"):
            lines.append(f"To: {one_line(decode_header(headers['to'])[0])}")
        pieces, _ = self.entity(inner, depth + 1)
        return ["\n".join(lines) + "\n\n" + _text(pieces)]

    def _attachment(self, part: Message, content_type: str) -> None:
        name, guessed = _filename(part)
        if guessed:
            self.flags.append("charset-guessed:attachment")
        filename = safe_filename(name, content_type)
        data = _transfer_decode(part)
        size = len(data)
        lowered = filename.lower()
        allowed = not lowered.endswith(self.forbidden) and content_type not in _FORBIDDEN_TYPES
        if size > self.max_attachment:
            allowed, data = False, b""
        content_id = part.get("content-id") or ""
        content_id = one_line(content_id).strip("<> ")[:250] if content_id.isascii() else ""
        self.attachments.append(
            Attachment(filename, content_type, data, allowed, size, content_id=content_id)
        )


# Broken mailers double the CR of a line end.
_LINE_END = re.compile(r"\r+\n?")
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Executables whatever their name says.
_FORBIDDEN_TYPES = frozenset(
    {
        "application/x-msdownload", "application/x-msdos-program", "application/x-dosexec",
        "application/x-ms-installer", "application/x-msi", "application/x-ms-shortcut",
        "application/hta", "application/x-javascript", "application/javascript",
        "text/javascript", "application/java-archive", "application/x-java-archive",
        "application/x-bat", "application/x-vbscript", "text/vbscript",
    }
)  # fmt: skip


def _text(pieces: list[str | _Html]) -> str:
    texts = (render_text(p.html) if isinstance(p, _Html) else p for p in pieces)
    return "\n\n".join(t for t in texts if t)


def _choose_alternative(
    results: list[tuple[list[str | _Html], list[str]]],
) -> tuple[list[str | _Html], list[str]]:
    """The text/plain version for the text (else the richest one), the HTML one for HTML."""
    text = next(
        (pieces for pieces, _ in results if any(isinstance(p, str) for p in pieces)),
        next((pieces for pieces, _ in reversed(results) if pieces), []),
    )
    html = next((h for _, h in reversed(results) if h), [])
    return text, html


def _params(part: Message, header: str = "content-type") -> dict[str, str]:
    """A header's parameters, names lower-cased, values as plain text (first one wins).

    RFC 2231 values are left %-decoded as Latin-1; ``_filename`` decodes file names properly.
    """
    found: dict[str, str] = {}
    for name, value in part.get_params([], header=header)[1:]:
        text = value[2] if isinstance(value, tuple) else value
        found.setdefault(name.lower(), text.strip().strip('"') if isinstance(text, str) else "")
    return found


def _is_attachment(part: Message, params: dict[str, str]) -> bool:
    """Whether a text part is a file rather than the body: disposition or a file name says so."""
    if params.get("name"):
        return True
    disposition = part.get("content-disposition")
    if not disposition:
        return False
    if disposition.partition(";")[0].strip().lower() == "attachment":
        return True
    return bool(_params(part, "content-disposition").get("filename"))


def _transfer_decode(part: Message) -> bytes:
    """The part's content as bytes: base64, quoted-printable or uuencode undone, 8-bit kept."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: lines ending in a space continue on the next line."""
    out: list[str] = []
    joining = False
    for line in text.split("\n"):
        if joining and out:
            out[-1] += line
        else:
            out.append(line)
        joining = line.endswith(" ") and line != "-- " and not line.startswith(">")
        if joining and delsp:
            out[-1] = out[-1][:-1]
    return "\n".join(out)


def _filename(part: Message) -> tuple[str, bool]:
    """The attachment's name as sent (RFC 2231, RFC 2047 or raw 8-bit), decoded."""
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        try:
            value = part.get_param(param, header=header)
        except (ValueError, TypeError, IndexError, LookupError):
            continue
        if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded as latin-1)
            charset, _, text = value
            data = (
                text.encode("latin-1", "surrogateescape") if _latin1(text) else _source_bytes(text)
            )
            return decode_bytes(data, charset or "utf-8")
        if value:
            return decode_header(str(value).strip('"'))
    return "", False


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1", "surrogateescape")
    except UnicodeError:
        return False
    return True


_UNSAFE_IN_NAME = re.compile(r'[<>:"|?*]')
# Names Windows gives to devices, whatever the ending ("CON.txt" cannot be saved).
_DEVICE_NAMES = frozenset(
    {
        "CON",
        "PRN",
        "AUX",
        "NUL",
        *(f"COM{i}" for i in range(1, 10)),
        *(f"LPT{i}" for i in range(1, 10)),
    }
)


def safe_filename(name: str, content_type: str = "application/octet-stream") -> str:
    """A file name safe to store and offer for download.

    The last path component only (``/`` and ``\\`` both separate), NFC (macOS sends decomposed
    Hangul), no control or format characters (RTL overrides disguise "exe"), no leading dots,
    no characters Windows refuses, at most ``FILENAME_LENGTH`` characters keeping the ending;
    ``attachment`` with an ending from the content type when nothing is left.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    if not name.isascii() or not name.isprintable():
        name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    name = _UNSAFE_IN_NAME.sub("_", " ".join(name.split()))
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return "attachment" + _extension(content_type)
    if name.partition(".")[0].upper() in _DEVICE_NAMES:
        name = "_" + name
    if len(name) > FILENAME_LENGTH:
        stem, dot, ending = name.rpartition(".")
        if dot and 0 < len(ending) <= 16:
            name = stem[: FILENAME_LENGTH - len(ending) - 1].rstrip(". ") + "." + ending
        else:
            name = name[:FILENAME_LENGTH].rstrip(". ")
    return name


@lru_cache(maxsize=64)
def _extension(content_type: str) -> str:
    if content_type.startswith("text/"):
        return ".html" if content_type == "text/html" else ".txt"
    if content_type == "message/rfc822":
        return ".eml"
    return guess_extension(content_type, strict=False) or ".bin"


# --- language and automated mail ----------------------------------------------------------

# In UTF-8, lead bytes 0xEA-0xED start Hangul syllables (U+AC00-U+D7A3) and little else.
_NOT_HANGUL_LEAD = bytes(set(range(256)) - set(range(0xEA, 0xEE)))
_NOT_LATIN = bytes(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
LANGUAGE_SAMPLE = 4000


def language(subject: str, text: str) -> str:
    """ "ko" when Hangul dominates ``subject`` and the start of ``text``, else "en".

    One Hangul syllable carries about as much as two or three Latin letters, so Hangul counts
    double: a Korean message with an English signature or product names stays Korean.
    """
    sample = subject + "\n" + text[:LANGUAGE_SAMPLE]
    if sample.isascii():
        return "en"
    data = sample.encode("utf-8", "replace")
    hangul = len(data.translate(None, _NOT_HANGUL_LEAD))
    latin = len(data.translate(None, _NOT_LATIN))
    return "ko" if hangul and hangul * 2 >= latin else "en"


_VACATION_SUBJECT = re.compile(
    r"^\W{0,3}(out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response)"
    r"|autoreply|auto:|vacation reply|away from (?:the )?office|자동\s*회신|자동\s*응답"
    # "부재중 전화" is a missed call: only "[부재중]" or "부재중 안내/입니다/..." is a vacation.
    r"|(?<=[\[(【])\s*부재\s*중|부재\s*중\s*(?:안내|입니다|알림|회신|자동|메일))",
    re.IGNORECASE,
)
_BOUNCE_SENDERS = ("mailer-daemon@", "postmaster@")


def automated(msg: Message, headers: dict[str, str], subject: str, from_address: str) -> str:
    """Why this message was not written by a person, or "" (see the module docstring)."""
    content_type = msg.get_content_type()
    if content_type == "multipart/report":
        report = _params(msg).get("report-type", "").lower()
        if report == "delivery-status":
            return "bounce: delivery status notification"
        if report == "disposition-notification":
            return "receipt: disposition notification"
    if from_address.startswith(_BOUNCE_SENDERS) or headers.get("from", "").lower().startswith(
        "mailer-daemon"
    ):
        return f"bounce: From: {from_address or 'MAILER-DAEMON'}"
    submitted = headers.get("auto-submitted", "").partition("(")[0].partition(";")[0]
    submitted = submitted.strip().lower()
    if submitted and submitted != "no":
        return f"auto-reply: Auto-Submitted: {_shown(submitted)}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if headers.get(name.lower()):
            return f"auto-reply: {name}: {_shown(headers[name.lower()])}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"list: Precedence: {precedence}"
    if headers.get("list-id"):
        return f"list: List-Id: {_shown(headers['list-id'])}"
    match = _VACATION_SUBJECT.match(subject)
    if match:
        return f"auto-reply: Subject: {match.group(1)}"
    return ""


def _shown(value: str) -> str:
    return one_line(decode_header(value)[0])[:100]


# The new part of a reply.

_ATTRIBUTION = re.compile(
    r"^\s*(?:"
    r"on\b.{0,300}\bwrote:"  # On Tue, 3 Mar 2026, Trellis <...> wrote:
    r"|.{0,300}님이\s*작성:"  # 2026년 3월 3일 (화) 오전 10:00, Trellis <...>님이 작성:
    r"|-{2,}\s*(?:original message|forwarded message|원본 메시지|전달된 메시지)\s*-{2,}"
    r"|_{10,}"  # Outlook's rule above the quoted headers
    r")\s*$",
    re.IGNORECASE,
)
# "On …" with "… wrote:" on the next line, as long attributions are wrapped.
_WRAPPED_ATTRIBUTION = (
    re.compile(r"^\s*on\b", re.IGNORECASE),
    re.compile(r"\bwrote:\s*$", re.IGNORECASE),
)
_QUOTED_HEADER = re.compile(r"^\s*(?:from|보낸 사람|보낸사람):\s", re.IGNORECASE)
_QUOTED_DATE = re.compile(r"^\s*(?:sent|date|보낸 날짜|날짜):\s", re.IGNORECASE)


def strip_quoted(text: str) -> str:
    """The reply without the message it quotes: from the attribution line ("On … wrote:",
    "…님이 작성:", an Outlook header block) on, lines starting with ">", and the signature."""
    lines = (text or "").splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        if line.rstrip() == "--" or line == "-- ":
            break
        if _ATTRIBUTION.match(line):
            break
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _WRAPPED_ATTRIBUTION[0].match(line) and _WRAPPED_ATTRIBUTION[1].search(following):
            break
        if _QUOTED_HEADER.match(line) and any(
            _QUOTED_DATE.match(following) for following in lines[index + 1 : index + 4]
        ):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()
