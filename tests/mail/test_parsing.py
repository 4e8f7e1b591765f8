"""parse() on every shape of the corpus, field by field; sanitizing; and parse() on any bytes."""

import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from trellis.mail.parsing import (
    Attachment,
    ParsedMessage,
    Unparseable,
    decode_bytes,
    decode_header,
    language,
    parse,
    safe_filename,
)
from trellis.mail.sanitize import clean_html, clean_html_checked, html_to_text

from . import corpus
from .corpus import File, Part

SENDER = ("Kim Minji", "minji@example.co.kr")


def _sender(parsed: ParsedMessage) -> tuple[str, str]:
    return parsed.from_name, parsed.from_address


# --- Korean charsets ----------------------------------------------------------------------

GUESSED_ALL = ["charset-guessed:subject", "charset-guessed:from", "charset-guessed:text"]


@pytest.mark.parametrize(
    ("charset", "subject", "text", "name", "flags"),
    [
        ("utf-8", corpus.KOREAN_SUBJECT, corpus.KOREAN_BODY, corpus.KOREAN_NAME, []),
        ("euc-kr", corpus.KOREAN_SUBJECT, corpus.KOREAN_BODY, corpus.KOREAN_NAME, []),
        (
            "cp949-as-euc-kr",
            corpus.CP949_ONLY_SUBJECT,
            corpus.CP949_ONLY_BODY,
            corpus.KOREAN_NAME,
            [],
        ),
        (
            "ks_c_5601-1987",
            corpus.CP949_ONLY_SUBJECT,
            corpus.CP949_ONLY_BODY,
            corpus.KOREAN_NAME,
            [],
        ),
        ("iso-2022-kr", corpus.KOREAN_SUBJECT, corpus.KOREAN_BODY, corpus.KOREAN_NAME, []),
        (
            "missing",
            corpus.KOREAN_SUBJECT,
            corpus.KOREAN_BODY,
            "",
            ["charset-guessed:subject", "charset-guessed:text"],
        ),
        ("unknown", corpus.KOREAN_SUBJECT, corpus.KOREAN_BODY, corpus.KOREAN_NAME, GUESSED_ALL),
        ("wrong", corpus.KOREAN_SUBJECT, corpus.KOREAN_BODY, corpus.KOREAN_NAME, GUESSED_ALL),
    ],
)
def test_korean_charsets_are_decoded_and_guesses_flagged(charset, subject, text, name, flags):
    parsed = parse(corpus.korean(charset))

    assert parsed.subject == subject
    assert parsed.text == text.strip()
    assert _sender(parsed) == (name, "minji@example.co.kr")
    assert parsed.language == "ko"
    assert parsed.flags == flags
    assert parsed.automated == ""
    assert parsed.html == ""
    assert parsed.attachments == []


def test_all_korean_shapes_are_covered():
    assert len(corpus.KOREAN_CHARSETS) == 8


@pytest.mark.parametrize(
    ("charset", "flags"),
    [("utf-8", []), ("euc-kr", ["charset-guessed:subject", "charset-guessed:from"])],
)
def test_raw_8bit_headers(charset, flags):
    # UTF-8 in raw headers is allowed by RFC 6532; EUC-KR there can only be guessed.
    parsed = parse(corpus.raw_8bit_headers(charset))

    assert parsed.subject == corpus.KOREAN_SUBJECT
    assert _sender(parsed) == (corpus.KOREAN_NAME, "minji@example.co.kr")
    assert parsed.text == corpus.KOREAN_BODY.strip()
    assert parsed.flags == flags


def test_a_character_split_across_encoded_words_is_joined():
    assert parse(corpus.split_encoded_words()).subject == corpus.KOREAN_SUBJECT


