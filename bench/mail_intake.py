"""Mail intake, end to end: SMTP accept -> stored raw -> processed -> case, on PostgreSQL.

    .venv/bin/python bench/mail_intake.py                      # 10,000 messages, 8 clients
    .venv/bin/python bench/mail_intake.py --messages 2000 --clients 4 --process-workers 3

Starts the real listener (``trellis smtpd``, as its own process) on a free port of 127.0.0.1,
against the database ``trellis_bench_mail`` (created and migrated if missing; ``--fresh`` drops
it first). A seeding phase, not timed, opens cases whose tracking numbers the replies quote.
Then several client threads send a mix with ``smtplib``, each over one SMTP connection:

- new claims in English, plain text;
- new claims in Korean: UTF-8, EUC-KR, CP949 bytes labelled EUC-KR, ``ks_c_5601-1987``,
  ISO-2022-KR;
- HTML-only claims; claims with a PDF attachment;
- auto-replies (``Auto-Submitted``), which must be ignored;
- exact copies of messages sent earlier (the same Message-ID), which must be duplicates;
- customer replies quoting a tracking number in the subject.

The script waits until every stored message has been processed and prints JSON: what was
accepted and stored (``lost`` must be 0: every "250 OK <id>" names a stored row), the statuses,
the cases created, the wall time from the first SMTP connection to the last message processed,
messages per second over that time, the latency of each message from its storing to the
end of its processing, and the CPU time per message of the listener with its processing
processes (and of each) and of the PostgreSQL backends (read from /proc; unlike wall time, not
inflated by other work on the machine).

``--in-process`` measures processing alone, without the listener: the same mix is stored
directly and processed in this process, as a processing process would (prepared statements on
PostgreSQL), in batches of ``--batch`` messages (1: one by one, as before batches), and the
script prints the CPU time and the database statements per message.

``--src`` runs another copy of the code (``git archive HEAD src | tar -x -C /tmp/old``), to
compare two versions in one session.

Only 127.0.0.1 is contacted. Messages are generated here, deterministically (``--seed``).
"""

import argparse
import base64
import json
import os
import random
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE = "trellis_bench_mail"
CRLF = "\r\n"

KOREAN_SUBJECTS = [
    "엑셀 내보내기 오류 문의",
    "로그인이 되지 않습니다",
    "견적서 재발송 요청",
    "똠방각하 견적 문의",  # 똠: only in CP949, not in EUC-KR
]
KOREAN_BODY = (
    "안녕하세요.\n엑셀 내보내기가 오늘 아침부터 안 됩니다.\n확인 부탁드립니다.\n\n김민지 드림\n"
)
ENGLISH_SUBJECTS = [
    "Export to Excel fails",
    "Cannot log in since the update",
    "Invoice shows the wrong amount",
    "Feature request: dark mode",
]
ENGLISH_BODY = "Hello,\n\nThe export to Excel fails since this morning.\n\nKim Minji\n"
# A small PDF-looking attachment (the parser does not look inside it).
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


# Messages.


def _encoded_word(text: str, charset: str, codec: str | None = None) -> str:
    data = text.encode(codec or charset)
    return f"=?{charset}?B?{base64.b64encode(data).decode()}?="


def _raw(headers: list[tuple[str, str]], body: bytes, content_type: str, encoding: str) -> bytes:
    lines = [f"{name}: {value}" for name, value in headers]
    lines += [
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        f"Content-Transfer-Encoding: {encoding}",
    ]
    return (CRLF.join(lines) + CRLF + CRLF).encode("ascii") + body


def _base64_body(data: bytes) -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return encoded


