"""Mail through the real listener, sent with smtplib as another mail server would."""

import os
import smtplib
import ssl
import subprocess
from dataclasses import dataclass

import pytest
from django.db import DatabaseError, connection

from trellis.core.models import Team
from trellis.mail import inbound, routing
from trellis.mail.models import InboundMessage
from trellis.mail.smtpd import (
    IntakeServer,
    ProcessProcessing,
    TlsCertificate,
    WorkerPool,
    processing_database,
)

from .conftest import build, desk_address, send, store

pytestmark = pytest.mark.django_db(transaction=True)

Status = InboundMessage.Status


def status_of(pk: int) -> str:
    return InboundMessage.objects.values_list("status", flat=True).get(pk=pk)


def accepted_id(answer: tuple[int, bytes]) -> int:
    code, text = answer
    assert code == 250, text
    ok, pk = text.decode().split()
    assert ok == "OK"
    return int(pk)


def test_a_message_is_stored_before_the_server_answers_250(intake_server, desk):
    raw = build("Stored first")
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        refused = client.sendmail("kim@example.co.kr", [desk_address()], raw)
        # sendmail has returned: the 250 came, so the row must already be there.
        assert refused == {}
        message = InboundMessage.objects.get()
    assert bytes(message.raw) == raw
    assert (message.envelope_from, message.recipients, message.peer) == (
        "kim@example.co.kr",
        [desk_address()],
        "127.0.0.1",
    )
    assert intake_server.wait_until_idle()
    assert status_of(message.pk) == Status.PROCESSED
    assert desk.mails == [message.pk]


def test_the_answer_names_the_stored_message(intake_server, desk):
    pk = accepted_id(send(intake_server.port, build()))
    assert InboundMessage.objects.filter(pk=pk).exists()


def test_a_foreign_recipient_is_refused_no_open_relay(intake_server, desk):
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        client.ehlo("client.example.com")
        client.mail("spammer@example.com")
        code, text = client.rcpt("victim@example.org")
        assert code == 550, text
        code, _text = client.rcpt(f"victim@{intake_server.host}")
        assert code == 550
        # A recipient of ours in the same transaction is still taken.
        assert client.rcpt(desk_address())[0] == 250
        accepted_id(client.data(build(to=desk_address())))
    [message] = InboundMessage.objects.all()
    assert message.recipients == [desk_address()]


def test_a_message_for_foreign_recipients_only_is_not_taken(intake_server):
    with (
        smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        client.sendmail("spammer@example.com", ["victim@example.org"], build())
    assert not InboundMessage.objects.exists()


def test_a_mailbox_in_another_domain_is_accepted(intake_server, desk):
    address = "help@support.example.co.kr"
    routing.register_mailbox(address, desk.handle_mail)
    try:
        pk = accepted_id(send(intake_server.port, build(to=address), to=[address]))
        assert intake_server.wait_until_idle()
    finally:
        routing.unregister_mailbox(address)
    assert status_of(pk) == Status.PROCESSED


def test_an_oversized_message_is_refused_with_552(intake_server, desk, mail_settings):
    mail_settings(MAX_MESSAGE_BYTES=10_000, OVERSIZE="refuse")
    big = build("Big", body="x" * 20_000)
    # A client that declares the size is refused at MAIL FROM ...
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("kim@example.co.kr", [desk_address()], big)
        assert refused.value.smtp_code == 552
    # ... and one that does not, after DATA.
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        client.ehlo("client.example.co.kr")
        client.mail("kim@example.co.kr")
        client.rcpt(desk_address())
        code, _text = client.data(big)
        assert code == 552
        # The session goes on: a small message is still taken.
        client.rset()
        client.mail("kim@example.co.kr")
        client.rcpt(desk_address())
        accepted_id(client.data(build("Small")))
    assert list(InboundMessage.objects.values_list("subject", flat=True)) == ["Small"]


def test_an_oversized_message_is_stored_cut_in_truncate_mode(intake_server, desk, mail_settings):
    mail_settings(MAX_MESSAGE_BYTES=10_000, OVERSIZE="truncate")
    big = build("Big", body="x" * 20_000)
    pk = accepted_id(send(intake_server.port, big))
    message = InboundMessage.objects.get(pk=pk)
    assert (message.truncated, message.size, len(message.raw)) == (True, len(big), 10_000)
    assert bytes(message.raw) == big[:10_000]
    assert message.subject == "Big"
    assert intake_server.wait_until_idle()
    message.refresh_from_db()
    assert message.status == Status.PROCESSED
    assert "truncated" in message.flags


def test_when_the_message_cannot_be_stored_the_answer_is_451(intake_server, desk):
    table = InboundMessage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        code, text = send(intake_server.port, build())
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    assert code == 451, text
    assert not InboundMessage.objects.exists()
    # The sender tries again later, and then it is taken.
    accepted_id(send(intake_server.port, build()))


def test_the_same_message_delivered_twice_is_a_duplicate(intake_server, desk):
    raw = build(message_id="<twice@example.co.kr>")
    first = accepted_id(send(intake_server.port, raw))
    assert intake_server.wait_until_idle()
    second = accepted_id(send(intake_server.port, raw))
    assert intake_server.wait_until_idle()
    assert (status_of(first), status_of(second)) == (Status.PROCESSED, Status.DUPLICATE)
    assert desk.mails == [first]
    assert Team.objects.filter(name__startswith="Export fails").count() == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Auto-Submitted": "auto-replied"}, "auto-reply"),
        ({"Precedence": "junk"}, ""),
    ],
)
def test_automated_mail_is_taken_but_ignored(intake_server, desk, headers, reason):
    pk = accepted_id(send(intake_server.port, build("Away", headers=headers)))
    assert intake_server.wait_until_idle()
    message = InboundMessage.objects.get(pk=pk)
    assert message.status == Status.IGNORED
    assert message.reason.startswith(reason)
    assert desk.mails == []