def test_encoded_word_labels_the_stdlib_gets_wrong():
    cp949 = corpus.encoded_word("똠방각하", "ks_c_5601-1987", codec="cp949")
    assert decode_header(cp949) == ("똠방각하", False)
    q_word = "=?utf-8?Q?=EA=B2=AC=EC=A0=81_request?="
    assert decode_header(f"Re: {q_word}  {q_word}") == ("Re: 견적 request견적 request", False)
    assert decode_header("=?x-nonsense?B?7JWI64WV?=") == ("안녕", True)
    # A codec that would turn text into lone surrogates is not used.
    assert decode_header("=?unicode_escape?Q?\\ud800?=") == ("\\ud800", False)


def test_decode_bytes_falls_back_and_never_fails():
    assert decode_bytes("안녕".encode("cp949"), "utf-8") == ("안녕", True)
    assert decode_bytes("안녕".encode("cp949"), None) == ("안녕", True)
    # Latin-1 labelled UTF-8 is a mislabelled message, not mojibake to keep.
    assert decode_bytes("안녕".encode(), "iso-8859-1") == ("안녕", True)
    assert decode_bytes("café".encode("latin-1"), "iso-8859-1") == ("café", False)
    assert decode_bytes(b"plain", "x-unknown") == ("plain", False)
    text, guessed = decode_bytes(b"\x81\xff\x00abc", "us-ascii")
    assert guessed and "\x00" not in text and text.endswith("abc")


# --- HTML ---------------------------------------------------------------------------------


def test_html_only_becomes_readable_text_and_keeps_sanitized_html():
    parsed = parse(corpus.html_only())

    assert parsed.text == corpus.HTML_BODY_TEXT
    assert parsed.html.startswith('<div dir="ltr"><p>Hello&nbsp;team,</p>')
    assert "<style" not in parsed.html and "ignored" not in parsed.html
    assert 'rel="noopener noreferrer nofollow"' in parsed.html
    assert (parsed.subject, _sender(parsed), parsed.flags) == ("Export to Excel fails", SENDER, [])


def test_alternative_prefers_the_plain_text_and_keeps_the_html():
    parsed = parse(corpus.alternative())

    assert parsed.text == corpus.ENGLISH_BODY.strip()
    assert "<b>Excel</b>" in parsed.html
    assert parsed.attachments == []


def test_alternative_without_plain_text_uses_the_html():
    related = corpus.multipart("related", [corpus.text_part(corpus.HTML_BODY, "html")])
    alternative = corpus.multipart("alternative", [related])

    assert parse(corpus.message(content=alternative)).text == corpus.HTML_BODY_TEXT


def test_inline_image_is_an_attachment_with_its_content_id():
    parsed = parse(corpus.inline_image())

    assert parsed.text == "See the error:\n[image: error]"
    assert 'data-cid="shot1@example.co.kr"' in parsed.html
    assert parsed.attachments == [
        Attachment(
            "image001.png",
            "image/png",
            corpus.PNG_BYTES,
            True,
            len(corpus.PNG_BYTES),
            content_id="shot1@example.co.kr",
        )
    ]


def test_script_html_is_defused():
    parsed = parse(corpus.script_html())
    html = parsed.html.lower()

    for gone in ("<script", "alert", "onload", "onclick", "javascript:", "<iframe", "<form"):
        assert gone not in html, gone
    for gone in ("<input", "<style", "<meta", "evil.example", "<svg", "style=", "data:"):
        assert gone not in html, gone
    assert ' src="' not in html
    assert 'data-remote-src="https://tracker.example/pixel.gif"' in parsed.html
    assert 'data-cid="logo@example.co.kr"' in parsed.html
    assert (
        '<a href="https://example.co.kr/help" target="_blank" '
        'rel="noopener noreferrer nofollow">help</a>'
    ) in parsed.html
    assert (
        parsed.text
        == "Hello\n\nclick me help (https://example.co.kr/help)\n\n[logo][inline]\n\nBye"
    )


def test_html_body_with_a_guessed_charset_is_flagged():
    raw = corpus.message(
        subject="문의",
        content=corpus.text_part("<p>안녕하세요</p>", "html", charset=None, codec="cp949"),
    )
    parsed = parse(raw)

    assert parsed.text == "안녕하세요"
    assert parsed.flags == ["charset-guessed:html"]
    assert parsed.language == "ko"


