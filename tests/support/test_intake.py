"""The intake: every channel makes the same case; mail threads into the case it answers."""

import hashlib
import re
import smtplib

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType

from trellis.core import services as core_services
from trellis.core.errors import Conflict, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Role, User
from trellis.crm.models import Contact
from trellis.mail import inbound, routing
from trellis.mail.models import OutboundMessage
from trellis.mail.parsing import Attachment
from trellis.support import assignment, intake
from trellis.support.models import Case, CaseAttachment, CaseEvent

from .. import factories
from ..mail import corpus
from .conftest import CUSTOMER, parsed, stored


def acks(case: Case) -> list[OutboundMessage]:
    return [m for m in outbound_for(case) if m.headers.get("Auto-Submitted") == "auto-replied"]


def outbound_for(case: Case) -> list[OutboundMessage]:
    return list(
        OutboundMessage.objects.filter(
            content_type=ContentType.objects.get_for_model(Case), object_id=case.pk
        )
    )


def set_status(case: Case, status: str) -> None:
    Case.objects.filter(pk=case.pk).update(status=status)
    case.refresh_from_db()


# Opening a case, from every channel.


def test_web_case_gets_number_key_events_contact_and_one_acknowledgement(open_web_case):
    case, key = open_web_case(subject="Export fails", body="It fails since 9:00.")

    assert re.fullmatch(r"CS-\d{4}-\d{6}", case.tracking_number)
    assert case.access_key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in case.access_key_hash and len(key) >= 32
    assert (case.channel, case.status, case.subject) == ("web", "new", "Export fails")
    assert case.description == "It fails since 9:00."
    assert case.requester_email == CUSTOMER and case.language == "en"
    kinds = [(e.kind, e.public) for e in case.events.order_by("id")]
    assert kinds[:2] == [("received", True), ("customer_message", True)]
    message = case.events.get(kind="customer_message")
    assert message.body == "It fails since 9:00." and message.author == "Kim Minji"

    contact = Contact.objects.get(email=CUSTOMER)
    assert case.contact == contact and contact.name == "Kim Minji"
    assert contact.owner == core_services.system_user()

    [ack] = acks(case)
    assert ack.to == [CUSTOMER]
    assert case.tracking_number in ack.subject
    assert key in ack.text
    assert f"/help/c/{case.tracking_number}/{key}/" in ack.text
    assert ack.reply_to == routing.reply_address(case)
    case.refresh_from_db()
    assert case.acknowledged_at is not None
    assert AuditEvent.objects.filter(object_id=case.pk, action="created").exists()


@pytest.mark.parametrize("channel", ["api", "phone"])
def test_an_agent_opens_a_case_for_a_customer_who_gets_an_acknowledgement(
    open_web_case, agent, channel
):
    case, _key = open_web_case(channel=channel, actor=agent)

    assert case.channel == channel
    assert case.events.get(kind="received").actor == agent
    assert len(acks(case)) == 1


def test_email_case_links_the_message_and_its_message_id(mail_in):
    case = mail_in("Login broken", text="I cannot log in.", message_id="first@example.co.kr")

    assert case.channel == "email"
    message = case.events.get(kind="customer_message")
    assert message.inbound.message_id == "first@example.co.kr"
    assert routing.record_for_message_ids(["first@example.co.kr"]) == case
    [ack] = acks(case)
    assert ack.in_reply_to == "first@example.co.kr"


def test_a_user_without_the_right_cannot_open_a_case_and_nothing_is_written(open_web_case, sales):
    with pytest.raises(PermissionDenied):
        open_web_case(actor=sales)
    assert not Case.objects.exists() and not OutboundMessage.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"requester_email": ""}, "requester_email"),
        ({"requester_email": "not an address"}, "requester_email"),
        ({"subject": "", "body": "  "}, "subject"),
        ({"subject": "x" * 301}, "subject"),
        ({"body": "x" * (intake.MAX_BODY + 1)}, "body"),
        ({"requester_name": "n" * 201}, "requester_name"),
        ({"channel": "fax"}, "channel"),
        ({"language": "fr"}, "language"),
        ({"product": 999999}, "product"),
    ],
)
def test_bad_input_gets_field_errors_and_writes_nothing(open_web_case, overrides, field):
    with pytest.raises(ValidationFailed) as failure:
        open_web_case(**overrides)

    assert field in failure.value.errors
    assert not Case.objects.exists()
    assert not Contact.objects.exists()
    assert not OutboundMessage.objects.exists()


