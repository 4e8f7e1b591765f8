"""The customer portal: look-up, the status page, the web form, replies and files."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from trellis.mail.models import OutboundMessage
from trellis.mail.parsing import Attachment
from trellis.support import access, forms_portal, intake, portal
from trellis.support.models import Case, CaseAttachment, CaseEvent

from .conftest import CUSTOMER, add_event

pytestmark = pytest.mark.django_db

INDEX = reverse("portal:index")
NEW = reverse("portal:new")
NOT_FOUND_TEXT = "We could not find a case with that number and e-mail address."
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


def without_tokens(html: str) -> str:
    """The page without what differs on every render (CSRF tokens) and the address it was
    asked for (the language switch returns there)."""
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)
    return re.sub(r'name="next" value="[^"]*"', "", html)


def page(response) -> str:
    return response.content.decode()


@pytest.fixture
def case_and_key(open_web_case):
    return open_web_case(subject="Export fails", body="The export to Excel fails.")


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


# Look-up by tracking number and e-mail.


def test_the_front_page_offers_the_lookup_and_the_new_case_form(client):
    response = client.get(INDEX)
    assert response.status_code == 200
    assert 'name="tracking_number"' in page(response) and NEW in page(response)
    assert response["Referrer-Policy"] == "same-origin"


def test_lookup_with_number_and_email_opens_the_case_in_this_browser(client, case_and_key):
    case, _key = case_and_key

    response = client.post(
        INDEX, {"tracking_number": case.tracking_number.lower(), "email": "KIM@example.co.kr"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:case", args=[case.tracking_number])
    status_page = client.get(response["Location"])
    assert status_page.status_code == 200 and "Export fails" in page(status_page)
    # Another browser has no grant.
    from django.test import Client

    assert Client().get(response["Location"]).status_code == 404


def test_wrong_number_and_wrong_email_get_the_same_answer(client, case_and_key):
    case, _key = case_and_key
    other_number = "CS-2026-999999"

    wrong_email = client.post(
        INDEX, {"tracking_number": case.tracking_number, "email": "other@example.co.kr"}
    )
    wrong_number = client.post(INDEX, {"tracking_number": other_number, "email": CUSTOMER})

    assert wrong_email.status_code == wrong_number.status_code == 200
    assert NOT_FOUND_TEXT in page(wrong_email) and NOT_FOUND_TEXT in page(wrong_number)
    # The form shows what was typed; with the same input the pages are the same.
    same_input = client.post(
        INDEX, {"tracking_number": other_number, "email": "other@example.co.kr"}
    )
    known_number = client.post(
        INDEX, {"tracking_number": case.tracking_number, "email": "other@example.co.kr"}
    )
    assert without_tokens(page(same_input)).replace(other_number, case.tracking_number) == (
        without_tokens(page(known_number))
    )


def test_lookups_are_rate_limited_per_client(client, case_and_key, frozen):
    case, _key = case_and_key
    limit, _window = access.LOOKUP_PER_CLIENT
    for n in range(limit):
        number = f"CS-2026-{900000 + n}"
        assert client.post(INDEX, {"tracking_number": number, "email": CUSTOMER}).status_code == 200

    response = client.post(INDEX, {"tracking_number": case.tracking_number, "email": CUSTOMER})

    assert response.status_code == 429
    assert "Too many attempts" in page(response)
    frozen.shift(timedelta(seconds=_window))
    response = client.post(INDEX, {"tracking_number": case.tracking_number, "email": CUSTOMER})
    assert response.status_code == 302


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    case_and_key, frozen, settings
):
    from django.test import Client

    settings.TRELLIS = {**settings.TRELLIS, "TRUSTED_PROXIES": ["10.9.9.9"]}
    case, _key = case_and_key
    limit, _window = access.LOOKUP_PER_CLIENT

    def via_proxy(client_ip: str) -> Client:
        return Client(REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=client_ip)

    guesser = via_proxy("198.51.100.1")
    for n in range(limit):
        guesser.post(INDEX, {"tracking_number": f"CS-2026-{900000 + n}", "email": CUSTOMER})
    lookup = {"tracking_number": case.tracking_number, "email": CUSTOMER}

    assert guesser.post(INDEX, lookup).status_code == 429
    assert via_proxy("198.51.100.2").post(INDEX, lookup).status_code == 302


def test_lookups_are_rate_limited_per_tracking_number(case_and_key, frozen):
    from django.test import Client

    case, _key = case_and_key
    limit, _window = access.LOOKUP_PER_NUMBER
    for n in range(limit):
        Client(REMOTE_ADDR=f"10.0.0.{n + 1}").post(
            INDEX, {"tracking_number": case.tracking_number, "email": f"guess{n}@example.com"}
        )

    response = Client(REMOTE_ADDR="10.0.1.1").post(
        INDEX, {"tracking_number": case.tracking_number, "email": CUSTOMER}
    )
    assert response.status_code == 429


def test_case_by_email_does_the_same_work_for_unknown_numbers(case_and_key):
    case, _key = case_and_key
    access.case_by_email("CS-2026-000000", "x@example.com")  # the client's counter exists now

    with CaptureQueriesContext(connection) as known:
        assert access.case_by_email(case.tracking_number, "x@example.com") is None
    with CaptureQueriesContext(connection) as unknown:
        assert access.case_by_email("CS-2026-999999", "x@example.com") is None

    # Rate counters and one indexed look-up, whether the number exists or not.
    assert len(known.captured_queries) == len(unknown.captured_queries)
    assert access.case_by_email(case.tracking_number, "KIM@example.co.kr ") == case


# The status page.


def status_path(case: Case, key: str) -> str:
    return access.status_url(case, key)


def test_the_status_page_shows_the_public_history_only(client, case_and_key, agent, open_web_case):
    case, key = case_and_key
    add_event(case, CaseEvent.Kind.ASSIGNED, public=False, actor=agent, note="to Zwolinski")
    add_event(
        case, CaseEvent.Kind.NOTE, public=False, body="Secret: customer is grumpy", actor=agent
    )
    add_event(case, CaseEvent.Kind.REPLY, public=True, body="Please send the file.", actor=agent)
    add_event(case, CaseEvent.Kind.STATUS, public=True, actor=agent, to="waiting_on_customer")
    Case.objects.filter(pk=case.pk).update(status=Case.Status.WAITING_ON_CUSTOMER, owner=agent)
    intake.handle_reply(case, *_foreign_mail())
    other, _ = open_web_case(subject="Someone else's secret", requester_email="lee@example.org")

    response = client.get(status_path(case, key))

    html = page(response)
    assert response.status_code == 200
    assert case.tracking_number in html and "Export fails" in html
    assert "Waiting on you" in html
    assert "The export to Excel fails." in html and "Please send the file." in html
    assert "Minji" in html
    assert "Zwolinski" not in html and agent.email not in html and agent.username not in html
    assert "Secret: customer is grumpy" not in html
    assert "I am not the customer" not in html
    assert other.tracking_number not in html and "Someone else" not in html
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]


def _foreign_mail():
    from .conftest import parsed, stored

    message = parsed("Re: x", text="I am not the customer", sender="stranger@example.net")
    return stored(message), message


def test_a_wrong_key_looks_like_an_unknown_number(client, case_and_key):
    case, key = case_and_key
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")

    wrong_key = client.get(status_path(case, tampered))
    unknown = client.get(reverse("portal:status", args=["CS-2026-999999", key]))
    no_grant = client.get(reverse("portal:case", args=[case.tracking_number]))

    assert wrong_key.status_code == unknown.status_code == no_grant.status_code == 404
    assert without_tokens(page(wrong_key)) == without_tokens(page(unknown))
    assert case.subject not in page(wrong_key)


def test_the_status_page_speaks_the_customers_language(client, open_web_case):
    case, key = open_web_case(subject="엑셀 오류", body="내보내기가 안 됩니다.")

    assert '<html lang="ko">' in page(client.get(status_path(case, key)))

    client.cookies["django_language"] = "en"
    assert '<html lang="en">' in page(client.get(status_path(case, key)))


def test_status_words_are_the_customers(case_and_key, agent):
    case, _key = case_and_key
    assert access.customer_status(case) == "Received"
    case.owner = agent
    assert access.customer_status(case) == "Assigned to the support team"
    for status, words in [
        ("waiting_on_customer", "Waiting on you"),
        ("in_progress", "Fix in progress"),
        ("resolved", "Resolved"),
        ("closed", "Closed"),
    ]:
        case.status = status
        assert access.customer_status(case) == words


# Replies on the status page.


def test_a_reply_on_the_page_goes_back_to_the_team(client, case_and_key):
    case, key = case_and_key
    Case.objects.filter(pk=case.pk).update(status=Case.Status.WAITING_ON_CUSTOMER)

    response = client.post(
        status_path(case, key),
        {"message": "Here it is.", "attachments": [SimpleUploadedFile("log.txt", b"trace")]},
    )

    assert response.status_code == 302 and response["Location"] == status_path(case, key)
    case.refresh_from_db()
    assert case.status == Case.Status.OPEN
    event = case.events.filter(kind="customer_message").last()
    assert event.body == "Here it is." and event.data["via"] == "web"
    assert CaseAttachment.objects.get(event=event).filename == "log.txt"
    html = page(client.get(status_path(case, key)))
    assert "Here it is." in html and "log.txt" in html


def test_too_large_and_forbidden_files_are_refused_and_nothing_is_saved(
    client, case_and_key, settings
):
    settings.TRELLIS = {**settings.TRELLIS, "MAIL": {**settings.TRELLIS["MAIL"]}}
    settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"] = 1000
    case, key = case_and_key
    before = case.events.count()

    too_big = client.post(
        status_path(case, key),
        {"message": "Big", "attachments": [SimpleUploadedFile("dump.bin", b"x" * 1001)]},
    )
    forbidden = client.post(
        status_path(case, key),
        {"message": "Exe", "attachments": [SimpleUploadedFile("tool.EXE", b"MZ")]},
    )

    assert too_big.status_code == forbidden.status_code == 422
    assert "too large" in page(too_big) and "dump.bin" in page(too_big)
    assert "not accepted" in page(forbidden) and "tool.EXE" in page(forbidden)
    assert case.events.count() == before
    assert not CaseAttachment.objects.filter(case=case).exists()


def test_a_path_in_an_uploaded_file_name_is_dropped(client, case_and_key):
    case, key = case_and_key
    boundary = "BoUnDaRy"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="message"\r\n\r\n'
        "See file\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="attachments"; filename="../../etc/passwd"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "root:x:0:0\r\n"
        f"--{boundary}--\r\n"
    ).encode()

    response = client.post(
        status_path(case, key), body, content_type=f"multipart/form-data; boundary={boundary}"
    )

    assert response.status_code == 302
    assert CaseAttachment.objects.get(case=case).filename == "passwd"


def test_a_closed_case_takes_no_reply_on_the_page(client, case_and_key):
    case, key = case_and_key
    Case.objects.filter(pk=case.pk).update(status=Case.Status.CLOSED)

    assert 'name="message"' not in page(client.get(status_path(case, key)))
    response = client.post(status_path(case, key), {"message": "Hello?"})
    assert response.status_code == 422
    assert not case.events.filter(body="Hello?").exists()


def test_an_empty_reply_is_refused(client, case_and_key):
    case, key = case_and_key
    response = client.post(status_path(case, key), {"message": " "})
    assert response.status_code == 422 and "Write a message" in page(response)


# Files.


def test_files_download_with_the_key_and_only_the_allowed_public_ones(client, open_web_case):
    case, key = open_web_case(
        attachments=[
            Attachment("report.html", "text/html", b"<script>alert(1)</script>"),
            Attachment("virus.exe", "application/octet-stream", b"MZ"),
        ]
    )
    intake.handle_reply(case, *_foreign_mail_with_file())
    files = {a.filename: a for a in CaseAttachment.objects.filter(case=case)}

    ok = client.get(
        reverse("portal:attachment", args=[case.tracking_number, key, files["report.html"].pk])
    )
    assert ok.status_code == 200
    assert ok["Content-Type"] == "application/octet-stream"
    assert ok["Content-Disposition"].startswith("attachment;")
    assert ok.content == b"<script>alert(1)</script>"

    for name in ("virus.exe", "foreign.txt"):
        url = reverse("portal:attachment", args=[case.tracking_number, key, files[name].pk])
        assert client.get(url).status_code == 404
    wrong = reverse(
        "portal:attachment", args=[case.tracking_number, "x" * 32, files["report.html"].pk]
    )
    assert client.get(wrong).status_code == 404
    html = page(client.get(status_path(case, key)))
    assert "report.html" in html and "virus.exe" not in html and "foreign.txt" not in html


def _foreign_mail_with_file():
    from .conftest import parsed, stored

    message = parsed(
        "Re: x",
        sender="stranger@example.net",
        attachments=[Attachment("foreign.txt", "text/plain", b"hi")],
    )
    return stored(message), message


def test_another_cases_file_is_not_reachable_with_this_key(client, open_web_case):
    case, key = open_web_case()
    other, _ = open_web_case(attachments=[Attachment("theirs.txt", "text/plain", b"x")])
    theirs = CaseAttachment.objects.get(case=other)

    url = reverse("portal:attachment", args=[case.tracking_number, key, theirs.pk])
    assert client.get(url).status_code == 404


# The web form.


def new_case_data(client, **overrides):
    form = client.get(NEW).context["form"]
    data = {
        "name": "Kim Minji",
        "email": CUSTOMER,
        "subject": "Export fails",
        "message": "The export to Excel fails.",
        "website": "",
        "started": form.fields["started"].initial,
    }
    data.update(overrides)
    return data


def test_the_web_form_opens_a_case_and_shows_its_number(client, frozen):
    data = new_case_data(client)
    frozen.shift(timedelta(seconds=20))

    response = client.post(NEW, data)

    assert response.status_code == 302 and response["Location"] == reverse("portal:sent")
    case = Case.objects.get()
    assert case.channel == "web" and case.subject == "Export fails"
    sent = client.get(response["Location"])
    assert case.tracking_number in page(sent) and "e-mail" in page(sent)
    assert OutboundMessage.objects.filter(to=[CUSTOMER]).count() == 1


def test_the_web_form_takes_files_and_a_product(client, frozen, admin):
    from tests import factories

    product = factories.product(admin, name="Trellis Cloud")
    data = new_case_data(
        client, product=product.pk, attachments=[SimpleUploadedFile("shot.png", b"\x89PNG")]
    )
    frozen.shift(timedelta(seconds=20))

    assert client.post(NEW, data).status_code == 302

    case = Case.objects.get()
    assert case.product == product
    assert CaseAttachment.objects.get(case=case).filename == "shot.png"


def test_the_honeypot_stops_bots(client, frozen):
    data = new_case_data(client, website="http://spam.example")
    frozen.shift(timedelta(seconds=20))

    response = client.post(NEW, data)

    assert response.status_code == 422 and not Case.objects.exists()
    assert "could not be sent" in page(response)


def test_a_form_sent_too_fast_is_refused_and_can_be_sent_again(client, frozen):
    data = new_case_data(client)
    frozen.shift(timedelta(seconds=1))

    response = client.post(NEW, data)

    assert response.status_code == 422 and not Case.objects.exists()
    assert "very fast" in page(response)
    # The page carries a new timestamp and keeps what was typed.
    assert "The export to Excel fails." in page(response)
    data["started"] = response.context["form"].data["started"]
    frozen.shift(timedelta(seconds=forms_portal.MIN_SECONDS))
    assert client.post(NEW, data).status_code == 302


def test_a_form_older_than_a_day_is_refused(client, frozen):
    data = new_case_data(client)
    frozen.shift(timedelta(seconds=forms_portal.MAX_AGE_SECONDS + 1))

    response = client.post(NEW, data)

    assert response.status_code == 422 and not Case.objects.exists()
    assert "open for too long" in page(response)


def test_a_forged_timestamp_is_refused(client, frozen):
    data = new_case_data(client, started="1700000000")
    frozen.shift(timedelta(seconds=20))

    assert client.post(NEW, data).status_code == 422
    assert not Case.objects.exists()


def test_the_web_form_is_rate_limited_per_client(client, frozen):
    limit, _window = portal.NEW_CASES_PER_CLIENT
    data = new_case_data(client)
    frozen.shift(timedelta(seconds=20))
    for n in range(limit):
        assert client.post(NEW, {**data, "subject": f"Case {n}"}).status_code == 302

    response = client.post(NEW, {**data, "subject": "One more"})

    assert response.status_code == 429
    assert Case.objects.count() == limit


def test_bad_fields_on_the_web_form_get_messages_and_save_nothing(client, frozen):
    data = new_case_data(
        client, email="not-an-address", subject="", attachments=[SimpleUploadedFile("a.js", b"x")]
    )
    frozen.shift(timedelta(seconds=20))

    response = client.post(NEW, data)

    assert response.status_code == 422
    errors = response.context["form"].errors
    assert {"email", "subject", "attachments"} <= set(errors)
    assert not Case.objects.exists()