# --- attachments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "name_encoding", "charset"),
    [
        ("견적서.pdf", "rfc2231", "utf-8"),
        ("견적서.pdf", "rfc2047", "utf-8"),
        ("똠방각하 견적서.pdf", "rfc2231", "ks_c_5601-1987"),
        ("똠방각하 견적서.pdf", "rfc2047", "ks_c_5601-1987"),
        ("견적서.pdf", "rfc2047", "euc-kr"),
        ("quote 2026 (final).pdf", "plain", "utf-8"),
        ("견적서.pdf", "raw", "utf-8"),
    ],
)
def test_attachment_names_are_decoded(name, name_encoding, charset):
    parsed = parse(corpus.with_attachment(name, name_encoding=name_encoding, charset=charset))

    assert parsed.attachments == [
        Attachment(name, "application/pdf", corpus.PDF_BYTES, True, len(corpus.PDF_BYTES))
    ]
    assert parsed.text == corpus.ENGLISH_BODY.strip()
    assert parsed.flags == []


def test_rfc2231_continuations_are_joined():
    part = Part(
        [
            ("Content-Type", "application/pdf"),
            (
                "Content-Disposition",
                "attachment;\r\n filename*0*=utf-8''%EA%B2%AC%EC%A0%81;"
                "\r\n filename*1*=%EC%84%9C.pdf",
            ),
        ],
        b"%PDF\r\n",
    )
    parsed = parse(corpus.message(attachments=[part]))

    assert [a.filename for a in parsed.attachments] == ["견적서.pdf"]


def test_path_in_attachment_name_keeps_only_the_base_name():
    parsed = parse(corpus.path_in_attachment_name())

    assert [(a.filename, a.content_type, a.allowed) for a in parsed.attachments] == [
        ("passwd", "text/plain", True),
        ("evil.exe", "application/octet-stream", False),
    ]
    assert parsed.attachments[0].data == b"root:x:0:0:root:/root:/bin/bash\n"
    # A text part with a file name is a file, not the body.
    assert parsed.text == corpus.ENGLISH_BODY.strip()


@pytest.mark.parametrize(
    ("name", "content_type", "allowed"),
    [
        ("invoice.pdf.exe", "application/pdf", False),
        ("SETUP.EXE", "application/octet-stream", False),
        ("evil.exe. . ", "application/octet-stream", False),
        ("invoice\u202efdp.exe", "application/octet-stream", False),
        ("script.js", "text/plain", False),
        ("harmless.txt", "application/x-msdownload", False),
        ("report.PDF", "application/pdf", True),
        ("exe.pdf", "application/pdf", True),
    ],
)
def test_forbidden_endings_and_types_are_kept_but_not_allowed(name, content_type, allowed):
    parsed = parse(corpus.with_attachment(name, b"MZ data", content_type))

    (attachment,) = parsed.attachments
    assert attachment.allowed is allowed
    assert attachment.data == b"MZ data"
    assert attachment.size == 7


def test_oversize_attachment_keeps_its_size_but_not_its_data(settings):
    settings.TRELLIS = {**settings.TRELLIS, "MAIL": {**settings.TRELLIS["MAIL"]}}
    settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"] = 1000
    raw = corpus.message(attachments=[File("big.bin", bytes(1001)), File("small.bin", bytes(1000))])

    big, small = parse(raw).attachments

    assert (big.filename, big.allowed, big.data, big.size) == ("big.bin", False, b"", 1001)
    assert (small.filename, small.allowed, small.data, small.size) == (
        "small.bin",
        True,
        bytes(1000),
        1000,
    )