class Mix:
    """Builds the messages of one run; every sender stays under the per-sender rate limit."""

    def __init__(self, run: str, support: str, rng: random.Random) -> None:
        self.run = run
        self.support = support
        self.rng = rng
        self.count = 0

    def _common(self, sender: str, subject: str) -> list[tuple[str, str]]:
        self.count += 1
        return [
            ("From", sender),
            ("To", self.support),
            ("Subject", subject),
            ("Date", "Mon, 02 Mar 2026 09:15:00 +0900"),
            ("Message-ID", f"<bench-{self.run}-{self.count}@example.co.kr>"),
        ]

    def customer(self, n: int) -> str:
        return f"customer{n}.{self.run}@example{n % 50}.co.kr"

    def english(self, sender: str) -> bytes:
        message = EmailMessage(policy=SMTP_POLICY)
        for name, value in self._common(sender, self.rng.choice(ENGLISH_SUBJECTS)):
            message[name] = value
        message.set_content(ENGLISH_BODY)
        return message.as_bytes()

    def korean(self, sender: str) -> bytes:
        subject = self.rng.choice(KOREAN_SUBJECTS[:3])
        style = self.rng.randrange(5)
        if style == 0:  # UTF-8, base64
            headers = self._common(sender, _encoded_word(subject, "utf-8"))
            body = _base64_body(KOREAN_BODY.encode("utf-8"))
            return _raw(headers, body, 'text/plain; charset="utf-8"', "base64")
        if style == 1:  # EUC-KR
            headers = self._common(sender, _encoded_word(subject, "euc-kr"))
            body = _base64_body(KOREAN_BODY.encode("euc-kr"))
            return _raw(headers, body, 'text/plain; charset="euc-kr"', "base64")
        if style == 2:  # CP949 bytes labelled EUC-KR, as Korean Windows mailers send
            subject = KOREAN_SUBJECTS[3]
            headers = self._common(sender, _encoded_word(subject, "euc-kr", "cp949"))
            body = _base64_body(("똠방각하께,\n" + KOREAN_BODY).encode("cp949"))
            return _raw(headers, body, 'text/plain; charset="euc-kr"', "base64")
        if style == 3:  # Outlook's label
            headers = self._common(sender, _encoded_word(subject, "ks_c_5601-1987", "cp949"))
            body = _base64_body(KOREAN_BODY.encode("cp949"))
            return _raw(headers, body, 'text/plain; charset="ks_c_5601-1987"', "base64")
        headers = self._common(sender, _encoded_word(subject, "utf-8"))  # ISO-2022-KR body
        body = KOREAN_BODY.encode("iso2022_kr").replace(b"\n", b"\r\n")
        return _raw(headers, body, 'text/plain; charset="iso-2022-kr"', "7bit")

    def html_only(self, sender: str) -> bytes:
        html = (
            "<html><body><p>Hello,</p><p>The <b>export</b> fails.</p>"
            '<img src="https://tracker.example.com/p.gif"><script>alert(1)</script>'
            "</body></html>"
        )
        headers = self._common(sender, "HTML only: " + self.rng.choice(ENGLISH_SUBJECTS))
        return _raw(headers, html.encode(), 'text/html; charset="utf-8"', "8bit")

    def with_attachment(self, sender: str) -> bytes:
        message = EmailMessage(policy=SMTP_POLICY)
        for name, value in self._common(sender, "Screenshot attached"):
            message[name] = value
        message.set_content(ENGLISH_BODY)
        message.add_attachment(PDF, maintype="application", subtype="pdf", filename="오류 화면.pdf")
        return message.as_bytes()

    def auto_reply(self, n: int) -> bytes:
        message = EmailMessage(policy=SMTP_POLICY)
        for name, value in self._common(f"away{n}.{self.run}@example.com", "Out of office"):
            message[name] = value
        message["Auto-Submitted"] = "auto-replied"
        message.set_content("I am out of the office until Monday.\n")
        return message.as_bytes()

    def reply(self, tracking_number: str, requester: str) -> bytes:
        message = EmailMessage(policy=SMTP_POLICY)
        for name, value in self._common(requester, f"Re: [{tracking_number}] Export fails"):
            message[name] = value
        message.set_content("It still fails this afternoon.\n\n> previous message\n")
        return message.as_bytes()

    def new_claims(self, count: int, first_customer: int) -> list[tuple[str, bytes]]:
        claims = []
        for i in range(count):
            sender = self.customer(first_customer + i)
            claims.append((sender, self.english(sender)))
        return claims

    def main(
        self, count: int, first_customer: int, cases: list[tuple[str, str]]
    ) -> list[tuple[str, str, bytes]]:
        """(kind, envelope sender, raw) for the timed phase."""
        kinds = (
            ["english"] * 30
            + ["korean"] * 20
            + ["html"] * 10
            + ["attachment"] * 10
            + ["auto"] * 8
            + ["duplicate"] * 7
            + ["reply"] * 15
        )
        messages: list[tuple[str, str, bytes]] = []
        customer = first_customer
        # Up to 5 new claims per customer address, far under the per-sender limit.
        per_customer = 0
        for i in range(count):
            kind = self.rng.choice(kinds)
            if kind == "duplicate" and not messages:
                kind = "english"
            if kind == "reply" and not cases:
                kind = "english"
            if kind == "duplicate":
                _kind, sender, raw = self.rng.choice(messages[-200:])
                messages.append(("duplicate", sender, raw))
                continue
            if kind == "auto":
                messages.append(("auto", "", self.auto_reply(i)))
                continue
            if kind == "reply":
                tracking_number, requester = cases[i % len(cases)]
                messages.append(("reply", requester, self.reply(tracking_number, requester)))
                continue
            if per_customer == 5:
                customer, per_customer = customer + 1, 0
            per_customer += 1
            sender = self.customer(customer)
            build = {
                "english": self.english,
                "korean": self.korean,
                "html": self.html_only,
                "attachment": self.with_attachment,
            }[kind]
            messages.append((kind, sender, build(sender)))
        return messages