def test_a_message_without_subject_takes_its_first_line(open_web_case):
    case, _key = open_web_case(subject="", body="Printer is on fire\nPlease help.")
    assert case.subject == "Printer is on fire"


def test_line_breaks_in_subject_and_name_are_flattened(open_web_case):
    case, _key = open_web_case(subject="Help\r\nBcc: evil@example.com", requester_name="A\nB")
    assert case.subject == "Help Bcc: evil@example.com"
    assert case.requester_name == "A B"


def test_language_is_detected_from_hangul_or_taken_from_the_caller(open_web_case):
    korean, _ = open_web_case(
        subject="엑셀 내보내기 오류", body="오늘 아침부터 Excel 내보내기가 안 됩니다."
    )
    english, _ = open_web_case(subject="Export", body="It fails, 감사합니다 is all I know.")
    chosen, _ = open_web_case(subject="Export", body="It fails.", language="ko")

    assert (korean.language, english.language, chosen.language) == ("ko", "en", "ko")


def test_html_from_a_caller_is_sanitised_and_gives_the_text(open_web_case):
    case, _key = open_web_case(
        channel="api",
        body="",
        html='<p>Broken <b>again</b></p><script>alert(1)</script><img src="http://t.example/x">',
    )

    message = case.events.get(kind="customer_message")
    assert "<script" not in message.html and ' src="http' not in message.html
    assert "<b>again</b>" in message.html
    assert message.body == "Broken again" and case.description == "Broken again"


def test_the_chosen_product_is_kept(open_web_case, admin):
    product = factories.product(admin)
    case, _key = open_web_case(product=product.pk)
    assert case.product == product


# Contacts and accounts.


def test_a_known_contact_is_found_by_email_in_any_case_with_its_account(open_web_case, sales):
    account = factories.account(sales, name="Acme")
    contact = factories.contact(sales, email="Kim@Example.co.kr", accounts=[account.pk])

    case, _key = open_web_case(requester_email="KIM@example.CO.KR")

    assert case.contact == contact and case.account == account
    assert Contact.objects.count() == 1


@pytest.mark.parametrize(
    "account_fields",
    [{"email": "info@acme.co.kr"}, {"website": "https://www.acme.co.kr/about"}],
)
def test_an_unknown_sender_becomes_a_contact_of_the_account_on_their_domain(
    open_web_case, sales, account_fields
):
    factories.account(sales, name="Other", email="info@acme.com")
    account = factories.account(sales, name="Acme", **account_fields)

    case, _key = open_web_case(requester_email="lee@acme.co.kr", requester_name="Lee")

    contact = Contact.objects.get(email="lee@acme.co.kr")
    assert list(contact.accounts.all()) == [account]
    assert contact.owner == sales and contact.name == "Lee"
    assert case.contact == contact and case.account == account


@pytest.mark.parametrize("domain", ["gmail.com", "naver.com", "hanmail.net", "outlook.com"])
def test_free_mail_domains_link_to_no_account(open_web_case, sales, domain):
    factories.account(sales, name="Someone using free mail", email=f"boss@{domain}")

    case, _key = open_web_case(requester_email=f"kim@{domain}")

    contact = Contact.objects.get(email=f"kim@{domain}")
    assert not contact.accounts.exists() and case.account is None
    assert contact.owner == core_services.system_user()


def test_contacts_are_made_through_the_crm_services(open_web_case):
    case, _key = open_web_case(requester_email="new@example.org", requester_name="")

    contact = case.contact
    assert contact.name == "new"
    assert AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(Contact), object_id=contact.pk
    ).exists()


# Attachments.