def test_a_mail_loop_is_stopped_by_the_sender_rate_limit(intake_server, desk, mail_settings):
    mail_settings(SENDER_LIMIT=3)
    ids = [
        accepted_id(send(intake_server.port, build(f"Loop {n}", sender="robot@example.com")))
        for n in range(6)
    ]
    assert intake_server.wait_until_idle()
    statuses = [status_of(pk) for pk in ids]
    assert statuses.count(Status.PROCESSED) == 3
    assert statuses.count(Status.IGNORED) == 3
    assert len(desk.mails) == 3


def test_a_failing_handler_quarantines_and_writes_nothing(intake_server, desk):
    desk.fail_with = RuntimeError("broken handler")
    pk = accepted_id(send(intake_server.port, build("Half written")))
    assert intake_server.wait_until_idle()
    message = InboundMessage.objects.get(pk=pk)
    assert message.status == Status.QUARANTINED
    assert "broken handler" in message.reason
    assert not Team.objects.filter(name__startswith="Half written").exists()


def test_mail_for_no_mailbox_is_quarantined(intake_server, desk):
    address = f"sales@{routing.settings.MAIL_DOMAIN}"
    pk = accepted_id(send(intake_server.port, build(to=address), to=[address]))
    assert intake_server.wait_until_idle()
    message = InboundMessage.objects.get(pk=pk)
    assert (message.status, message.reason) == (Status.QUARANTINED, f"No mailbox for {address}.")


def test_replies_are_routed_by_reply_address_in_reply_to_references_and_mailbox(
    intake_server, desk
):
    by_address, by_reply, by_reference = (Team.objects.create(name=n) for n in "ABC")
    routing.link_message("out-b@trellis.test", by_reply)
    routing.link_message("out-c@trellis.test", by_reference)
    address = routing.reply_address(by_address)
    sent = {
        by_address.pk: send(intake_server.port, build("Re: A", to=address), to=[address]),
        by_reply.pk: send(intake_server.port, build("Re: B", in_reply_to="<out-b@trellis.test>")),
        by_reference.pk: send(
            intake_server.port,
            build("Re: C", references="<first@x> <out-c@trellis.test>"),
        ),
    }
    new = accepted_id(send(intake_server.port, build("New question")))
    assert intake_server.wait_until_idle()
    for team_pk, answer in sent.items():
        message = InboundMessage.objects.get(pk=accepted_id(answer))
        assert (message.status, message.object_id) == (Status.PROCESSED, team_pk)
    assert sorted(team for team, _message in desk.replies) == sorted(sent)
    assert desk.mails == [new]


