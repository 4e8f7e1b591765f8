"""What the automation tests share: a clock on a business morning, people, and rules and holds
made through the services. Events run their subscribers when the block of ``events()`` ends,
as they would when the transaction commits."""

from datetime import UTC, datetime
from typing import Any

import pytest

from trellis.process.automations import services

from ... import factories

# Tuesday 3 March 2026, 10:00 in Seoul.
START = datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def tasks_at_once(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture
def events(django_capture_on_commit_callbacks):
    """``with events(): ...``: what is written inside is committed, as far as the
    subscribers can tell, when the block ends; cascades run to their end."""

    def block():
        return django_capture_on_commit_callbacks(execute=True)

    return block


@pytest.fixture
def people(db, team, clock, admin, manager, sales):
    return {"admin": admin, "manager": manager, "sales": sales}


@pytest.fixture
def account(people):
    return factories.account(people["sales"], name="Hanbit Motors", email="buyer@hanbit.co.kr")


def rule(actor, **fields: Any):
    data = {
        "object_type": "opportunity",
        "name": "Rule",
        "trigger": "updated",
        "actions": [{"kind": "set_fields", "values": {"description": "'touched'"}}],
        **fields,
    }
    return services.save_rule(actor, data)
