"""Mail processed in batches: the same cases as one by one, and nothing lost when one fails.

The processing processes take the stored messages waiting for them together
(``inbound.process_batch``) and the support mailbox opens their cases together
(``intake.open_cases``). These tests put a mixed batch through both paths and compare every row
written, field by field, and check what happens when one message, or the whole batch, fails.
"""

import itertools
import re
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from django.conf import settings
from django.core import mail as django_mail
from django.db import transaction

from trellis.core.models import AuditEvent, RateCounter, Role
from trellis.crm.models import Contact
from trellis.mail import inbound
from trellis.mail.models import InboundMessage, MessageLink, OutboundMessage
from trellis.support import intake
from trellis.support.models import AssignmentRule, Case, CaseAttachment, CaseEvent

from .. import factories
from ..mail.conftest import build

Status = InboundMessage.Status
START = "2026-03-02 09:15:00+09:00"
TRACKING = re.compile(r"CS-\d{4}-\d{6}")


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def mail_settings(monkeypatch):
    def change(**values):
        for name, value in values.items():
            monkeypatch.setitem(settings.TRELLIS["MAIL"], name, value)

    return change


@pytest.fixture
def keys(monkeypatch):
    """Access keys that repeat from run to run, so that two runs write the same text."""
    counter = itertools.count(1)

    def next_key(_nbytes=None):
        return f"key{next(counter):04d}"

    monkeypatch.setattr(intake.secrets, "token_urlsafe", next_key)

    def reset():
        nonlocal counter
        counter = itertools.count(1)

    return reset


def support() -> str:
    return settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]


def stored(raw: bytes, sender: str = "") -> InboundMessage:
    """The row the listener stores (without its durable commit: tests run in a transaction)."""
    summary = inbound.header_summary(raw)
    return InboundMessage.objects.create(
        envelope_from=sender,
        recipients=[support()],
        raw=raw,
        size=len(raw),
        message_id=summary["message_id"],
        from_address=summary["from_address"],
        subject=summary["subject"],
    )


def mail(subject: str, sender: str, *, n: int, **fields) -> bytes:
    return build(subject, sender=sender, to=support(), message_id=f"<m{n}@example.co.kr>", **fields)


def with_attachments(subject: str, sender: str, *, n: int) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = support()
    message["Subject"] = subject
    message["Message-ID"] = f"<m{n}@example.co.kr>"
    message.set_content("The screen is attached.\n")
    message.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="a.pdf")
    message.add_attachment(
        b"MZ...", maintype="application", subtype="octet-stream", filename="x.exe"
    )
    return message.as_bytes()


def without_from(*, n: int) -> bytes:
    return (
        f"To: {support()}\r\nSubject: Nobody wrote this\r\nMessage-ID: <m{n}@example.co.kr>\r\n"
        "\r\nNo sender.\r\n"
    ).encode()


@pytest.fixture
def scene(db, frozen, keys, mail_settings):
    """A desk with agents, rules, accounts, a known customer and an open case; and a mixed
    batch of stored messages that touches every part of the intake."""
    mail_settings(SENDER_LIMIT=2)
    team = factories.TeamFactory(name="Korean desk")
    agents = [
        factories.user(Role.SUPPORT, username=f"agent{n}", first_name=f"A{n}", team=team)
        for n in (1, 2)
    ]
    AssignmentRule.objects.create(
        name="Korean mail", order=1, language="ko", team=team, method="round_robin"
    )
    sales = factories.user(Role.SALES, username="seller")
    acme = factories.account(sales, name="Acme", website="https://www.acme.co.kr")
    known = factories.contact(sales, name="Kim", email="Kim@Known.co.kr", accounts=[acme.pk])
    earlier, _key = intake.open_case(
        channel=Case.Channel.WEB, subject="Printer", body="It jams.", requester_email=known.email
    )
    handled = stored(mail("Handled before", "park@example.com", n=0))
    inbound.process(handled.pk)
    number = earlier.tracking_number
    raws = [
        mail("Export fails", "kim@known.co.kr", n=1),
        mail("Login broken", "lee@acme.co.kr", n=2, body="Since the update.\n"),
        mail(
            "로그인이 되지 않습니다",
            "choi@gmail.com",
            n=3,
            body="안녕하세요. 로그인이 안 됩니다.\n",
        ),
        mail("엑셀 오류", "choi@gmail.com", n=4, body="엑셀 내보내기가 안 됩니다.\n"),
        with_attachments("Screenshot", "lee@acme.co.kr", n=5),
        mail(f"Re: [{number}] Printer", "kim@known.co.kr", n=6, body="Still jams.\n"),
        mail(f"Re: [{number}] Printer", "stranger@else.com", n=7, body="Same here.\n"),
        mail("Out of office", "away@acme.co.kr", n=8, headers={"Auto-Submitted": "auto-replied"}),
        without_from(n=9),
        mail("Export fails", "kim@known.co.kr", n=1),  # the same message again
        mail("Handled before", "park@example.com", n=0),  # a copy of one made a case earlier
        mail("Third from Lee", "lee@acme.co.kr", n=10),  # over the limit of 2
        mail("More", "song@new.co.kr", n=11, in_reply_to="<m1@example.co.kr>"),
        mail("Another", "yoon@new.co.kr", n=12),
    ]
    ids = [stored(raw).pk for raw in raws]
    return {"ids": ids, "agents": agents, "earlier": earlier}