# The database and the listener.


def prepare_database(fresh: bool) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]
        ).fetchone()
        if exists and fresh:
            admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
            exists = None
        if not exists:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"postgres://postgres@127.0.0.1:5432/{DATABASE}"


def start_listener(
    environment: dict[str, str], process_workers: int, process_threads: int, src: Path
) -> tuple[subprocess.Popen, int]:
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trellis.cli",
            "manage",
            "smtpd",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--process-workers",
            str(process_workers),
            "--process-threads",
            str(process_threads),
        ],
        env={**environment, "PYTHONPATH": str(src)},
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    line = listener.stdout.readline()
    if "listening on" not in line:
        listener.kill()
        raise SystemExit(f"the listener did not start: {line!r}")
    return listener, int(line.rsplit(":", 1)[1])


# Sending.


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[int] = []
        self.refused: list[str] = []


def client(port: int, support: str, batch: list[tuple[str, str, bytes]], results: Results) -> None:
    accepted, refused = [], []
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=120)
    smtp.ehlo("bench.example.co.kr")
    try:
        for _kind, sender, raw in batch:
            try:
                code, answer = smtp.mail(sender)
                if code != 250:
                    refused.append(f"MAIL {code} {answer!r}")
                    smtp.rset()
                    continue
                code, answer = smtp.rcpt(support)
                if code != 250:
                    refused.append(f"RCPT {code} {answer!r}")
                    smtp.rset()
                    continue
                code, answer = smtp.data(raw)
            except smtplib.SMTPException as exc:
                refused.append(repr(exc))
                smtp.rset()
                continue
            if code == 250:
                accepted.append(int(answer.decode().split()[-1]))
            else:
                refused.append(f"DATA {code} {answer!r}")
    finally:
        smtp.quit()
    with results.lock:
        results.accepted += accepted
        results.refused += refused


