"""Customer e-mail, read as the customer's mail server receives it (a real SMTP sink)."""

import pytest
from django.conf import settings

from trellis.mail import routing
from trellis.support import notify
from trellis.support.models import Case, CaseEvent

from .conftest import CUSTOMER, add_event


@pytest.fixture
def deliver(smtp_sink, django_capture_on_commit_callbacks):
    """``with deliver(): ...``: mail queued inside is sent to the sink when the block ends."""

    def block():
        return django_capture_on_commit_callbacks(execute=True)

    return block


def only_mail(smtp_sink):
    """The one message the sink holds (and that there is exactly one)."""
    message = smtp_sink.wait_for()
    assert len(smtp_sink.messages) == 1, [m.message["Subject"] for m in smtp_sink.messages]
    return message


def test_the_acknowledgement_as_the_customer_receives_it(deliver, smtp_sink, open_web_case):
    with deliver():
        case, key = open_web_case(subject="Export fails")

    received = only_mail(smtp_sink)
    mail = received.message
    assert received.recipients == [CUSTOMER]
    assert mail["From"] == settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]
    assert mail["Reply-To"] == routing.reply_address(case)
    assert mail["Auto-Submitted"] == "auto-replied"
    assert case.tracking_number in mail["Subject"] and "Export fails" in mail["Subject"]
    text = mail.get_content()
    assert key in text
    assert f"{settings.TRELLIS['BASE_URL']}/help/c/{case.tracking_number}/{key}/" in text
    assert routing.record_for_message_ids([mail["Message-ID"].strip("<>")]) == case


def test_a_korean_customer_gets_korean_mail(deliver, smtp_sink, open_web_case):
    with deliver():
        case, _key = open_web_case(subject="엑셀 내보내기 오류", body="내보내기가 안 됩니다.")

    assert case.language == "ko"
    text = smtp_sink.wait_for().message.get_content()
    # Dates are written the Korean way ("2026년 3월 2일") only when the mail is rendered in Korean.
    assert "년" in text and "월" in text
    assert "엑셀 내보내기 오류" in smtp_sink.messages[0].message["Subject"]


def test_an_english_customer_gets_english_mail(deliver, smtp_sink, open_web_case):
    with deliver():
        open_web_case(subject="Export fails")
    text = smtp_sink.wait_for().message.get_content()
    assert "년" not in text and "Tracking number" in text


def test_a_subject_with_line_breaks_cannot_inject_headers(deliver, smtp_sink, open_web_case):
    with deliver():
        case, _key = open_web_case(
            subject="Help\r\nBcc: victim@example.com\r\nX-Evil: 1",
            requester_name="Kim\r\nCc: other@example.com",
        )

    received = only_mail(smtp_sink)
    assert received.recipients == [CUSTOMER]
    assert received.message["Bcc"] is None and received.message["Cc"] is None
    assert received.message["X-Evil"] is None
    assert "\n" not in received.message["Subject"]

    # A subject that reached the database with line breaks by another way is flattened too.
    Case.objects.filter(pk=case.pk).update(subject="Hi\r\nBcc: victim@example.com")
    case.refresh_from_db()
    smtp_sink.clear()
    with deliver():
        notify.status_changed(case, Case.Status.NEW, Case.Status.WAITING_ON_CUSTOMER)
    received = only_mail(smtp_sink)
    assert received.recipients == [CUSTOMER] and received.message["Bcc"] is None
    assert "Bcc: victim@example.com" in received.message["Subject"]


def test_an_agent_reply_is_signed_with_the_first_name_and_quotes_the_thread(
    deliver, smtp_sink, mail_in, agent
):
    case = mail_in("Export fails", text="Excel export fails.", message_id="m1@example.co.kr")
    later = mail_in(
        f"Re: [{case.tracking_number}]", text="Also the PDF export.", message_id="m2@example.co.kr"
    )
    assert later == case
    event = add_event(case, CaseEvent.Kind.REPLY, public=True, body="Fixed now.", actor=agent)
    add_event(case, CaseEvent.Kind.NOTE, public=False, body="Internal: blame vendor", actor=agent)

    with deliver():
        sent = notify.agent_reply(case, event)

    mail = only_mail(smtp_sink).message
    text = mail.get_content()
    assert text.startswith("Fixed now.")
    assert "Minji" in text
    assert "Zwolinski" not in text and agent.email not in text
    assert "Internal: blame vendor" not in text
    assert "> Also the PDF export." in text and "> Excel export fails." in text
    assert text.index("Also the PDF") < text.index("Excel export fails")
    assert mail["In-Reply-To"] == "<m2@example.co.kr>"
    assert "<m1@example.co.kr>" in mail["References"]
    assert mail["Auto-Submitted"] is None
    assert mail["Subject"].startswith(f"Re: [{case.tracking_number}]")
    event.refresh_from_db()
    assert event.outbound == sent


def test_status_changes_are_mailed_when_the_customer_would_see_a_change(
    deliver, smtp_sink, open_web_case, agent
):
    with deliver():
        case, _key = open_web_case()
    smtp_sink.clear()
    Case.objects.filter(pk=case.pk).update(owner=agent, status=Case.Status.OPEN)
    case.refresh_from_db()

    with deliver():
        # New and open read the same to a customer once someone has the case.
        assert notify.status_changed(case, Case.Status.NEW, Case.Status.OPEN) is None
        notify.status_changed(case, Case.Status.OPEN, Case.Status.RESOLVED)

    mail = only_mail(smtp_sink).message
    assert "Resolved" in mail["Subject"] and case.tracking_number in mail["Subject"]
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "reply to this e-mail" in mail.get_content()
    # It continues the thread the acknowledgement started.
    assert mail["In-Reply-To"] is not None


def test_the_customer_is_told_their_request_went_to_the_feedback_list(
    deliver, smtp_sink, open_web_case
):
    with deliver():
        case, _key = open_web_case()
    smtp_sink.clear()

    with deliver():
        notify.feature_logged(case)

    mail = only_mail(smtp_sink).message
    assert "feedback" in mail["Subject"] and case.tracking_number in mail["Subject"]
    assert "product feedback list" in mail.get_content()