def test_zip_bomb_is_kept_as_the_small_file_it_is():
    raw = corpus.zip_bomb_attachment()
    compressed = corpus.zip_bomb()

    tracemalloc.start()
    try:
        parsed = parse(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.content_type) == ("logs.zip", "application/zip")
    assert attachment.size == len(compressed) < corpus.ZIP_BOMB_EXPANDED // 500
    assert attachment.data == compressed
    assert attachment.allowed
    # Expanding it would take 64 MB; parsing takes a small multiple of the message.
    assert peak < 20 * len(raw)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Windows\\evil.exe", "evil.exe"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".htaccess", "htaccess"),
        ("...", "attachment.pdf"),
        ("", "attachment.pdf"),
        ("a\x00b\r\nc\x7f.pdf", "abc.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ('what?<is>:this|"*.pdf', "what__is__this___.pdf"),
        ("\u1100\u1161\u11a8.pdf", "각.pdf"),  # decomposed Hangul from macOS
        ("  spaced   out  .pdf", "spaced out .pdf"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("console.txt", "console.txt"),
    ],
)
def test_safe_filename(name, safe):
    assert safe_filename(name, "application/pdf") == safe


def test_safe_filename_cuts_long_names_and_keeps_the_ending():
    long = "가" * 300 + ".pdf"

    assert safe_filename(long) == "가" * 196 + ".pdf"
    assert len(safe_filename("x" * 500)) == 200
    assert safe_filename("", "text/plain") == "attachment.txt"
    assert safe_filename("", "application/x-nothing-known") == "attachment.bin"


# --- forwarded ----------------------------------------------------------------------------


def test_forwarded_as_attachment_keeps_its_text_and_its_attachments():
    parsed = parse(corpus.forwarded("rfc822"))

    assert parsed.text == (
        "Please see the message from Jisoo below.\n\n"
        "---------- Forwarded message ----------\n"
        "From: Park Jisoo <jisoo@example.co.kr>\n"
        f"Date: {corpus.DEFAULT_DATE}\n"
        "Subject: Invoice for March\n"
        "To: minji@example.co.kr\n\n" + corpus.FORWARDED_TEXT.strip()
    )
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("invoice-2026-03.pdf", corpus.PDF_BYTES)
    ]
    assert parsed.subject == "Fwd: Invoice for March"
    assert _sender(parsed) == SENDER
    assert parsed.flags == []


def test_forwarded_inline_stays_in_the_body():
    parsed = parse(corpus.forwarded("inline"))

    assert parsed.text.startswith("Please see the message from Jisoo below.\n\n---------- Forw")
    assert parsed.text.endswith("To: <minji@example.co.kr>\n\n" + corpus.FORWARDED_TEXT.strip())
    assert [a.filename for a in parsed.attachments] == ["invoice-2026-03.pdf"]


def test_iso_2022_kr_without_its_label_is_recognised():
    body = corpus.text_part("", raw=corpus.KOREAN_BODY.encode("iso2022_kr"), charset="us-ascii")
    parsed = parse(corpus.message(content=body))

    assert parsed.text == corpus.KOREAN_BODY.strip()
    assert parsed.flags == ["charset-guessed:text"]


def test_forwarded_html_only_message_is_read_as_text():
    inner = corpus.html_only(subject="Inner", sender="Park Jisoo <jisoo@example.co.kr>")
    part = Part([("Content-Type", "message/rfc822")], inner)
    parsed = parse(corpus.message(body="See below.\n", attachments=[part]))

    assert parsed.text.startswith("See below.\n\n---------- Forwarded message ----------\n")
    assert parsed.text.endswith(
        "Subject: Inner\nTo: support@trellis.localhost\n\n" + corpus.HTML_BODY_TEXT
    )
    assert parsed.html == ""