def send_all(
    port: int, support: str, messages: list[tuple[str, str, bytes]], clients: int
) -> Results:
    results = Results()
    batches = [messages[i::clients] for i in range(clients)]
    threads = [
        threading.Thread(target=client, args=(port, support, batch, results)) for batch in batches
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def wait_processed(first_id: int, accepted: int, timeout: float) -> None:
    from trellis.mail.models import InboundMessage

    # Both counts are served by indexes ("inbound_status" and the primary key): the polling
    # must not scan the table it measures.
    rows = InboundMessage.objects.filter(pk__gt=first_id)
    deadline = time.monotonic() + timeout
    while True:
        waiting = rows.filter(status=InboundMessage.Status.RECEIVED).count()
        if waiting == 0 and rows.count() >= accepted:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {waiting} stored messages unprocessed")
        time.sleep(0.25)


# CPU time, which other work on a shared machine does not inflate the way it does wall time.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        found.append((int(entry.name), parent, command))
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def cpu_used(listener: int) -> dict[str, float]:
    """CPU seconds used so far by the listener with its processing processes (and by each
    part), and by the PostgreSQL backends serving the benchmark's database."""
    processes = _processes()
    family = {listener}
    for pid, parent, _command in sorted(processes):  # parents before their children
        if parent in family:
            family.add(pid)
    backends = [pid for pid, _parent, command in processes if f" {DATABASE} " in command]
    listener_cpu = _cpu_seconds(listener)
    return {
        "trellis": sum(_cpu_seconds(pid) for pid in family),
        # Of which: receiving and storing (the listener's own process) ...
        "trellis_listener": listener_cpu,
        # ... and processing (its processing processes; 0 when processing runs in threads).
        "trellis_processing": sum(_cpu_seconds(pid) for pid in family - {listener}),
        "postgresql": sum(_cpu_seconds(pid) for pid in backends),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8, help="SMTP client threads")
    parser.add_argument(
        "--process-workers", type=int, default=2, help="processing processes (0: threads)"
    )
    parser.add_argument("--process-threads", type=int, default=4, help="with no processes")
    parser.add_argument("--seed-cases", type=int, default=200, help="cases replies refer to")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the code to run")
    parser.add_argument(
        "--in-process", action="store_true", help="processing alone, in this process"
    )
    parser.add_argument(
        "--batch", type=int, default=50, help="with --in-process: messages per transaction"
    )
    args = parser.parse_args()

    url = prepare_database(args.fresh)
    var_dir = Path(tempfile.gettempdir()) / "trellis-bench-mail"
    var_dir.mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "TRELLIS_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "trellis.settings",
        "TRELLIS_LOG_LEVEL": "ERROR",
    }
    os.environ.update(environment)
    sys.path.insert(0, str(args.src.resolve()))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Max

    call_command("migrate", "--no-input", verbosity=0)
    from trellis.core import services as core_services
    from trellis.mail.models import InboundMessage, OutboundMessage
    from trellis.support.models import Case

    core_services.ensure_default_rights()
    support = settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]
    run = f"{int(time.time())}"
    mix = Mix(run, support, random.Random(args.seed))
    if args.in_process:
        print(json.dumps(process_in_process(args, mix, support), indent=2, ensure_ascii=False))
        return
    listener, port = start_listener(
        environment, args.process_workers, args.process_threads, args.src.resolve()
    )
    try:
        # Seeding (not timed): cases for the replies to quote.
        first_case = Case.objects.aggregate(m=Max("pk"))["m"] or 0
        first_seed = InboundMessage.objects.aggregate(m=Max("pk"))["m"] or 0
        seeds = [("english", s, raw) for s, raw in mix.new_claims(args.seed_cases, 0)]
        seeded = send_all(port, support, seeds, args.clients)
        wait_processed(first_seed, len(seeded.accepted), args.timeout)
        cases = list(
            Case.objects.filter(pk__gt=first_case).values_list("tracking_number", "requester_email")
        )
        # Planner statistics, as a database in use has them (a fresh one has none yet).
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

        messages = mix.main(args.messages, args.seed_cases + 1, cases)
        first_id = InboundMessage.objects.aggregate(m=Max("pk"))["m"] or 0
        first_case = Case.objects.aggregate(m=Max("pk"))["m"] or 0
        first_outbound = OutboundMessage.objects.aggregate(m=Max("pk"))["m"] or 0
        cpu_before = cpu_used(listener.pid)
        started = time.monotonic()
        results = send_all(port, support, messages, args.clients)
        accept_seconds = time.monotonic() - started
        wait_processed(first_id, len(results.accepted), args.timeout)
        wall = time.monotonic() - started
        cpu_after = cpu_used(listener.pid)
    finally:
        listener.terminate()
        listener.wait(timeout=60)

    rows = InboundMessage.objects.filter(pk__gt=first_id)
    stored_ids = set(rows.values_list("pk", flat=True))
    lost = [pk for pk in results.accepted if pk not in stored_ids]
    statuses = dict(rows.values_list("status").annotate(n=Count("pk")).order_by())
    latencies = sorted(
        (processed - received).total_seconds()
        for received, processed in rows.values_list("received_at", "processed_at")
        if processed is not None
    )
    kinds: dict[str, int] = {}
    for kind, _sender, _raw in messages:
        kinds[kind] = kinds.get(kind, 0) + 1
    report = {
        "database": "postgresql",
        "messages_sent": len(messages),
        "mix": kinds,
        "clients": args.clients,
        "process_workers": args.process_workers,
        "process_threads": args.process_threads if not args.process_workers else 0,
        "accepted": len(results.accepted),
        "refused": len(results.refused),
        "refusals": results.refused[:5],
        "stored_raw": len(stored_ids),
        "lost": len(lost),
        "processed_by_status": statuses,
        "cases_created": Case.objects.filter(pk__gt=first_case).count(),
        "acknowledgements_queued": OutboundMessage.objects.filter(pk__gt=first_outbound).count(),
        "accept_seconds": round(accept_seconds, 2),
        "accepted_per_second": round(len(results.accepted) / accept_seconds, 1),
        "wall_seconds": round(wall, 2),
        "messages_per_second": round(len(results.accepted) / wall, 1),
        # CPU per accepted message, whatever else ran on the machine; with enough free cores,
        # messages per second is about 1000 / (the sum) times the cores.
        "cpu_ms_per_message": {
            part: round(1000 * (cpu_after[part] - cpu_before[part]) / len(results.accepted), 2)
            for part in cpu_before
        },
        "load_average": os.getloadavg()[0],
        "latency_seconds": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p95": round(latencies[int(len(latencies) * 0.95) - 1], 3) if latencies else None,
            "max": round(latencies[-1], 3) if latencies else None,
        },
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


