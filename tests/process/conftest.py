"""What the task-thread tests share: people, a clock standing still, tasks made through the
services, and mail sent to the real SMTP sink or received through the real mail intake.

``deliver()`` wraps code whose mail should reach the sink (tasks run at once on commit).
``reply(...)`` stores a raw message as the SMTP listener would and processes it, as the mail
layer does for every message it accepts.
"""

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trellis.core.models import Role
from trellis.mail import inbound, routing
from trellis.mail.models import InboundMessage, OutboundMessage
from trellis.process import external, services
from trellis.process.models import Task, TaskEvent

from .. import factories
from ..mail import corpus

# 09:00 in Seoul on a Monday.
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
PARTNER = "jisoo@partner.co.kr"
_LINK = re.compile(re.escape(external.LINK_PATH.format(token="")[:-1]) + r"([A-Za-z0-9_-]+)/")


@pytest.fixture
def clock(time_machine):
    """The clock at ``START``, standing still until a test moves it."""
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def people(db, team, clock):
    """Three colleagues in one team, a manager, and someone in another team."""
    return {
        "ana": factories.user(
            Role.SALES, username="ana", first_name="Ana", email="ana@staff.example.com", team=team
        ),
        "ben": factories.user(
            Role.SALES, username="ben", first_name="Ben", email="ben@staff.example.com", team=team
        ),
        "cho": factories.user(
            Role.SUPPORT,
            username="cho",
            first_name="Cho",
            email="cho@staff.example.com",
            team=team,
        ),
        "busan": factories.user(
            Role.SALES,
            username="busan",
            first_name="Dae",
            email="dae@staff.example.com",
            team=factories.TeamFactory(name="Busan"),
        ),
    }


@pytest.fixture
def deliver(smtp_sink, django_capture_on_commit_callbacks):
    """``with deliver(): ...``: mail queued inside is sent to the sink when the block ends."""

    def block():
        return django_capture_on_commit_callbacks(execute=True)

    return block


def new_task(actor, **data: Any) -> Task:
    values = {"title": "Send the revised quote", **data}
    if not {"user_id", "team_id", "external_email"} & set(values):
        values["user_id"] = actor.pk
    return services.create_task(actor, values)


def in_hours(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def history(task: Task) -> list[str]:
    return list(
        TaskEvent.objects.filter(task=task).order_by("at", "id").values_list("kind", flat=True)
    )


def mail_to(address: str) -> list[OutboundMessage]:
    return [m for m in OutboundMessage.objects.order_by("id") if address in m.to]


def token_in(text: str) -> str:
    """The participant's link token in an e-mail."""
    match = _LINK.search(text)
    assert match, text
    return match.group(1)


def reply(
    task: Task,
    *,
    sender: str = PARTNER,
    body: str = "완료\n\n감사합니다.",
    subject: str = "Re: 업무",
    to: str | None = None,
    **kwargs: Any,
) -> InboundMessage:
    """A reply to the task's e-mail, received and processed by the mail layer."""
    address = to or routing.reply_address(task)
    raw = corpus.message(subject=subject, body=body, sender=sender, to=address, **kwargs)
    stored = inbound.store(raw, envelope_from=sender, recipients=[address], peer="10.0.0.7")
    return inbound.process(stored.pk)