def test_attachments_are_kept_safely_named_and_the_unsafe_ones_are_never_allowed(
    open_web_case, settings
):
    settings.TRELLIS = {**settings.TRELLIS, "MAIL": {**settings.TRELLIS["MAIL"]}}
    settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"] = 100
    files = [
        Attachment("../../etc/passwd", "text/plain", b"root"),
        Attachment("C:\\Users\\kim\\report.pdf", "application/pdf", b"%PDF"),
        Attachment("invoice.pdf.exe", "application/x-msdownload", b"MZ"),
        Attachment("big.log", "text/plain", b"x" * 101),
        Attachment("..", "text/html; charset=utf-8", b"<b>"),
    ]

    case, _key = open_web_case(attachments=files)

    rows = {a.filename: a for a in CaseAttachment.objects.filter(case=case)}
    assert set(rows) == {"passwd", "report.pdf", "invoice.pdf.exe", "big.log", "attachment"}
    assert rows["passwd"].allowed and bytes(rows["passwd"].data) == b"root"
    assert not rows["invoice.pdf.exe"].allowed
    assert not rows["big.log"].allowed and rows["big.log"].size == 101
    assert bytes(rows["big.log"].data) == b""
    assert rows["attachment"].content_type == "text/html"
    assert all(a.event.kind == "customer_message" for a in rows.values())


def test_make_attachment_judges_uploads_like_mail():
    assert intake.make_attachment("a/b/c.txt", "text/plain", b"x").filename == "c.txt"
    assert not intake.make_attachment("run.BAT", "", b"x").allowed
    assert intake.make_attachment("x", "bad type!", b"").content_type == "application/octet-stream"
    assert len(intake.make_attachment("n" * 300 + ".pdf", "", b"").filename) == 200


# Assignment.


def test_assignment_on_arrival_is_applied_and_shown_as_assigned(open_web_case, agent, monkeypatch):
    def to_agent(case):
        case.owner = agent
        case.team = agent.team

    monkeypatch.setattr(assignment, "assign_on_arrival", to_agent)

    case, _key = open_web_case()

    case.refresh_from_db()
    assert case.owner == agent
    assert case.events.filter(kind="assigned", public=True).exists()


def test_a_failing_assignment_rule_leaves_the_case_in_the_queue(open_web_case, monkeypatch):
    def broken(case):
        case.owner_id = 999999
        raise RuntimeError("rule broke")

    monkeypatch.setattr(assignment, "assign_on_arrival", broken)

    case, _key = open_web_case()

    case.refresh_from_db()
    assert case.owner is None and len(acks(case)) == 1


# The acknowledgement: once per case, never to ourselves, never to automated mail.


def test_two_messages_threaded_into_one_case_get_one_acknowledgement(mail_in):
    case = mail_in("Export fails")
    again = mail_in(f"Re: [{case.tracking_number}] Export fails", text="Still broken.")

    assert again == case
    assert len(acks(case)) == 1
    assert intake.acknowledge(case, "another key") is False
    assert len(acks(case)) == 1


def test_automated_mail_that_reaches_the_intake_gets_no_acknowledgement(mail_in):
    case = mail_in("Out of office", automated="auto-reply: Auto-Submitted: auto-replied")
    assert acks(case) == []


def test_no_acknowledgement_goes_to_our_own_mail_domain(open_web_case, settings):
    case, _key = open_web_case(requester_email=f"loop@{settings.MAIL_DOMAIN}")
    assert outbound_for(case) == []


# Threading of mail.


def test_a_reply_joins_its_case_by_the_tracking_number_in_the_subject(mail_in):
    case = mail_in("Export fails")
    reply = mail_in(f"RE: {case.tracking_number.lower()} Export fails", text="More details.")

    assert reply == case
    messages = case.events.filter(kind="customer_message").order_by("id")
    assert [m.body for m in messages][-1] == "More details."
    assert Case.objects.count() == 1


def test_a_reply_joins_its_case_by_the_tracking_number_in_the_body(mail_in):
    case = mail_in("Export fails")
    reply = mail_in("Another question", text=f"About my case {case.tracking_number}: ...")

    assert reply == case and Case.objects.count() == 1