def process_in_process(args: argparse.Namespace, mix: Mix, support: str) -> dict:
    """Store the mix directly and process it here; CPU and statements per message."""
    from django.db import connection
    from django.db.models import Count, Max

    from trellis.mail import inbound
    from trellis.mail.models import InboundMessage
    from trellis.mail.smtpd import processing_database
    from trellis.support.models import Case

    # The connection of a processing process: prepared statements on PostgreSQL.
    connection.close()
    connection.settings_dict.update(processing_database(connection))

    def store(messages: list[tuple[str, str, bytes]]) -> list[int]:
        return [
            inbound.store(raw, envelope_from=sender, recipients=[support]).pk
            for _kind, sender, raw in messages
        ]

    first_case = Case.objects.aggregate(m=Max("pk"))["m"] or 0
    for pk in store([("english", s, raw) for s, raw in mix.new_claims(args.seed_cases, 0)]):
        inbound.process(pk)
    cases = list(
        Case.objects.filter(pk__gt=first_case).values_list("tracking_number", "requester_email")
    )
    messages = mix.main(args.messages, args.seed_cases + 1, cases)
    ids = store(messages)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    cpu, database, started = time.process_time(), _cpu_seconds(backend), time.monotonic()
    with connection.execute_wrapper(count):
        if args.batch <= 1:
            for pk in ids:
                inbound.process(pk)
        else:
            for start in range(0, len(ids), args.batch):
                inbound.process_batch(ids[start : start + args.batch])
    cpu, database = time.process_time() - cpu, _cpu_seconds(backend) - database
    wall = time.monotonic() - started
    rows = InboundMessage.objects.filter(pk__in=ids)
    return {
        "mode": "in-process",
        "src": str(args.src),
        "batch": args.batch,
        "messages": len(ids),
        "processed_by_status": dict(rows.values_list("status").annotate(n=Count("pk")).order_by()),
        "unprocessed": rows.filter(status=InboundMessage.Status.RECEIVED).count(),
        "messages_per_second": round(len(ids) / wall, 1),
        "cpu_ms_per_message": {
            "python": round(1000 * cpu / len(ids), 2),
            "postgresql": round(1000 * database / len(ids), 2),
        },
        "statements_per_message": round(statements / len(ids), 2),
        "load_average": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
