"""The admins' mail pages and API: the quarantine and failed outgoing mail.

Admins see and act; everyone else gets 404 from every page and endpoint, and nothing changes.
"""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from trellis.core.models import AuditEvent, Role, Team
from trellis.mail import inbound, outbound, routing
from trellis.mail.models import InboundMessage, OutboundMessage

from .. import factories
from ..api.conftest import Api, assert_problem, session_client, token_client
from .conftest import build, store

Inbound = InboundMessage.Status
Outbound = OutboundMessage.Status


@pytest.fixture
def lost(db, desk) -> InboundMessage:
    """A message to an address nobody handles: quarantined."""
    address = f"lost@{routing.settings.MAIL_DOMAIN}"
    raw = build("Where does this go?", to=address, message_id="<lost-1@example.co.kr>")
    message = inbound.process(store(raw, to=[address]).pk)
    assert message.status == Inbound.QUARANTINED
    return message


@pytest.fixture
def failed(db) -> OutboundMessage:
    message = outbound.queue(to="kim@example.co.kr", subject="Never arrived", text="x")
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Outbound.FAILED, attempts=6, last_error="ConnectionRefusedError: refused"
    )
    message.refresh_from_db()
    return message


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def state() -> list:
    return [
        list(InboundMessage.objects.order_by("pk").values("pk", "status", "reason", "attempts")),
        list(OutboundMessage.objects.order_by("pk").values("pk", "status", "attempts")),
        list(AuditEvent.objects.values_list("pk", flat=True)),
        list(Team.objects.values_list("pk", flat=True)),
    ]


# Pages.


def test_the_quarantine_lists_what_an_admin_needs(admin, lost):
    page = browser(admin).get(reverse("mail:quarantine"))
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("Where does this go?", "kim@example.co.kr", "No mailbox for lost@", ">1<"):
        assert text in html
    assert reverse("mail:inbound-detail", args=[lost.pk]) in html


def test_the_quarantine_tabs_filter_by_status(admin, lost, desk):
    processed = inbound.process(store(build("Handled fine")).pk)
    assert processed.status == Inbound.PROCESSED
    client = browser(admin)
    assert "Handled fine" not in client.get(reverse("mail:quarantine")).content.decode()
    everything = client.get(reverse("mail:quarantine"), {"status": "all"}).content.decode()
    assert "Handled fine" in everything and "Where does this go?" in everything
    # An unknown status shows the quarantine, not an error.
    odd = client.get(reverse("mail:quarantine"), {"status": "<script>", "page": "x"})
    assert odd.status_code == 200
    assert "<script>" not in odd.content.decode()