# --- automated mail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("auto-submitted", "auto-reply: Auto-Submitted: auto-replied"),
        ("auto-generated", "auto-reply: Auto-Submitted: auto-generated"),
        ("x-autoreply", "auto-reply: X-Autoreply: yes"),
        ("x-autorespond", "auto-reply: X-Autorespond: Out of office"),
        ("precedence-bulk", "list: Precedence: bulk"),
        ("precedence-junk", "list: Precedence: junk"),
        ("precedence-list", "list: Precedence: list"),
        ("list-id", "list: List-Id: Trellis users <users.lists.example.org>"),
        ("vacation-en", "auto-reply: Subject: Out of Office"),
        ("automatic-reply-en", "auto-reply: Subject: Automatic reply"),
        ("auto-prefix", "auto-reply: Subject: Auto:"),
        ("vacation-ko", "auto-reply: Subject: 부재중"),
        ("automatic-reply-ko", "auto-reply: Subject: 자동 회신"),
    ],
)
def test_auto_replies_are_recognised(kind, reason):
    parsed = parse(corpus.auto_reply(kind))

    assert parsed.automated == reason
    assert parsed.from_address == "minho@example.co.kr"


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("부재중 안내: 3월 10일까지", "auto-reply: Subject: 부재중 안내"),
        ("[자동응답] 메일 잘 받았습니다", "auto-reply: Subject: 자동응답"),
        ("AutoReply: received", "auto-reply: Subject: AutoReply"),
        ("Out of the office", "auto-reply: Subject: Out of the office"),
    ],
)
def test_more_vacation_subjects(subject, reason):
    assert parse(corpus.message(subject=subject)).automated == reason


def test_every_auto_reply_kind_is_tested():
    assert len(corpus.AUTO_REPLY_KINDS) == 13


def test_bounce_is_a_delivery_status_notification():
    parsed = parse(corpus.bounce())

    assert parsed.automated == "bounce: delivery status notification"
    assert parsed.from_address == "mailer-daemon@mx.trellis.localhost"
    assert parsed.subject == "Undelivered Mail Returned to Sender"
    assert parsed.text.startswith("This is the mail system at host mx.trellis.localhost.")
    assert "Reporting-MTA" not in parsed.text
    assert [a.content_type for a in parsed.attachments] == ["text/rfc822-headers"]


def test_bounce_is_recognised_by_its_report_type_alone():
    parsed = parse(corpus.bounce_without_headers())

    assert parsed.automated == "bounce: delivery status notification"
    assert parsed.from_address == "delivery@mx.trellis.localhost"


def test_mail_from_postmaster_or_mailer_daemon_is_a_bounce():
    assert parse(corpus.postmaster_notice()).automated == "bounce: From: postmaster@example.co.kr"
    no_domain = corpus.message(sender="MAILER-DAEMON")
    assert parse(no_domain).automated == "bounce: From: MAILER-DAEMON"


def test_read_receipt_is_automated():
    report = corpus.multipart(
        "report",
        [corpus.text_part("Your message was displayed.\n")],
        params="report-type=disposition-notification",
    )
    parsed = parse(corpus.message(content=report))

    assert parsed.automated == "receipt: disposition notification"


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Export to Excel fails", {}),
        ("Re: Out of office hours support?", {}),
        ("Auto-renewal of our contract", {}),
        ("부재중 전화 관련 문의", {"Auto-Submitted": "no"}),
        ("Newsletter from our CRM", {"List-Unsubscribe": "<mailto:leave@example.co.kr>"}),
        ("Precedence question", {"Precedence": "first-class"}),
    ],
)
def test_people_are_not_mistaken_for_machines(subject, headers):
    assert parse(corpus.message(subject=subject, headers=headers)).automated == ""


# --- headers ------------------------------------------------------------------------------