def _label(value):
    """Ids differ from run to run (sequences are not rolled back): keep what they name."""
    if isinstance(value, dict):
        if set(value) == {"id", "label"}:
            return value["label"]
        return {k: _label(v) for k, v in value.items() if k not in ("to_id",)}
    if isinstance(value, list):
        return [_label(v) for v in value]
    if isinstance(value, str):
        return value
    return value


def outcome(ids: list[int], before: dict[str, int]) -> dict:
    """Every row the processing wrote, without ids, tracking numbers named by their order."""
    new_cases = list(Case.objects.filter(pk__gt=before["case"]).order_by("pk"))
    names = {case.tracking_number: f"NEW-{n}" for n, case in enumerate(new_cases)}

    def plain(value):
        if isinstance(value, str):
            return TRACKING.sub(lambda m: names.get(m.group(), m.group()), value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    def record(content_type_id, object_id):
        if object_id is None:
            return None
        case = Case.objects.filter(pk=object_id).first()
        return plain(case.tracking_number) if case else ("?", content_type_id)

    messages = [
        {
            "status": m.status,
            "reason": re.sub(r"message \d+", "message N", m.reason),
            "attempts": m.attempts,
            "flags": m.flags,
            "record": record(m.content_type_id, m.object_id),
            "processed": m.processed_at,
        }
        for m in InboundMessage.objects.filter(pk__in=ids).order_by("pk")
    ]
    cases = [
        {
            **{
                f: plain(getattr(c, f))
                for f in (
                    "subject",
                    "description",
                    "status",
                    "kind",
                    "suggested_kind",
                    "channel",
                    "priority",
                    "requester_email",
                    "requester_name",
                    "language",
                    "created_at",
                    "updated_at",
                    "acknowledged_at",
                    "resolved_at",
                    "version",
                )
            },
            "tracking": plain(c.tracking_number),
            "key": c.access_key_hash,
            "contact": c.contact.email if c.contact_id else None,
            "account": str(c.account) if c.account_id else None,
            "owner": c.owner.username if c.owner_id else None,
            "team": str(c.team) if c.team_id else None,
            "contract": c.contract_id,
        }
        for c in new_cases
    ]
    events = [
        (
            plain(e.case.tracking_number),
            e.kind,
            e.public,
            e.at,
            e.actor.username if e.actor_id else None,
            e.author,
            e.body,
            e.html,
            _label(plain(e.data)),
            e.inbound.message_id if e.inbound_id else None,
        )
        for e in CaseEvent.objects.filter(pk__gt=before["event"]).order_by("case__pk", "pk")
    ]
    attachments = [
        (plain(a.case.tracking_number), a.event.kind, a.filename, a.content_type, a.size, a.allowed)
        for a in CaseAttachment.objects.order_by("case__pk", "pk")
    ]
    # A batch makes its new contacts before its cases: the trail's order differs, not its rows.
    audit = sorted(
        (
            (a.content_type.model, a.action, a.actor_id, a.at, *_trail(plain, a))
            for a in AuditEvent.objects.filter(pk__gt=before["audit"])
        ),
        key=repr,
    )
    outgoing = [
        (
            m.to,
            plain(m.subject),
            plain(m.text),
            m.html,
            m.from_address,
            bool(m.reply_to),
            m.in_reply_to,
            m.references,
            m.headers,
            record(m.content_type_id, m.object_id),
        )
        for m in OutboundMessage.objects.filter(pk__gt=before["outbound"]).order_by("pk")
    ]
    links = sorted(
        (link.message_id, record(link.content_type_id, link.object_id))
        for link in MessageLink.objects.filter(pk__gt=before["link"])
        if not link.message_id.endswith(f"@{settings.MAIL_DOMAIN}")  # ours: random ids
    )
    contacts = [
        (c.name, c.email, c.owner.username, sorted(str(a) for a in c.accounts.all()), c.notes)
        for c in Contact.objects.order_by("pk")
    ]
    return {
        "messages": messages,
        "cases": cases,
        "events": events,
        "attachments": attachments,
        "audit": audit,
        "outgoing": outgoing,
        "links": links,
        "contacts": contacts,
        "counters": sorted(RateCounter.objects.values_list("key", "hits")),
        "rules": list(AssignmentRule.objects.values_list("last_assigned__username", flat=True)),
    }


def _trail(plain, row: AuditEvent) -> tuple:
    return _label(plain(row.changes)), plain(row.summary)


def high_water() -> dict[str, int]:
    def last(model):
        return model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    return {
        "case": last(Case),
        "event": last(CaseEvent),
        "audit": last(AuditEvent),
        "outbound": last(OutboundMessage),
        "link": last(MessageLink),
    }


class _Undo(Exception):
    pass


def run(process, ids: list[int], keys) -> dict:
    """Process ``ids`` with ``process`` and return what it wrote; then undo all of it."""
    keys()
    before = high_water()
    result = {}
    try:
        with transaction.atomic():
            process(ids)
            result = outcome(ids, before)
            raise _Undo
    except _Undo:
        pass
    return result


def one_by_one(ids: list[int]) -> None:
    for pk in ids:
        inbound.process(pk)


def test_a_batch_writes_what_one_by_one_processing_writes_field_by_field(scene, keys):
    alone = run(one_by_one, scene["ids"], keys)
    together = run(inbound.process_batch, scene["ids"], keys)

    for part in alone:
        assert together[part] == alone[part], part
    # The batch had all of it to do: every kind of outcome is in there.
    statuses = [m["status"] for m in alone["messages"]]
    assert statuses.count(Status.PROCESSED) == 9
    assert statuses.count(Status.DUPLICATE) == 2
    assert statuses.count(Status.IGNORED) == 2  # auto-reply, over the rate limit
    assert statuses.count(Status.QUARANTINED) == 1  # no From
    assert len(alone["cases"]) == 6
    assert {c["owner"] for c in alone["cases"] if c["language"] == "ko"} == {"agent1", "agent2"}
    assert sum(1 for m in alone["outgoing"] if m[8] == {"Auto-Submitted": "auto-replied"}) == 6


def test_each_case_of_a_batch_gets_one_acknowledgement_sent_by_one_task(
    db, settings, django_capture_on_commit_callbacks
):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    senders = [f"c{n}@example{n}.co.kr" for n in range(5)]
    ids = [stored(mail(f"Question {n}", s, n=n)).pk for n, s in enumerate(senders)]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        inbound.process_batch(ids)

    cases = list(Case.objects.order_by("pk"))
    assert [c.requester_email for c in cases] == senders
    assert sorted(m.to[0] for m in django_mail.outbox) == sorted(senders)
    assert set(OutboundMessage.objects.values_list("status", flat=True)) == {"sent"}
    sends = [c for c in callbacks if getattr(c, "__qualname__", "").startswith("queued_together")]
    assert len(sends) == 1
    # A second run of the same rows finds them processed and writes nothing.
    inbound.process_batch(ids)
    assert Case.objects.count() == 5 and OutboundMessage.objects.count() == 5


def test_a_message_that_fails_in_a_batch_is_quarantined_alone(db, monkeypatch):
    real_create = intake.crm_services.create

    def create(actor, object_type, data, preset=None):
        if data.get("email") == "broken@example.co.kr":
            raise RuntimeError("the contact could not be made")
        return real_create(actor, object_type, data, preset)

    monkeypatch.setattr(intake.crm_services, "create", create)
    senders = ["ok1@example.co.kr", "broken@example.co.kr", "ok2@example.co.kr"]
    ids = [stored(mail("Question", s, n=n)).pk for n, s in enumerate(senders)]

    inbound.process_batch(ids)

    messages = list(InboundMessage.objects.filter(pk__in=ids).order_by("pk"))
    assert [m.status for m in messages] == [Status.PROCESSED, Status.QUARANTINED, Status.PROCESSED]
    assert "the contact could not be made" in messages[1].reason
    assert sorted(Case.objects.values_list("requester_email", flat=True)) == [
        "ok1@example.co.kr",
        "ok2@example.co.kr",
    ]
    assert not Contact.objects.filter(email="broken@example.co.kr").exists()
    assert OutboundMessage.objects.count() == 2


def test_a_reply_that_fails_in_a_batch_leaves_the_others_be(db, monkeypatch):
    case, _key = intake.open_case(
        channel=Case.Channel.WEB, subject="Printer", body="Jams.", requester_email="kim@a.co.kr"
    )

    real = intake._customer_message

    def broken(*args, **kwargs):
        real(*args, **kwargs)  # written, then broken: its savepoint must undo it
        raise RuntimeError("the reply broke")

    monkeypatch.setattr(intake, "_customer_message", broken)
    ids = [
        stored(mail("New one", "lee@a.co.kr", n=1)).pk,
        stored(mail(f"Re: [{case.tracking_number}]", "kim@a.co.kr", n=2)).pk,
        stored(mail("Another", "park@a.co.kr", n=3)).pk,
    ]

    inbound.process_batch(ids)

    statuses = list(InboundMessage.objects.filter(pk__in=ids).order_by("pk").values_list("status"))
    assert statuses == [(Status.PROCESSED,), (Status.QUARANTINED,), (Status.PROCESSED,)]
    assert case.events.count() == 2  # received and the first message: nothing of the reply


def test_when_the_batch_fails_as_a_whole_each_message_is_processed_alone(db, monkeypatch):
    def broken(requests):
        raise RuntimeError("a bulk insert was refused")

    monkeypatch.setattr(intake, "open_cases", broken)
    ids = [stored(mail(f"Question {n}", f"c{n}@example.co.kr", n=n)).pk for n in range(4)]

    inbound.process_batch(ids)

    assert set(InboundMessage.objects.filter(pk__in=ids).values_list("status", flat=True)) == {
        Status.PROCESSED
    }
    assert Case.objects.count() == 4
    assert OutboundMessage.objects.count() == 4
    assert set(InboundMessage.objects.values_list("attempts", flat=True)) == {1}


def test_a_process_killed_mid_batch_leaves_its_rows_received_for_the_next_run(db, monkeypatch):
    real_acknowledge = intake.notify.acknowledge
    calls = []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            # What a kill looks like from inside: not an error the code may catch.
            raise KeyboardInterrupt
        return real_acknowledge(*args, **kwargs)

    monkeypatch.setattr(intake.notify, "acknowledge", killed)
    ids = [stored(mail(f"Question {n}", f"c{n}@example.co.kr", n=n)).pk for n in range(5)]

    with pytest.raises(KeyboardInterrupt):
        inbound.process_batch(ids)

    rows = InboundMessage.objects.filter(pk__in=ids)
    assert set(rows.values_list("status", "attempts")) == {(Status.RECEIVED, 0)}
    assert Case.objects.count() == 0 and OutboundMessage.objects.count() == 0
    assert Contact.objects.count() == 0 and MessageLink.objects.count() == 0
    assert RateCounter.objects.count() == 0

    monkeypatch.setattr(intake.notify, "acknowledge", real_acknowledge)
    assert inbound.process_pending() == 5
    assert set(rows.values_list("status", flat=True)) == {Status.PROCESSED}
    assert Case.objects.count() == 5 and OutboundMessage.objects.count() == 5


def test_copies_within_one_batch_make_one_case_and_copies_of_noise_stay_noise(db):
    auto = mail("Out of office", "away@b.co.kr", n=2, headers={"Auto-Submitted": "auto-replied"})
    raws = [
        mail("Export fails", "kim@b.co.kr", n=1),
        auto,
        mail("Export fails", "kim@b.co.kr", n=1),
        auto,
        mail("Export fails", "kim@b.co.kr", n=1),
    ]
    ids = [stored(raw).pk for raw in raws]

    inbound.process_batch(ids)

    messages = list(InboundMessage.objects.filter(pk__in=ids).order_by("pk"))
    assert [m.status for m in messages] == [
        Status.PROCESSED,
        Status.IGNORED,
        Status.DUPLICATE,
        Status.IGNORED,
        Status.DUPLICATE,
    ]
    case = Case.objects.get()
    assert {messages[n].object_id for n in (0, 2, 4)} == {case.pk}
    assert OutboundMessage.objects.count() == 1


def test_the_sender_rate_limit_holds_within_a_batch(db, mail_settings):
    mail_settings(SENDER_LIMIT=2)
    ids = [stored(mail(f"Loop {n}", "loop@c.co.kr", n=n)).pk for n in range(4)]
    ids.append(stored(mail("Other", "calm@c.co.kr", n=9)).pk)

    inbound.process_batch(ids)

    statuses = list(InboundMessage.objects.filter(pk__in=ids).order_by("pk").values_list("status"))
    assert [s for (s,) in statuses] == [
        Status.PROCESSED,
        Status.PROCESSED,
        Status.IGNORED,
        Status.IGNORED,
        Status.PROCESSED,
    ]
    assert Case.objects.count() == 3
    assert RateCounter.objects.get(key="mail-sender:loop@c.co.kr").hits == 4


def test_a_reply_to_a_message_of_the_same_batch_joins_the_case_it_opened(db):
    ids = [
        stored(mail("Export fails", "kim@d.co.kr", n=1)).pk,
        stored(mail("Also this", "kim@d.co.kr", n=2, in_reply_to="<m1@example.co.kr>")).pk,
    ]

    inbound.process_batch(ids)

    case = Case.objects.get()
    assert list(InboundMessage.objects.filter(pk__in=ids).values_list("object_id", flat=True)) == [
        case.pk,
        case.pk,
    ]
    assert case.events.filter(kind=CaseEvent.Kind.CUSTOMER_MESSAGE).count() == 2


def test_the_new_cases_of_a_batch_get_distinct_consecutive_tracking_numbers_in_order(db):
    before, _key = intake.open_case(
        channel=Case.Channel.WEB, subject="Printer", body="Jams.", requester_email="kim@a.co.kr"
    )
    senders = [f"c{n}@example{n}.co.kr" for n in range(6)]
    ids = [stored(mail(f"Question {n}", s, n=n)).pk for n, s in enumerate(senders)]
    ids.insert(
        3, stored(mail("Away", "away@b.co.kr", n=9, headers={"Auto-Submitted": "auto-replied"})).pk
    )

    inbound.process_batch(ids)
    after, _key = intake.open_case(
        channel=Case.Channel.WEB, subject="Toner", body="Empty.", requester_email="kim@a.co.kr"
    )

    cases = list(Case.objects.exclude(pk__in=[before.pk, after.pk]).order_by("pk"))
    assert [c.requester_email for c in cases] == senders
    prefix, first = before.tracking_number.rsplit("-", 1)
    expected = [f"{prefix}-{int(first) + n:06d}" for n in range(1, 7)]
    # Taken together, after the case opened before, in the order of the messages; the
    # auto-reply takes none.
    assert [c.tracking_number for c in cases] == expected
    assert after.tracking_number == f"{prefix}-{int(first) + 7:06d}"


def test_when_the_numbers_of_a_batch_cannot_be_taken_each_message_is_processed_alone(
    db, monkeypatch
):
    real = intake.numbering.next_numbers

    def refusing(prefix, count, year=None):
        if count > 1:
            raise RuntimeError("the sequence is busy")
        return real(prefix, count, year)

    monkeypatch.setattr(intake.numbering, "next_numbers", refusing)
    senders = [f"c{n}@example{n}.co.kr" for n in range(3)]
    ids = [stored(mail(f"Question {n}", s, n=n)).pk for n, s in enumerate(senders)]

    inbound.process_batch(ids)

    messages = list(InboundMessage.objects.filter(pk__in=ids).order_by("pk"))
    assert [m.status for m in messages] == [Status.PROCESSED] * 3
    cases = list(Case.objects.order_by("pk"))
    assert [c.requester_email for c in cases] == senders
    assert len({c.tracking_number for c in cases}) == 3
    assert [m.object_id for m in messages] == [c.pk for c in cases]
    assert OutboundMessage.objects.count() == 3