def test_the_subject_is_looked_at_before_the_body(mail_in):
    first = mail_in("First problem")
    second = mail_in("Second problem")

    joined = mail_in(f"Re: {first.tracking_number}", text=f"See also {second.tracking_number}")

    assert joined == first


def test_an_unknown_tracking_number_opens_a_new_case(mail_in):
    case = mail_in("Re: CS-1999-000001 old thing")
    assert case.tracking_number != "CS-1999-000001" and Case.objects.count() == 1


def test_mail_to_a_merged_case_goes_to_the_case_it_was_merged_into(mail_in):
    kept = mail_in("Export fails")
    merged = mail_in("Export broken")
    Case.objects.filter(pk=merged.pk).update(merged_into=kept, status=Case.Status.CLOSED)

    joined = mail_in(f"Re: [{merged.tracking_number}]", text="Any news?")

    assert joined == kept
    assert kept.events.filter(kind="customer_message", body="Any news?").exists()
    assert not merged.events.filter(body="Any news?").exists()


def test_a_reply_to_a_resolved_case_reopens_it(mail_in):
    case = mail_in("Export fails")
    set_status(case, Case.Status.RESOLVED)

    mail_in(f"Re: [{case.tracking_number}]", text="It is back.")

    case.refresh_from_db()
    assert case.status == Case.Status.OPEN and case.resolved_at is None
    event = case.events.filter(kind="status").last()
    assert event.public and event.data["from"] == "resolved" and event.data["to"] == "open"


def test_a_reply_to_a_closed_case_opens_a_new_case_that_names_the_old_one(mail_in):
    old = mail_in("Export fails")
    set_status(old, Case.Status.CLOSED)

    new = mail_in(f"Re: [{old.tracking_number}] Export fails", text="It fails again.")

    assert new != old and new.requester_email == old.requester_email
    assert new.events.get(kind="received").data["follows"] == old.tracking_number
    assert old.tracking_number in new.events.get(kind="note").body
    assert new.tracking_number in old.events.get(kind="note").body
    old.refresh_from_db()
    assert old.status == Case.Status.CLOSED
    assert len(acks(new)) == 1

    # The next reply quotes both numbers in its subject: it continues in the new case.
    reply = mail_in(f"Re: [{new.tracking_number}] Re: [{old.tracking_number}] Export fails")
    assert reply == new


def test_someone_else_quoting_a_tracking_number_is_an_internal_flagged_message(mail_in):
    case = mail_in("Export fails")
    set_status(case, Case.Status.WAITING_ON_CUSTOMER)

    joined = mail_in(
        f"Re: [{case.tracking_number}]",
        text="I am not the customer.",
        sender="stranger@example.net",
        attachments=[Attachment("x.txt", "text/plain", b"x")],
    )

    assert joined == case
    event = case.events.get(body="I am not the customer.")
    assert not event.public
    assert event.data["flag"] == "foreign_sender" and event.data["from"] == "stranger@example.net"
    assert not CaseAttachment.objects.get(event=event).public
    case.refresh_from_db()
    assert case.status == Case.Status.WAITING_ON_CUSTOMER
    assert len(acks(case)) == 1


def test_mail_without_from_is_refused_for_the_quarantine_and_writes_nothing(mail_in):
    with pytest.raises(ValidationFailed) as failure:
        mail_in("No sender", sender="")
    assert "from" in failure.value.errors
    assert not Case.objects.exists() and not Contact.objects.exists()


def test_a_reply_without_from_filed_into_a_case_is_kept_for_the_agent(mail_in):
    case = mail_in("Export fails")
    message = parsed("Re: something", sender="", text="Who am I?")

    assert intake.handle_reply(case, stored(message), message) == case

    event = case.events.get(body="Who am I?")
    assert not event.public and event.data["flag"] == "no_sender"


def test_handle_reply_adds_the_customers_message(mail_in):
    case = mail_in("Export fails")
    message = parsed("Re: Export fails", text="Here is the log.", message_id="second@x")

    assert intake.handle_reply(case, stored(message), message) == case

    assert case.events.filter(kind="customer_message", public=True).count() == 2