def test_headers_field_by_field():
    raw = corpus.message(
        sender='"Kim, Minji" <MinJi@Example.CO.KR>',
        to="Support <SUPPORT@trellis.localhost>, other@example.com",
        cc=f"{corpus.encoded_word('이민호')} <minho@example.co.kr>, broken-address",
        message_id="<abc.123@example.co.kr>",
        in_reply_to="<ack-1@trellis.localhost>",
        references=["<first@example.co.kr>", "ack-1@trellis.localhost"],
        headers={"Reply-To": "Minji Kim <minji.kim@example.co.kr>"},
        date="Tue, 03 Mar 2026 10:20:30 +0900",
    )
    parsed = parse(raw)

    assert _sender(parsed) == ("Kim, Minji", "minji@example.co.kr")
    assert parsed.to == ["support@trellis.localhost", "other@example.com"]
    assert parsed.cc == ["minho@example.co.kr"]
    assert parsed.reply_to == ["minji.kim@example.co.kr"]
    assert parsed.message_id == "abc.123@example.co.kr"
    assert parsed.in_reply_to == ["ack-1@trellis.localhost"]
    assert parsed.references == ["first@example.co.kr", "ack-1@trellis.localhost"]
    assert parsed.date == datetime(2026, 3, 3, 10, 20, 30, tzinfo=timezone(timedelta(hours=9)))
    assert parsed.flags == []


def test_missing_and_broken_headers_give_empty_values():
    raw = corpus.message(message_id="", subject=None, date="not a date at all")
    parsed = parse(raw)

    assert (parsed.message_id, parsed.subject, parsed.date) == ("", "", None)
    assert parsed.in_reply_to == parsed.references == []
    assert parse(corpus.message(date="Mon, 2 Mar 2026 09:15:00 -0000")).date == datetime(
        2026, 3, 2, 9, 15, tzinfo=UTC
    )


def test_message_without_from():
    parsed = parse(corpus.no_from())

    assert _sender(parsed) == ("", "")
    assert parsed.flags == ["from-missing"]
    assert parsed.subject == "Export to Excel fails"
    assert parsed.text == corpus.ENGLISH_BODY.strip()


def test_header_injection_in_the_subject_is_flattened():
    parsed = parse(corpus.header_injection_subject())

    assert parsed.subject == "Help Bcc: victim@example.com Injected body"
    assert parsed.text == corpus.ENGLISH_BODY.strip()


def test_subject_is_one_line_of_at_most_300_characters():
    long = "긴 제목 " * 200
    parsed = parse(corpus.message(subject=long + "\u2028\x85\x1b[31m"))

    assert len(parsed.subject) == 300
    assert parsed.subject == long[:300]
    assert parse(corpus.message(subject="a\tb\x00c")).subject == "a b c"


def test_message_ids_without_brackets_are_read_too():
    headers = [
        ("Message-ID", "bare-id@example.co.kr"),
        ("In-Reply-To", "one@x two@x"),
        ("References", "Your message of Mon, 2 Mar 2026 <a@x> (comment) <b@x> <a@x>"),
    ]
    parsed = parse(corpus.message(message_id="", headers=headers))

    assert parsed.message_id == "bare-id@example.co.kr"
    assert parsed.in_reply_to == ["one@x", "two@x"]
    assert parsed.references == ["a@x", "b@x"]
    assert (
        parse(corpus.message(headers={"In-Reply-To": "your message of Monday"})).in_reply_to == []
    )


# --- language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text", "expected"),
    [
        ("Export fails", "Hello, it fails.\n\nKim Minji (김민지)", "en"),
        ("엑셀 오류", "엑셀 내보내기가 안 됩니다.\n\nKim Minji, Samsung SDS, Seoul", "ko"),
        ("", "", "en"),
        ("Re: Excel", "네, 확인했습니다. 감사합니다.", "ko"),
        ("Отчёт", "Привет", "en"),
    ],
)
def test_language(subject, text, expected):
    assert language(subject, text) == expected


# --- broken and unreadable ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n  ",
        bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"just some text\r\nwithout any header\r\n",
        b"X-Unknown: only an unknown header\r\n\r\nbody",
    ],
)
def test_nothing_to_read_is_unparseable(raw):
    with pytest.raises(Unparseable):
        parse(raw)


def test_too_many_nested_parts_are_refused_quickly():
    level = b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n"
    raw = b"From: a@example.com\r\n" + b"".join(level % (i, i) for i in range(3000))

    with pytest.raises(Unparseable, match="nested MIME parts"):
        parse(raw)


