"""Polling an IMAP mailbox, against a real IMAP server: Debian's dovecot, started per test.

Messages are put in the mailbox with IMAP APPEND, as another mail program would, and the
server is asked afterwards what it shows as read.
"""

import imaplib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError

from trellis.mail import imap, inbound
from trellis.mail.models import ImapMailbox, InboundMessage

from .conftest import build, desk_address

pytestmark = pytest.mark.django_db
Status = InboundMessage.Status
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "desk-secret"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ImapServer:
    port: int
    user: str = "desk"
    password: str = PASSWORD

    def config(self, **changes) -> dict:
        return {
            "HOST": "127.0.0.1",
            "PORT": self.port,
            "USER": self.user,
            "PASSWORD": self.password,
            "MAILBOX": "INBOX",
            "SECURITY": "none",
            **changes,
        }

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(self.user, self.password)
        client.select("INBOX")
        return client

    def append(self, raw: bytes) -> None:
        client = self.client()
        try:
            status, data = client.append("INBOX", None, None, raw)
            assert status == "OK", data
        finally:
            client.logout()

    def seen(self) -> dict[int, bool]:
        """UID -> whether the server shows the message as read."""
        client = self.client()
        try:
            _status, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
        finally:
            client.logout()
        flags = {}
        for line in data:
            if not line:
                continue
            text = line.decode()
            uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
            flags[uid] = "\\Seen" in text
        return flags