def test_messages_left_received_are_processed_when_the_listener_starts(desk):
    left = [store(build(f"Left {n}")) for n in range(3)]
    server = IntakeServer("127.0.0.1", 0)
    server.start()
    try:
        assert server.wait_until_idle()
    finally:
        server.stop()
    assert {status_of(m.pk) for m in left} == {Status.PROCESSED}
    assert sorted(desk.mails) == sorted(m.pk for m in left)


def test_quarantined_mail_is_rerun_and_filed_by_an_admin(intake_server, desk, admin):
    team = Team.objects.create(name="Incheon")
    address = f"old-address@{routing.settings.MAIL_DOMAIN}"
    first = accepted_id(send(intake_server.port, build("First", to=address), to=[address]))
    second = accepted_id(send(intake_server.port, build("Second", to=address), to=[address]))
    assert intake_server.wait_until_idle()
    assert {status_of(first), status_of(second)} == {Status.QUARANTINED}
    routing.register_mailbox(address, desk.handle_mail)
    try:
        assert inbound.rerun(admin, first).status == Status.PROCESSED
    finally:
        routing.unregister_mailbox(address)
    assert inbound.file_into(admin, second, f"TEAM-{team.pk}").status == Status.FILED
    assert desk.replies == [(team.pk, second)]


def test_stopping_and_starting_again_keeps_taking_mail(desk):
    server = IntakeServer("127.0.0.1", 0)
    server.start()
    server.stop()
    server = IntakeServer("127.0.0.1", 0)
    server.start()
    try:
        accepted_id(send(server.port, build()))
        assert server.wait_until_idle()
    finally:
        server.stop()
    assert InboundMessage.objects.get().status == Status.PROCESSED


def test_an_unparseable_message_is_quarantined_rerun_and_filed_by_hand(intake_server, desk, admin):
    team = Team.objects.create(name="Changwon")
    raw = b"this is not an e-mail message\r\nthere is no header at all\r\n"
    pk = accepted_id(send(intake_server.port, raw))
    assert intake_server.wait_until_idle()
    message = InboundMessage.objects.get(pk=pk)
    assert bytes(message.raw) == raw
    assert message.status == Status.QUARANTINED
    assert message.reason.startswith("Unparseable: ")
    assert desk.mails == []
    again = inbound.rerun(admin, pk)
    assert (again.status, again.attempts) == (Status.QUARANTINED, 2)
    assert inbound.file_into(admin, pk, f"TEAM-{team.pk}").status == Status.FILED
    assert desk.replies == [(team.pk, pk)]
    assert Team.objects.filter(name__startswith=f"Re {team.pk}:").count() == 1


def test_processing_processes_make_cases_of_support_mail_and_of_mail_left_behind():
    # Mail to the support address, whose handler every process registers at start-up (a
    # mailbox registered by a test would exist only in the test's own process).
    support = routing.settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]
    left = store(build("Left behind", sender="lee@example.co.kr", to=support))
    server = IntakeServer("127.0.0.1", 0, process_workers=2)
    server.start()
    try:
        sent = [
            accepted_id(send(server.port, build(f"Question {n}", to=support), to=[support]))
            for n in range(6)
        ]
        assert server.wait_until_idle(timeout=60)
    finally:
        server.stop()

    messages = InboundMessage.objects.filter(pk__in=[left.pk, *sent])
    assert {m.status for m in messages} == {Status.PROCESSED}
    cases = {m.object_id for m in messages}
    assert len(cases) == 7
    assert {m.content_type.model for m in messages} == {"case"}


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="to Django an SQLite connection is always usable"
)
def test_a_store_thread_replaces_its_connection_once_a_job_failed_on_it():
    def answer():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone()[0]

    def break_connection():
        connection.connection.close()

    pool = WorkerPool("test-store", 1)
    pool.start()
    try:
        assert pool.submit(answer).result(10) == 1
        pool.submit(break_connection).result(10)
        # Used a moment ago: not checked before the next job, which fails (the message would
        # be answered 451 and sent again) ...
        with pytest.raises(DatabaseError):
            pool.submit(answer).result(10)
        # ... and after a failure the connection is checked, and replaced.
        assert pool.submit(answer).result(10) == 1
    finally:
        pool.stop()