def test_headers_only_message_is_read():
    parsed = parse(b"From: Kim <kim@example.com>\r\nSubject: hi")

    assert (parsed.subject, parsed.from_address, parsed.text) == ("hi", "kim@example.com", "")


def test_multipart_without_its_boundary_is_read_as_text():
    raw = corpus.message(
        content=Part([("Content-Type", 'multipart/mixed; boundary="zz"')], b"Hello there\r\n")
    )
    parsed = parse(raw)

    assert parsed.text == "Hello there"
    assert "mime-broken" in parsed.flags


def test_truncated_message_keeps_what_arrived():
    raw = corpus.with_attachment()
    parsed = parse(raw[: raw.index(b"JVBER") + 20])

    assert parsed.text == corpus.ENGLISH_BODY.strip()
    assert parsed.attachments[0].filename == "견적서.pdf"
    assert parsed.attachments[0].data.startswith(b"%PDF-1.4")


def test_broken_base64_is_decoded_leniently():
    part = corpus.text_part("", raw=b"7JWI64WV\r\n!!!7ZWY7IS47JqU", transfer_encoding="7bit")
    part.headers[1] = ("Content-Transfer-Encoding", "base64")
    parsed = parse(corpus.message(content=part))

    assert parsed.text == "안녕하세요"


def test_quoted_printable_and_format_flowed():
    qp = corpus.text_part(corpus.KOREAN_BODY, transfer_encoding="quoted-printable")
    assert parse(corpus.message(content=qp)).text == corpus.KOREAN_BODY.strip()

    flowed = corpus.text_part("This line is \nflowed.\n> quoted \nnot joined\n-- \nsig\n")
    flowed.headers[0] = ("Content-Type", "text/plain; charset=utf-8; format=flowed")
    assert parse(corpus.message(content=flowed)).text == (
        "This line is flowed.\n> quoted \nnot joined\n-- \nsig"
    )


def test_control_characters_and_nul_are_removed_from_the_text():
    parsed = parse(corpus.message(body="a\x00b\x07c\r\nd\te\n"))

    assert parsed.text == "abc\nd\te"


def test_html_nested_too_deeply_is_reduced_to_text():
    raw = corpus.html_only("<div>" * 50_000 + "deep &amp; down")
    parsed = parse(raw)

    assert parsed.text == "deep & down"
    assert parsed.html == "<pre>deep &amp; down</pre>"
    assert "html-too-deep" in parsed.flags


def test_oversized_header_is_cut_and_flagged():
    raw = corpus.message(to=", ".join(f"user{i}@example.com" for i in range(5000)))
    parsed = parse(raw)

    assert "header-truncated:to" in parsed.flags
    assert parsed.to[:2] == ["user0@example.com", "user1@example.com"]
    assert 1000 < len(parsed.to) < 5000


# --- sanitize -----------------------------------------------------------------------------


def test_clean_html_blocks_remote_and_relative_urls():
    html = (
        '<img src="http://x.example/a.png" alt="a>b">'
        '<img src="/local.png"><img src="CID:part1"><a href="/admin/">rel</a>'
        '<a href="mailto:kim@example.com">mail</a><a href="vbscript:x">vb</a>'
        '<table background="https://x.example/bg.png"><tr><td>cell</td></tr></table>'
    )

    assert clean_html(html) == (
        '<img data-remote-src="http://x.example/a.png" alt="a&gt;b"><img>'
        '<img data-cid="part1"><a target="_blank" rel="noopener noreferrer nofollow">rel</a>'
        '<a href="mailto:kim@example.com" target="_blank" rel="noopener noreferrer nofollow">'
        'mail</a><a target="_blank" rel="noopener noreferrer nofollow">vb</a>'
        "<table><tbody><tr><td>cell</td></tr></tbody></table>"
    )