def test_the_detail_page_shows_headers_reason_and_actions(admin, lost):
    page = browser(admin).get(reverse("mail:inbound-detail", args=[lost.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Message-ID" in html and "&lt;lost-1@example.co.kr&gt;" in html
    assert "No mailbox for lost@" in html
    for name in ("inbound-raw", "inbound-rerun", "inbound-file", "inbound-dismiss"):
        assert reverse(f"mail:{name}", args=[lost.pk]) in html


def test_the_raw_message_is_a_download(admin, lost):
    answer = browser(admin).get(reverse("mail:inbound-raw", args=[lost.pk]))
    assert answer.status_code == 200
    assert answer.content == bytes(lost.raw)
    assert answer["Content-Type"] == "application/octet-stream"
    assert answer["Content-Disposition"] == f'attachment; filename="message-{lost.pk}.eml"'


def test_an_admin_files_a_message_from_the_page(admin, lost, desk):
    team = Team.objects.create(name="Suwon")
    client = browser(admin)
    url = reverse("mail:inbound-file", args=[lost.pk])
    answer = client.post(url, {"reference": f"TEAM-{team.pk}"})
    assert answer.status_code == 302
    assert answer["Location"] == reverse("mail:inbound-detail", args=[lost.pk])
    lost.refresh_from_db()
    assert (lost.status, lost.object_id) == (Inbound.FILED, team.pk)
    page = client.get(answer["Location"]).content.decode()
    assert "The message was filed." in page
    assert reverse("mail:inbound-rerun", args=[lost.pk]) not in page


def test_a_bad_reference_is_shown_on_the_page_and_changes_nothing(admin, lost):
    before = state()
    answer = browser(admin).post(
        reverse("mail:inbound-file", args=[lost.pk]), {"reference": "CS-2099-999999"}
    )
    assert answer.status_code == 422
    html = answer.content.decode()
    assert "No record has this reference." in html
    assert 'value="CS-2099-999999"' in html
    assert state() == before


def test_an_admin_dismisses_and_reruns_from_the_page(admin, lost):
    client = browser(admin)
    answer = client.post(reverse("mail:inbound-rerun", args=[lost.pk]))
    assert answer.status_code == 302
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == (Inbound.QUARANTINED, 2)
    assert "still in the quarantine" in client.get(answer["Location"]).content.decode()

    assert client.post(reverse("mail:inbound-dismiss", args=[lost.pk]), {}).status_code == 422
    answer = client.post(reverse("mail:inbound-dismiss", args=[lost.pk]), {"reason": "test"})
    assert answer.status_code == 302
    lost.refresh_from_db()
    assert lost.status == Inbound.IGNORED
    # Dismissed twice: the page says why nothing happened.
    again = client.post(reverse("mail:inbound-dismiss", args=[lost.pk]), {"reason": "again"})
    assert again.status_code == 409
    assert "Only quarantined messages can be dismissed." in again.content.decode()


def test_failed_outgoing_mail_is_listed_and_retried(
    admin, failed, smtp_sink, django_capture_on_commit_callbacks
):
    client = browser(admin)
    page = client.get(reverse("mail:outgoing"))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Never arrived" in html and "ConnectionRefusedError" in html
    retry = reverse("mail:outbound-retry", args=[failed.pk])
    assert retry in html
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(retry)
    assert answer.status_code == 302
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Never arrived")
    failed.refresh_from_db()
    assert failed.status == Outbound.SENT
    answer = client.post(retry, follow=True)
    assert "Only failed messages can be retried." in answer.content.decode()


PAGES = [
    ("get", "mail:quarantine", False),
    ("get", "mail:outgoing", False),
    ("get", "mail:inbound-detail", True),
    ("get", "mail:inbound-raw", True),
    ("post", "mail:inbound-rerun", True),
    ("post", "mail:inbound-dismiss", True),
    ("post", "mail:inbound-file", True),
    ("post", "mail:outbound-retry", True),
]


@pytest.mark.parametrize(("method", "name", "with_id"), PAGES)
@pytest.mark.parametrize("role", [Role.SALES, Role.MANAGER, Role.SUPPORT, Role.READ_ONLY])
def test_other_users_get_404_from_every_page_and_nothing_changes(
    lost, failed, method, name, with_id, role
):
    user = factories.user(role, username=f"not-admin-{role}")
    pk = failed.pk if name == "mail:outbound-retry" else lost.pk
    before = state()
    client = browser(user)
    for target in [pk, 10**6] if with_id else [None]:
        url = reverse(name, args=[target] if with_id else [])
        answer = getattr(client, method)(url, {"reason": "x", "reference": "TEAM-1"})
        assert answer.status_code == 404
        assert b"Where does this go?" not in answer.content
    assert state() == before


@pytest.mark.parametrize(("method", "name", "with_id"), PAGES)
def test_anonymous_visitors_are_sent_to_log_in(lost, method, name, with_id):
    url = reverse(name, args=[lost.pk] if with_id else [])
    answer = getattr(Client(), method)(url)
    assert answer.status_code == 302
    assert answer["Location"].startswith(reverse("login"))


def test_an_unknown_message_is_404_for_an_admin_too(admin, db):
    assert browser(admin).get(reverse("mail:inbound-detail", args=[10**6])).status_code == 404
    assert browser(admin).get(f"/mail/quarantine/{10**20}/").status_code == 404


# API.


def test_the_api_lists_and_reads_incoming_mail(admin, lost, desk):
    inbound.process(store(build("Fine")).pk)
    api = token_client(admin)
    everything = api.get("mail/inbound").json()
    assert [m["subject"] for m in everything["items"]] == ["Fine", "Where does this go?"]
    assert (everything["page"], everything["has_next"]) == (1, False)
    quarantine = api.get("mail/inbound", status="quarantined").json()["items"]
    assert [m["id"] for m in quarantine] == [lost.pk]
    [item] = quarantine
    assert item["reason"].startswith("No mailbox for")
    assert item["message_id"] == "lost-1@example.co.kr"
    assert item["record"] is None
    detail = api.get(f"mail/inbound/{lost.pk}").json()
    assert {"name": "Message-ID", "value": "<lost-1@example.co.kr>"} in detail["headers"]
    assert detail["peer"] == ""


def test_the_api_refuses_bad_list_parameters(admin, db):
    api = token_client(admin)
    assert_problem(api.get("mail/inbound", status="lost"), 422, "status")
    assert_problem(api.get("mail/inbound", colour="red"), 422, "colour")
    assert_problem(api.get("mail/outbound", page_size=1000), 422, "page_size")


def test_the_api_files_a_message(admin, lost, desk):
    team = Team.objects.create(name="Pohang")
    api = token_client(admin)
    url = f"mail/inbound/{lost.pk}/file"
    assert_problem(api.post(url, {"reference": "nope"}), 422, "reference")
    assert_problem(api.post(url, {}), 422, "reference")
    answer = api.post(url, {"reference": f"TEAM-{team.pk}"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "filed"
    assert body["record"] == {"type": "core.team", "id": team.pk}
    # Filed already: a second try is a conflict.
    assert_problem(api.post(url, {"reference": f"TEAM-{team.pk}"}), 409)


def test_the_api_reruns_and_dismisses(admin, lost):
    api = token_client(admin)
    answer = api.post(f"mail/inbound/{lost.pk}/rerun")
    assert (answer.status_code, answer.json()["attempts"]) == (200, 2)
    assert_problem(api.post(f"mail/inbound/{lost.pk}/dismiss", {"reason": ""}), 422, "reason")
    answer = api.post(f"mail/inbound/{lost.pk}/dismiss", {"reason": "newsletter"})
    assert answer.json()["status"] == "ignored"
    audit = AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(InboundMessage), object_id=lost.pk
    )
    assert audit.count() == 2


def test_the_api_lists_and_retries_failed_outgoing_mail(
    admin, failed, smtp_sink, django_capture_on_commit_callbacks
):
    api = session_client(admin)
    items = api.get("mail/outbound", status="failed").json()["items"]
    assert [(m["id"], m["status"], m["attempts"]) for m in items] == [(failed.pk, "failed", 6)]
    with django_capture_on_commit_callbacks(execute=True):
        answer = api.post(f"mail/outbound/{failed.pk}/retry")
    assert (answer.status_code, answer.json()["status"]) == (200, "queued")
    smtp_sink.wait_for(lambda m: m.message["Subject"] == "Never arrived")
    assert_problem(api.post(f"mail/outbound/{failed.pk}/retry"), 409)
    assert_problem(api.post("mail/outbound/999999/retry"), 404)


API_CALLS = [
    ("get", "mail/inbound", None),
    ("get", "mail/inbound/{inbound}", None),
    ("post", "mail/inbound/{inbound}/rerun", {}),
    ("post", "mail/inbound/{inbound}/dismiss", {"reason": "x"}),
    ("post", "mail/inbound/{inbound}/file", {"reference": "TEAM-1"}),
    ("get", "mail/outbound", None),
    ("post", "mail/outbound/{outbound}/retry", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
@pytest.mark.parametrize("role", [Role.SALES, Role.MANAGER, Role.SUPPORT, Role.READ_ONLY])
def test_the_api_is_404_for_everyone_but_admins(lost, failed, method, path, body, role):
    api = token_client(factories.user(role, username=f"api-{role}"))
    before = state()
    for ids in ({"inbound": lost.pk, "outbound": failed.pk}, {"inbound": 10**6, "outbound": 10**6}):
        url = path.format(**ids)
        answer = api.get(url) if method == "get" else api.post(url, body)
        assert_problem(answer, 404)
    assert state() == before


@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
def test_the_api_is_401_without_credentials(lost, failed, method, path, body):
    api = Api(Client())
    url = path.format(inbound=lost.pk, outbound=failed.pk)
    answer = api.get(url) if method == "get" else api.post(url, body)
    assert_problem(answer, 401)


def test_list_queries_do_not_grow_with_the_page(admin, desk):
    team = Team.objects.create(name="Linked")
    routing.link_message("linked@trellis.test", team)
    api = token_client(admin)
    client = browser(admin)

    def add_messages(count: int) -> None:
        for n in range(count):
            raw = build(
                f"Reply {n}",
                sender=f"customer{n}@example.co.kr",
                headers={"In-Reply-To": "<linked@trellis.test>"},
            )
            assert inbound.process(store(raw).pk).status == Inbound.PROCESSED
            outbound.queue(to="kim@example.co.kr", subject=f"Out {n}", text="x", record=team)

    def cost() -> list[int]:
        counts = []
        for request in (
            lambda: api.get("mail/inbound"),
            lambda: api.get("mail/outbound"),
            lambda: client.get(reverse("mail:quarantine"), {"status": "all"}),
            lambda: client.get(reverse("mail:outgoing"), {"status": "all"}),
        ):
            with CaptureQueriesContext(connection) as queries:
                assert request().status_code == 200
            counts.append(len(queries))
        return counts

    add_messages(1)
    cost()  # the token and the session are looked up once and remembered
    one = cost()
    add_messages(20)
    assert cost() == one
    assert max(one[:2]) <= 2
    items = api.get("mail/inbound").json()["items"]
    assert len(items) == 21
    assert {item["record"]["id"] for item in items} == {team.pk}


def test_the_django_admin_shows_mail_read_only(lost, failed):
    root = factories.user(Role.ADMIN, username="root", is_superuser=True, is_staff=True)
    client = browser(root)
    for model, record in ((InboundMessage, lost), (OutboundMessage, failed)):
        name = f"admin:mail_{model._meta.model_name}"
        assert client.get(reverse(f"{name}_changelist")).status_code == 200
        page = client.get(reverse(f"{name}_change", args=[record.pk]))
        assert page.status_code == 200
        assert record.subject in page.content.decode()
        assert b'type="submit" value="Save"' not in page.content
        assert client.get(reverse(f"{name}_add")).status_code == 403
