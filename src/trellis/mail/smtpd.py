"""The SMTP intake listener: Trellis' own mail server for the addresses it handles.

A message is answered "250 OK <id>" only once its raw bytes are committed to the database; if
storing fails the answer is 451, and the sender tries again later. A recipient outside our mail
domain that is not one of our mailboxes is refused with 550: this is not a relay. A message
over MAIL["MAX_MESSAGE_BYTES"] is refused with 552, or, with MAIL["OVERSIZE"] "truncate",
stored cut at the limit.

aiosmtpd speaks SMTP on an asyncio loop in a thread of its own. Django's database connections
belong to a thread, so storing runs in a small pool of threads that keep their connections (the
answer waits for it). Processing happens after the answer, so slow processing never holds up a
sender: in processes of their own (``process_workers``), because processing is mostly Python
work and the threads of one process share one core; or, with ``process_workers=0``, in threads
of the listener's process. At start-up, messages left ``received`` (by a crash or a stop) are
processed.
"""

import asyncio
import functools
import logging
import multiprocessing
import os
import queue
import signal
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections

from . import inbound, processor, routing
from .models import InboundMessage

log = logging.getLogger(__name__)

# Envelope recipients one message may have.
MAX_RECIPIENTS = 100
# Seconds after a job that a store or processing thread goes on with its database connection
# unchecked: under load the threads do not spend a round trip per message on checking it.
CONNECTION_CHECKED_FOR = 1.0
# In "truncate" mode the listener still holds a message in memory while it arrives: past this
# multiple of the limit it refuses (552) instead of reading on.
TRUNCATE_READ_FACTOR = 4


class _SMTP(SMTP):
    # RFC 5321 allows 1000 octets a line, but real mailers write longer lines; a message is not
    # refused for that (the size limit still applies).
    line_length_limit = 1 << 20


class WorkerPool:
    """Threads that run jobs in order of arrival, each thread keeping its database connection.

    ``stop`` lets running jobs finish, drops the ones not started, and closes the threads'
    connections (a test database cannot be flushed or dropped while they are open).
    """

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._idle = threading.Condition()

    def start(self) -> None:
        for n in range(self.size):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._idle:
            self._busy += 1
        self._jobs.put((future, function, args, kwargs))
        return future

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until every submitted job has finished; ``False`` if time ran out."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)

    def stop(self) -> None:
        dropped = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
                dropped += 1
        with self._idle:
            self._busy -= dropped
            self._idle.notify_all()
        for _thread in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _work(self) -> None:
        # Until then the thread's connection served a job a moment ago and needs no check.
        checked_until = 0.0
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                future, function, args, kwargs = job
                try:
                    if not future.set_running_or_notify_cancel():
                        continue
                    if time.monotonic() >= checked_until:
                        # As before a web request: replace a connection that is too old,
                        # broken, or (with health checks) no longer answers. The check is a
                        # round trip to the database, as many as storing a message takes.
                        close_old_connections()
                    try:
                        future.set_result(function(*args, **kwargs))
                        checked_until = time.monotonic() + CONNECTION_CHECKED_FOR
                    except BaseException as exc:
                        future.set_exception(exc)
                        checked_until = 0.0
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
        finally:
            connections.close_all()


class ThreadProcessing:
    """Stored messages processed by threads of this process."""

    def __init__(self, size: int) -> None:
        self.pool = WorkerPool("mail-process", size)

    def start(self) -> None:
        self.pool.start()

    def submit(self, inbound_id: int, sender: str = "") -> None:
        self.pool.submit(process_message, inbound_id)

    def wait_until_idle(self, timeout: float) -> bool:
        return self.pool.wait_until_idle(timeout)

    def stop(self) -> None:
        self.pool.stop()