def test_html_to_text_keeps_structure():
    html = (
        "<p>First&nbsp;paragraph<br>second line</p><p>Third &lt;b&gt; &amp;amp;</p>"
        "<ul><li>one<ul><li>one.a</li></ul></li><li>two</li></ul>"
        "<ol><li>first</li><li>second</li></ol>"
        "<blockquote><p>quoted</p><p>more</p></blockquote>"
        "<pre>  keep\n    indent</pre>"
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"
        '<a href="https://example.com/">https://example.com/</a> '
        '<a href="mailto:kim@example.com">Kim</a><script>alert(1)</script>'
    )

    assert html_to_text(html) == (
        "First paragraph\nsecond line\n\nThird <b> &amp;\n\n"
        "- one\n  - one.a\n- two\n\n1. first\n2. second\n\n"
        "> quoted\n>\n> more\n\n  keep\n    indent\n\na b\nc\n\n"
        "https://example.com/ Kim (kim@example.com)"
    )


def test_clean_html_checked_reports_flattening():
    assert clean_html_checked("<p>fine</p>") == ("<p>fine</p>", False)
    assert clean_html_checked("<span>" * 3000 + "x")[1] is True
    assert clean_html_checked("") == ("", False)


# --- any bytes ----------------------------------------------------------------------------


def _storable(text: str) -> bool:
    """What PostgreSQL and SQLite can store: valid UTF-8 without NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _check(raw: bytes) -> None:
    try:
        parsed = parse(raw)
    except Unparseable:
        return
    assert isinstance(parsed, ParsedMessage)
    assert "\n" not in parsed.subject and "\r" not in parsed.subject
    assert len(parsed.subject) <= 300
    values = [parsed.subject, parsed.text, parsed.html, parsed.from_name, parsed.from_address]
    values += [parsed.message_id, *parsed.in_reply_to, *parsed.references, *parsed.to, *parsed.cc]
    values += [a.filename for a in parsed.attachments] + parsed.flags + [parsed.automated]
    assert all(_storable(v) for v in values)
    for attachment in parsed.attachments:
        assert attachment.filename and len(attachment.filename) <= 200
        assert "/" not in attachment.filename and "\\" not in attachment.filename
        assert not attachment.filename.startswith(".")


SEEDS = [
    corpus.korean("cp949-as-euc-kr"),
    corpus.korean("missing"),
    corpus.raw_8bit_headers("euc-kr"),
    corpus.alternative(),
    corpus.inline_image(),
    corpus.with_attachment("똠방각하.pdf", name_encoding="rfc2047", charset="ks_c_5601-1987"),
    corpus.forwarded("rfc822"),
    corpus.bounce(),
    corpus.script_html(),
    corpus.path_in_attachment_name(),
]
TOKENS = [
    b"=?", b"?=", b"?B?", b"?Q?", b"=?ks_c_5601-1987?B?", b"=?unicode_escape?Q?", b"\r\n",
    b"\n", b"\r", b"\r\n\r\n", b"--", b"boundary=", b"multipart/mixed", b"message/rfc822",
    b"\x00", b"\xff\xfe", b"\x1b$)C", b"charset=", b"filename*=", b"*0*=", b"'", b'"', b"<",
    b">", b"%", b"=", b";", b":", b"base64", b"quoted-printable", b"\xea\xb0\x80", b"\x80",
    b"<div>", b"<script>", b"&#0;", b"\\ud800",
]  # fmt: skip


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_unparseable(raw):
    _check(raw)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500).map(lambda body: b"From: a@example.com\r\n" + body))
def test_any_bytes_after_a_header_parse(raw):
    _check(raw)


@st.composite
def mutated_messages(draw):
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(raw)))
        operation = draw(st.sampled_from(["insert", "delete", "flip", "cut"]))
        if operation == "insert":
            raw[position:position] = draw(st.sampled_from(TOKENS) | st.binary(max_size=8))
        elif operation == "delete":
            del raw[position : position + draw(st.integers(1, 40))]
        elif operation == "flip" and position < len(raw):
            raw[position] = draw(st.integers(0, 255))
        elif operation == "cut":
            del raw[position:]
    return bytes(raw)


@hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_messages())
def test_damaged_real_messages_parse_or_are_unparseable(raw):
    _check(raw)