@dataclass
class _Process:
    alive: bool

    def is_alive(self) -> bool:
        return self.alive


@pytest.mark.django_db(transaction=False)
def test_the_mail_of_one_sender_goes_to_one_processing_process_while_it_lives():
    # A batch holds its senders' rate counters and Message-ID locks until it commits: mail of
    # the same sender in the other process would wait for it.
    processing = ProcessProcessing(3)
    senders = [f"customer{n}@example{n % 7}.co.kr" for n in range(60)]
    queue_of = {sender: processing._queue_for(sender) for sender in senders}
    assert all(processing._queue_for(sender) is queue_of[sender] for sender in senders)
    assert {id(queue) for queue in queue_of.values()} == {id(q) for q in processing._queues}

    processing._processes = [_Process(True), _Process(False), _Process(True)]
    dead = processing._queues[1]
    moved = {sender: processing._queue_for(sender) for sender in senders}
    assert all(queue is not dead for queue in moved.values())
    assert all(moved[s] is queue_of[s] for s in senders if queue_of[s] is not dead)


@dataclass
class _Connection:
    vendor: str
    settings_dict: dict


def test_processing_processes_prepare_their_statements_on_postgresql_unless_told_not_to():
    options = processing_database(_Connection("postgresql", {"NAME": "t", "OPTIONS": {}}))
    assert options["OPTIONS"] == {"server_side_binding": True, "prepare_threshold": 5}
    # DATABASE_URL=...?server_side_binding=false, for a pooler without prepared statements.
    told = {"NAME": "t", "OPTIONS": {"server_side_binding": False, "sslmode": "require"}}
    assert processing_database(_Connection("postgresql", told))["OPTIONS"] == {
        "server_side_binding": False,
        "prepare_threshold": 5,
        "sslmode": "require",
    }
    sqlite = {"NAME": "t.sqlite3", "OPTIONS": {"timeout": 20}}
    assert processing_database(_Connection("sqlite", sqlite)) == sqlite


@pytest.fixture
def certificate(tmp_path, settings):
    """A self-signed certificate for the listener, made with the openssl command."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=trellis.localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    mail = {**settings.TRELLIS["MAIL"], "SMTPD_TLS_CERT": str(cert), "SMTPD_TLS_KEY": str(key)}
    settings.TRELLIS = {**settings.TRELLIS, "MAIL": mail}
    return cert, key


def test_with_a_certificate_the_listener_offers_starttls_and_takes_mail_over_it(certificate, desk):
    server = IntakeServer("127.0.0.1", 0)
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
            client.ehlo("client.example.co.kr")
            assert client.has_extn("starttls")
            client.starttls(context=ssl._create_unverified_context())
            client.ehlo("client.example.co.kr")
            refused = client.sendmail("kim@example.co.kr", [desk_address()], build("Encrypted"))
            assert refused == {}
        assert server.wait_until_idle()
    finally:
        server.stop()
    assert InboundMessage.objects.get().subject == "Encrypted"


def test_without_a_certificate_no_starttls_is_offered(intake_server):
    with smtplib.SMTP("127.0.0.1", intake_server.port, timeout=10) as client:
        client.ehlo("client.example.co.kr")
        assert not client.has_extn("starttls")


def test_a_missing_certificate_stops_the_start_with_the_reason(certificate):
    cert, _key = certificate
    cert.unlink()
    with pytest.raises(FileNotFoundError):
        IntakeServer("127.0.0.1", 0)


def test_a_renewed_certificate_is_used_without_a_restart_and_a_broken_one_is_not(certificate):
    cert, key = certificate
    loaded = TlsCertificate(str(cert), str(key))
    first = loaded.context()
    assert loaded.context() is first

    renewed = cert.read_bytes()
    cert.write_bytes(b"not a certificate")
    os.utime(cert, (1, 1))
    assert loaded.context() is first  # kept, and the failure logged

    cert.write_bytes(renewed)
    os.utime(cert, (2, 2))
    assert loaded.context() is not first
