"""A real SMTP server for tests to send mail to, and what it received.

How tests send and receive mail
-------------------------------

- Outgoing mail: use the ``smtp_sink`` fixture (tests/conftest.py). It starts an ``SmtpSink`` on
  127.0.0.1 with a free port, points Django's EMAIL_* settings at it with the SMTP backend, and
  switches the task queue to django-tasks' ``ImmediateBackend``, so an enqueued task runs at
  once, in the test's thread. ``outbound.queue`` enqueues its task when the transaction commits:
  in an ordinary ``db`` test wrap the code in ``django_capture_on_commit_callbacks(execute=True)``;
  in a ``transaction=True`` test the commit itself runs it. Then ``smtp_sink.wait_for(...)``.

      def test_x(smtp_sink, django_capture_on_commit_callbacks):
          with django_capture_on_commit_callbacks(execute=True):
              outbound.queue(to="kim@example.com", subject="Hi", text="...")
          received = smtp_sink.wait_for(lambda m: m.message["Subject"] == "Hi")

- Incoming mail: use the ``intake_server`` fixture, which runs Trellis' own ``IntakeServer`` on
  a free port, and send to it with ``smtplib``. Its threads use their own database connections,
  so such tests must be ``@pytest.mark.django_db(transaction=True)`` (the fixture asks for the
  transactional database itself). ``intake_server.wait_until_idle()`` returns when every
  accepted message has been processed.

Waiting is done by polling a condition against a deadline, never by sleeping a fixed time.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from threading import Lock

from trellis.mail.smtpd import SmtpListener


@dataclass(frozen=True)
class Received:
    envelope_from: str
    recipients: list[str]
    raw: bytes
    message: EmailMessage


class _Handler:
    def __init__(self, sink: "SmtpSink") -> None:
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.sink.reject_with:
            return self.sink.reject_with
        raw = envelope.original_content or b""
        received = Received(
            envelope_from=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            raw=raw,
            message=message_from_bytes(raw, policy=policy.default),
        )
        with self.sink._lock:
            self.sink.messages.append(received)
        return "250 OK"


class SmtpSink:
    """Keeps every message sent to it. ``stop`` and ``start`` again keep the same port, so a
    test can make the relay unreachable for a while."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.messages: list[Received] = []
        # An SMTP answer to give to every message instead of taking it, e.g. "451 try later".
        self.reject_with: str | None = None
        self._lock = Lock()
        self._listener = SmtpListener(_Handler(self), host, port, lambda: {"hostname": "sink.test"})

    @property
    def host(self) -> str:
        return self._listener.host

    @property
    def port(self) -> int:
        return self._listener.port

    def start(self) -> "SmtpSink":
        self._listener.start()
        return self

    def stop(self) -> None:
        self._listener.stop()

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait_for(
        self, predicate: Callable[[Received], bool] = lambda m: True, timeout: float = 5
    ) -> Received:
        """The first received message that satisfies ``predicate``; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = next((m for m in self.messages if predicate(m)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no matching message within {timeout}s; received: "
                    f"{[m.message['Subject'] for m in self.messages]}"
                )
            time.sleep(0.01)