@pytest.fixture
def imap_server():
    """dovecot in the foreground on a free port: passwd-file login, a maildir of its own."""
    if not Path(DOVECOT).exists():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    port = _free_port()
    # Not under pytest's tmp_path: as root, dovecot's own users must reach the directory.
    tmp_path = Path(tempfile.mkdtemp(prefix="trellis-imap-"))
    if os.getuid() == 0:
        # dovecot does not run its processes as root.
        internal, login = "dovecot", "dovenull"
        owner = pwd.getpwnam(internal)
        tmp_path.chmod(0o755)
    else:
        internal = login = pwd.getpwuid(os.getuid()).pw_name
        owner = pwd.getpwuid(os.getuid())
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, owner.pw_uid, owner.pw_gid)
    (tmp_path / "passwd").write_text(f"desk:{{PLAIN}}{PASSWORD}\n")
    (tmp_path / "dovecot.conf").write_text(
        f"""
base_dir = {tmp_path}/run
state_dir = {tmp_path}/state
log_path = {tmp_path}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
default_internal_user = {internal}
default_login_user = {login}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp_path}/passwd
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={home}/%u
}}
mail_location = maildir:~/Maildir
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""
    )
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(tmp_path / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = tmp_path / "dovecot.log"
                raise RuntimeError(
                    f"dovecot did not start: {process.stderr.read()!r} "
                    f"{log.read_text() if log.exists() else ''}"
                ) from None
            time.sleep(0.05)
    yield ImapServer(port)
    process.terminate()
    process.wait(timeout=10)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def polled(imap_server, mail_settings):
    mail_settings(IMAP=imap_server.config())
    return imap_server


def stored_by_imap():
    return InboundMessage.objects.filter(channel=InboundMessage.Channel.IMAP).order_by("pk")


def test_new_mail_is_stored_processed_and_marked_read_once(polled, desk):
    polled.append(build("First", message_id="<first@example.co.kr>", to=desk_address()))
    polled.append(build("Second", message_id="<second@example.co.kr>", to=desk_address()))

    assert imap.poll() == 2

    messages = list(stored_by_imap())
    assert [m.subject for m in messages] == ["First", "Second"]
    assert {m.status for m in messages} == {Status.PROCESSED}
    assert bytes(messages[0].raw).startswith(b"From: kim@example.co.kr")
    assert desk.mails == [m.pk for m in messages]
    assert polled.seen() == {1: True, 2: True}
    mailbox = ImapMailbox.objects.get()
    assert mailbox.last_uid == 2 and mailbox.uidvalidity > 0 and mailbox.leased_until is None

    # Nothing is fetched twice, even though the server still has both messages.
    assert imap.poll() == 0
    polled.append(build("Third", to=desk_address()))
    assert imap.poll() == 1
    assert [m.subject for m in stored_by_imap()] == ["First", "Second", "Third"]


def test_a_message_read_by_someone_else_is_still_fetched(polled, desk):
    polled.append(build("Read in a mail program", to=desk_address()))
    client = polled.client()
    client.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    client.logout()

    assert imap.poll() == 1
    assert stored_by_imap().get().status == Status.PROCESSED


def test_the_same_message_id_twice_is_a_duplicate(polled, desk):
    raw = build("Export fails", message_id="<same@example.co.kr>", to=desk_address())
    polled.append(raw)
    polled.append(raw)

    assert imap.poll() == 2

    first, second = stored_by_imap()
    assert (first.status, second.status) == (Status.PROCESSED, Status.DUPLICATE)
    assert len(desk.mails) == 1


def test_a_new_uidvalidity_reads_the_mailbox_again_and_finds_duplicates(polled, desk):
    polled.append(build("Once", message_id="<once@example.co.kr>", to=desk_address()))
    assert imap.poll() == 1
    ImapMailbox.objects.update(uidvalidity=1)  # as if the mailbox had been recreated

    assert imap.poll() == 1

    first, again = stored_by_imap()
    assert (first.status, again.status) == (Status.PROCESSED, Status.DUPLICATE)
    assert len(desk.mails) == 1


def test_a_server_that_is_down_loses_nothing_and_is_tried_at_the_next_sweep(
    imap_server, mail_settings, desk, caplog
):
    imap_server.append(build("Waiting", to=desk_address()))
    mail_settings(IMAP=imap_server.config(PORT=_free_port()))

    with pytest.raises(imap.ImapError):
        imap.poll()
    with caplog.at_level(logging.WARNING, logger="trellis.mail.imap"):
        assert imap._sweep() == 0
    assert "trying again at the next sweep" in caplog.text
    assert not stored_by_imap().exists()
    assert ImapMailbox.objects.get().leased_until is None

    mail_settings(IMAP=imap_server.config())
    assert imap._sweep() == 1
    assert imap_server.seen() == {1: True}


def test_a_refused_login_stores_nothing_and_leaves_the_mail_unread(imap_server, mail_settings):
    imap_server.append(build("Waiting", to=desk_address()))
    mail_settings(IMAP=imap_server.config(PASSWORD="wrong"))

    with pytest.raises(imap.ImapError):
        imap.poll()

    assert not stored_by_imap().exists()
    assert imap_server.seen() == {1: False}


def test_a_message_that_cannot_be_stored_stays_unread_and_comes_next_time(
    polled, desk, monkeypatch
):
    polled.append(build("Fails once", to=desk_address()))
    polled.append(build("After it", to=desk_address()))
    real_store = inbound.store

    def failing(raw, **kwargs):
        raise DatabaseError("the disk is full")

    monkeypatch.setattr(inbound, "store", failing)
    assert imap.poll() == 0
    assert polled.seen() == {1: False, 2: False}
    assert ImapMailbox.objects.get().last_uid == 0

    monkeypatch.setattr(inbound, "store", real_store)
    assert imap.poll() == 2
    assert [m.subject for m in stored_by_imap()] == ["Fails once", "After it"]
    assert polled.seen() == {1: True, 2: True}


def test_a_message_over_the_size_limit_is_left_unread_and_skipped(polled, desk, mail_settings):
    polled.append(build("Big", body="x" * 5000, to=desk_address()))
    polled.append(build("Small", to=desk_address()))
    mail_settings(MAX_MESSAGE_BYTES=3000)

    assert imap.poll() == 1

    assert [m.subject for m in stored_by_imap()] == ["Small"]
    assert polled.seen() == {1: False, 2: True}
    assert imap.poll() == 0


def test_a_mailbox_another_poller_holds_is_left_alone(polled, desk):
    polled.append(build("Held", to=desk_address()))
    imap.poll()
    polled.append(build("Later", to=desk_address()))
    ImapMailbox.objects.update(leased_until=imap.clock.now() + imap.LEASE)

    assert imap.poll() == 0
    assert polled.seen() == {1: True, 2: False}


def test_the_command_polls_once(polled, desk, capsys):
    polled.append(build("By command", to=desk_address()))

    call_command("imap_poll")

    assert "1 new message(s) stored" in capsys.readouterr().out
    assert stored_by_imap().get().status == Status.PROCESSED


def test_the_command_says_when_no_mailbox_is_set_or_it_cannot_be_read(imap_server, mail_settings):
    mail_settings(IMAP=None)
    with pytest.raises(CommandError, match="TRELLIS_IMAP_URL"):
        call_command("imap_poll")
    mail_settings(IMAP=imap_server.config(PASSWORD="wrong"))
    with pytest.raises(CommandError, match="Could not poll"):
        call_command("imap_poll")


def test_the_mailbox_comes_from_trellis_imap_url(monkeypatch):
    from trellis import settings as trellis_settings

    monkeypatch.setenv("TRELLIS_IMAP_URL", "imaps://desk%40example.co.kr:p%40ss@mail.example:993/")
    assert trellis_settings._imap_mailbox() == {
        "HOST": "mail.example",
        "PORT": 993,
        "USER": "desk@example.co.kr",
        "PASSWORD": "p@ss",
        "MAILBOX": "INBOX",
        "SECURITY": "ssl",
    }
    monkeypatch.setenv("TRELLIS_IMAP_URL", "imap+tls://desk:pw@mail.example/Support%20mail")
    assert trellis_settings._imap_mailbox()["PORT"] == 143
    assert trellis_settings._imap_mailbox()["MAILBOX"] == "Support mail"
    monkeypatch.setenv("TRELLIS_IMAP_URL", "pop3://desk:pw@mail.example/")
    with pytest.raises(ValueError, match="TRELLIS_IMAP_URL"):
        trellis_settings._imap_mailbox()
    monkeypatch.delenv("TRELLIS_IMAP_URL")
    assert trellis_settings._imap_mailbox() is None