def test_an_empty_mail_still_opens_a_case(mail_in):
    case = mail_in("", text="")
    assert case.subject == "(no subject)"


def test_the_tracking_number_resolves_for_filing_by_hand(mail_in):
    case = mail_in("Export fails")

    assert inbound.resolve_reference(case.tracking_number.lower()) == case
    assert inbound.resolve_reference(f" {case.tracking_number} ") == case
    assert intake.resolve_reference("CS-1999-000001") is None


# Customer replies.


def test_a_customer_reply_moves_a_case_waiting_on_them_back_to_the_team(open_web_case):
    case, _key = open_web_case()
    set_status(case, Case.Status.WAITING_ON_CUSTOMER)
    version = case.version

    event = intake.customer_reply(case, body="Here you go.", via="web")

    case.refresh_from_db()
    assert event.public and event.kind == "customer_message" and event.data["via"] == "web"
    assert case.status == Case.Status.OPEN and case.version == version + 1
    status = case.events.filter(kind="status").last()
    assert status.public and (status.data["from"], status.data["to"]) == (
        "waiting_on_customer",
        "open",
    )
    assert case.updated_at >= event.at


def test_a_customer_reply_on_an_open_case_changes_only_the_last_activity(open_web_case):
    case, _key = open_web_case()
    set_status(case, Case.Status.IN_PROGRESS)

    intake.customer_reply(case, body="Any news?", via="web")

    case.refresh_from_db()
    assert case.status == Case.Status.IN_PROGRESS
    assert not case.events.filter(kind="status").exists()


def test_a_closed_case_takes_no_reply(open_web_case):
    case, _key = open_web_case()
    set_status(case, Case.Status.CLOSED)

    with pytest.raises(Conflict):
        intake.customer_reply(case, body="Hello?", via="web")
    assert case.events.filter(kind="customer_message").count() == 1


def test_an_empty_reply_is_refused(open_web_case):
    case, _key = open_web_case()
    with pytest.raises(ValidationFailed):
        intake.customer_reply(case, body="  ", via="web")


def test_the_system_user_acts_for_customers(open_web_case):
    case, _key = open_web_case()
    actor = case.events.get(kind="received").actor
    assert actor == User.objects.get(username=core_services.SYSTEM_USERNAME)
    assert actor.role.code == Role.ADMIN
    assert CaseEvent.objects.filter(case=case, actor=actor).count() >= 2


# Through the real SMTP listener, with real bytes and the real parser.


def _send(port: int, raw: bytes, to: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("minji@example.co.kr", [to], raw) == {}


@pytest.mark.django_db(transaction=True)
def test_mail_through_the_listener_opens_a_case_and_replies_thread_into_it(
    intake_server, smtp_sink
):
    support = settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]
    _send(intake_server.port, corpus.korean("euc-kr"), support)
    assert intake_server.wait_until_idle()

    case = Case.objects.get()
    assert (case.subject, case.language, case.channel) == (corpus.KOREAN_SUBJECT, "ko", "email")
    assert (case.requester_email, case.requester_name) == ("minji@example.co.kr", "김민지")
    ack = smtp_sink.wait_for(lambda m: case.tracking_number in m.message["Subject"]).message
    assert ack["Auto-Submitted"] == "auto-replied"

    # The customer answers the acknowledgement (to its Reply-To), then writes again to the
    # support address quoting only its Message-ID.
    _send(
        intake_server.port,
        corpus.message(
            subject="Re: " + ack["Subject"],
            body="로그 파일을 보냅니다.\n",
            to=ack["Reply-To"],
            in_reply_to=ack["Message-ID"],
        ),
        ack["Reply-To"],
    )
    _send(
        intake_server.port,
        corpus.message(
            subject="One more thing", body="Also the PDF export.\n", in_reply_to=ack["Message-ID"]
        ),
        support,
    )
    assert intake_server.wait_until_idle()

    assert Case.objects.count() == 1
    bodies = [e.body for e in case.events.filter(kind="customer_message").order_by("id")]
    assert bodies[1:] == ["로그 파일을 보냅니다.", "Also the PDF export."]
    assert len(smtp_sink.messages) == 1