class ProcessProcessing:
    """Stored messages processed by processes of their own, each fed from a queue of ids.

    The processes are started fresh ("spawn", not a fork of a process that runs threads) and
    use the database this process uses. Each takes the ids waiting in its queue together (see
    ``processor.main``).

    The mail of one sender goes to one process. A batch holds its senders' rate counters and
    the locks on its Message-IDs until it commits; a batch of another process with one of those
    senders (a customer who writes twice in a row, a copy of a message, a reply) would wait for
    all of it, and two processes fed from one queue spent most of their time so. Once a process
    has died, its senders' mail goes to the living ones; what it held, its batch uncommitted
    and the ids left in its queue, stays ``received`` for the sweeper.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._context = multiprocessing.get_context("spawn")
        self._queues = [self._context.Queue() for _n in range(size)]
        self._done = self._context.Value("q", 0)
        self._changed = self._context.Condition()
        self._submitted = 0
        self._processes: list[multiprocessing.process.BaseProcess] = []

    def start(self) -> None:
        databases = {DEFAULT_DB_ALIAS: processing_database(connections[DEFAULT_DB_ALIAS])}
        for n, jobs in enumerate(self._queues):
            process = self._context.Process(
                target=processor.main,
                args=(databases, jobs, self._done, self._changed),
                name=f"mail-process-{n}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)

    def submit(self, inbound_id: int, sender: str = "") -> None:
        self._submitted += 1
        self._queue_for(sender).put(inbound_id)

    def _queue_for(self, sender: str) -> Any:
        n = zlib.crc32(sender.encode("utf-8", "replace")) % self.size
        if self._processes and not self._processes[n].is_alive():
            living = [m for m, process in enumerate(self._processes) if process.is_alive()]
            if living:
                n = living[n % len(living)]
        return self._queues[n]

    def wait_until_idle(self, timeout: float) -> bool:
        """``False`` if time ran out, or if every process died (the rows wait for the sweeper)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._done.value < self._submitted:
                left = deadline - time.monotonic()
                if left <= 0 or not any(p.is_alive() for p in self._processes):
                    return False
                # Woken by each message done; a process that dies wakes nobody, hence the cap.
                self._changed.wait(min(left, 1))
        return True

    def stop(self, timeout: float = 30) -> None:
        for jobs in self._queues[: len(self._processes)]:
            jobs.put(None)
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join()
        self._processes.clear()


# A processing process runs the same few dozen statements for every message. On PostgreSQL
# its connection binds parameters on the server and prepares a statement once it has run this
# many times: the server then skips parsing and planning it, and the client quoting values into
# the SQL text; together about a sixth of the CPU a message costs. Settings of the database's
# own OPTIONS win (``?server_side_binding=false`` in DATABASE_URL turns both off, for a
# connection pooler that cannot keep prepared statements).
PREPARE_THRESHOLD = 5


def processing_database(connection: Any) -> dict[str, Any]:
    """The settings of ``connection``'s database for a processing process."""
    database = dict(connection.settings_dict)
    if connection.vendor == "postgresql":
        database["OPTIONS"] = {
            "server_side_binding": True,
            "prepare_threshold": PREPARE_THRESHOLD,
            **database.get("OPTIONS", {}),
        }
    return database


def process_message(inbound_id: int) -> None:
    try:
        inbound.process(inbound_id)
    except Exception:
        # The row stays received; the sweeper tries it again.
        log.exception("processing message %s failed", inbound_id)


def process_messages(inbound_ids: list[int]) -> None:
    try:
        inbound.process_batch(inbound_ids)
    except Exception:
        # The rows not done stay received; the sweeper tries them again.
        log.exception("processing messages %s failed", inbound_ids)


class SmtpListener:
    """An aiosmtpd handler served on ``host:port`` from an event loop on its own thread.

    Port 0 takes a free port; ``port`` says which once ``start`` returned.
    """

    def __init__(
        self,
        handler: Any,
        host: str,
        port: int,
        options: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    def start(self, timeout: float = 10) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name=f"smtp-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the SMTP listener did not start in time")
        if failure:
            self._thread.join()
            raise failure[0]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def _factory(self) -> SMTP:
        return _SMTP(self.handler, **self._options())

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                loop.create_server(self._factory, host=self.host, port=self.port)
            )
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(self._server.wait_closed())
            loop.close()


def accepts_recipient(address: str) -> bool:
    """Our mail domain (reply addresses, mailboxes, and mail for the quarantine) and the
    addresses of our mailboxes, which may be in another domain."""
    domain = address.rpartition("@")[2].strip().lower()
    return domain == settings.MAIL_DOMAIN.lower() or routing.mailbox(address) is not None


class IntakeHandler:
    """aiosmtpd's hooks: who may receive mail here, and what happens to a message."""

    def __init__(self, store_pool: WorkerPool, stored: Callable[[InboundMessage], None]) -> None:
        self.store_pool = store_pool
        self.stored = stored

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        if not accepts_recipient(address):
            return "550 5.7.1 Relay access denied: mail is taken only for our own addresses"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail = settings.TRELLIS["MAIL"]
        if len(raw) > mail["MAX_MESSAGE_BYTES"] and mail["OVERSIZE"] != "truncate":
            return "552 5.3.4 Message too big"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        job = self.store_pool.submit(
            inbound.store,
            raw,
            envelope_from=envelope.mail_from or "",
            recipients=list(envelope.rcpt_tos),
            peer=peer,
        )
        try:
            message: InboundMessage = await asyncio.wrap_future(job)
        except inbound.MessageTooLarge:
            return "552 5.3.4 Message too big"
        except Exception:
            log.exception("could not store a message from %s", envelope.mail_from)
            return "451 4.3.0 The message could not be stored; please try again later"
        self.stored(message)
        return f"250 OK {message.pk}"


