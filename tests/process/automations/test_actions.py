"""What each kind of action does when a rule fires."""

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from trellis.core.models import Role
from trellis.crm.models import Opportunity
from trellis.mail.models import OutboundMessage
from trellis.process.automations.models import RuleRun
from trellis.process.models import Task

from ... import factories
from .conftest import rule


@pytest.fixture
def crew(team):
    return [
        factories.user(Role.SALES, username=f"crew{i}", first_name=f"Crew {i}", team=team)
        for i in range(3)
    ]


def created(people, account, events, **data):
    with events():
        return factories.opportunity(
            people["sales"], account=account.pk, name="Deal", amount=Decimal(100), **data
        )


def test_round_robin_assigns_each_new_record_to_the_next_member(people, account, events, team):
    members = sorted(u.pk for u in team.members.filter(is_active=True).exclude(username="trellis"))
    rule(
        people["admin"],
        name="Share the deals",
        trigger="created",
        actions=[{"kind": "assign", "method": "round_robin", "team": team.pk}],
    )
    owners = [created(people, account, events) for _ in range(len(members) + 1)]
    got = [Opportunity.objects.get(pk=o.pk).owner_id for o in owners]
    assert got == [*members, members[0]]


def test_least_open_work_picks_the_member_with_fewest_open_tasks(
    people, account, events, team, crew
):
    from trellis.process import services as tasks

    for member in (crew[0], crew[0], crew[1]):
        tasks.create_task(member, {"title": "Busy", "user_id": member.pk})
    idle = [u for u in team.members.all() if u.username not in ("crew0", "crew1")]
    rule(
        people["admin"],
        name="To whoever has least",
        trigger="created",
        actions=[{"kind": "assign", "method": "least_open", "team": team.pk}],
    )
    deal = created(people, account, events)
    deal.refresh_from_db()
    assert deal.owner_id in {u.pk for u in idle}


def test_assign_by_expression(people, account, events):
    rule(
        people["admin"],
        name="Big deals to the manager",
        trigger="created",
        condition="amount > 50.0",
        actions=[
            {"kind": "assign", "method": "expression", "expression": str(people["manager"].pk)}
        ],
    )
    deal = created(people, account, events)
    deal.refresh_from_db()
    assert deal.owner_id == people["manager"].pk


def test_create_related_makes_a_follow_up_record(people, account, events):
    from trellis.crm import services as crm

    rule(
        people["admin"],
        name="Renewal",
        trigger="field_changed",
        trigger_params={"field": "description", "to": "renew"},
        actions=[
            {
                "kind": "create_related",
                "object_type": "opportunity",
                "values": {
                    "name": "'Renewal: ' + name",
                    "account": "account_id",
                    "amount": "amount * 2.0",
                },
            }
        ],
    )
    deal = created(people, account, events)
    with events():
        crm.update(people["sales"], "opportunity", deal.pk, {"description": "renew"}, 1)
    renewal = Opportunity.objects.exclude(pk=deal.pk).get()
    assert (renewal.name, renewal.amount, renewal.owner_id) == (
        "Renewal: Deal",
        Decimal("200"),
        deal.owner_id,
    )


def test_send_email_to_the_owner_with_the_template_filled(people, account, events):
    people["sales"].email = "seller@example.com"
    people["sales"].save()
    rule(
        people["admin"],
        name="Tell the owner",
        trigger="created",
        actions=[
            {
                "kind": "send_email",
                "to": "owner",
                "subject": "New deal {{ name }}",
                "body": "{{ name }} for {{ customer_name }}: {{ amount }}",
            }
        ],
    )
    created(people, account, events)
    message = OutboundMessage.objects.get()
    assert (message.to, message.subject, message.text) == (
        ["seller@example.com"],
        "New deal Deal",
        "Deal for Hanbit Motors: 100.0",
    )
    assert message.headers["Auto-Submitted"] == "auto-generated"


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_posts_the_record(people, account, events):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rule(
            people["admin"],
            name="Tell the ERP",
            trigger="created",
            actions=[
                {"kind": "webhook", "url": f"http://127.0.0.1:{server.server_port}/hooks/deal"}
            ],
        )
        deal = created(people, account, events)
    finally:
        server.shutdown()
    (payload,) = _Receiver.received
    assert (payload["rule"], payload["id"], payload["record"]["name"]) == (
        "Tell the ERP",
        deal.pk,
        "Deal",
    )
    assert RuleRun.objects.get().outcome == "fired"
    assert not Task.objects.exists()