class TlsCertificate:
    """The listener's certificate for STARTTLS, from MAIL["SMTPD_TLS_CERT"] and ["SMTPD_TLS_KEY"].

    Loaded when the listener starts (a missing or bad file stops the start with the reason);
    loaded again when a file changes, so a renewed certificate needs no restart. A renewal that
    cannot be loaded is logged and the previous certificate kept.
    """

    def __init__(self, cert: str, key: str) -> None:
        self.paths = (cert, key)
        self._stamp: tuple[float, float] | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        try:
            stamp = tuple(os.stat(path).st_mtime for path in self.paths)
            if stamp != self._stamp:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(*self.paths)
                self._context, self._stamp = context, stamp
        except (OSError, ssl.SSLError):
            if self._context is None:
                raise
            log.exception("could not load the renewed TLS certificate; keeping the previous one")
        return self._context


def _tls_certificate() -> TlsCertificate | None:
    mail = settings.TRELLIS["MAIL"]
    if not (mail["SMTPD_TLS_CERT"] and mail["SMTPD_TLS_KEY"]):
        return None
    certificate = TlsCertificate(mail["SMTPD_TLS_CERT"], mail["SMTPD_TLS_KEY"])
    certificate.context()
    return certificate


def _smtp_options(certificate: TlsCertificate | None) -> dict[str, Any]:
    """aiosmtpd's settings, read for each connection (so a changed setting takes effect)."""
    mail = settings.TRELLIS["MAIL"]
    limit = mail["MAX_MESSAGE_BYTES"]
    if mail["OVERSIZE"] == "truncate":
        limit *= TRUNCATE_READ_FACTOR
    options = {
        "data_size_limit": limit,
        "enable_SMTPUTF8": True,
        # Without a hostname aiosmtpd asks the resolver for the FQDN on every connection.
        "hostname": settings.MAIL_DOMAIN,
        "ident": "Trellis ESMTP",
    }
    if certificate is not None:
        # Offered, not required: a mail server that cannot encrypt still delivers.
        options["tls_context"] = certificate.context()
    return options


class IntakeServer:
    """The listener with its store and processing threads."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        store_threads: int = 8,
        process_workers: int = 0,
        process_threads: int = 4,
    ) -> None:
        mail = settings.TRELLIS["MAIL"]
        self.store_pool = WorkerPool("mail-store", store_threads)
        self.processing = (
            ProcessProcessing(process_workers)
            if process_workers
            else ThreadProcessing(process_threads)
        )
        handler = IntakeHandler(self.store_pool, self._stored)
        self.listener = SmtpListener(
            handler,
            mail["SMTPD_HOST"] if host is None else host,
            mail["SMTPD_PORT"] if port is None else port,
            functools.partial(_smtp_options, _tls_certificate()),
        )

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self) -> None:
        self.store_pool.start()
        self.processing.start()
        try:
            self._process_left_behind()
            self.listener.start()
        except BaseException:
            self.processing.stop()
            self.store_pool.stop()
            raise

    def stop(self) -> None:
        self.listener.stop()
        self.store_pool.stop()
        self.processing.stop()

    def wait_until_idle(self, timeout: float = 30) -> bool:
        """Wait until every accepted message went through processing (for tests and the
        benchmark); ``False`` if time ran out."""
        return self.store_pool.wait_until_idle(timeout) and self.processing.wait_until_idle(timeout)

    def _stored(self, message: InboundMessage) -> None:
        self.processing.submit(message.pk, _sender(message.from_address, message.envelope_from))

    def _process_left_behind(self) -> None:
        pending = InboundMessage.objects.filter(status=InboundMessage.Status.RECEIVED)
        rows = pending.order_by("pk").values_list("pk", "from_address", "envelope_from")
        for pk, from_address, envelope_from in rows.iterator():
            self.processing.submit(pk, _sender(from_address, envelope_from))


def _sender(from_address: str, envelope_from: str) -> str:
    """Whose mail a stored message is, as far as the quick read of its headers tells."""
    return from_address or envelope_from.lower()


def run_forever(
    host: str | None = None,
    port: int | None = None,
    *,
    ready: Callable[[IntakeServer], None] | None = None,
    stop: threading.Event | None = None,
    process_workers: int = 0,
    process_threads: int = 4,
) -> None:
    """Run the listener until SIGTERM or Ctrl-C (or until ``stop`` is set)."""
    stop = stop or threading.Event()
    server = IntakeServer(
        host, port, process_workers=process_workers, process_threads=process_threads
    )
    server.start()
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_args: stop.set())
    try:
        if ready is not None:
            ready(server)
        while not stop.wait(1):
            pass
    finally:
        server.stop()
