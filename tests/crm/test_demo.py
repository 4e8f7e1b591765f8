"""``trellis demo``: the demo dataset is valid data, findable, and safe to load twice."""

import re
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from itertools import pairwise

import pytest
from django.contrib.auth import authenticate
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command

from trellis.core.models import Role, User
from trellis.core.money import MINOR_UNITS
from trellis.core.validators import (
    normalize_business_registration_number,
    normalize_email,
    normalize_phone,
    search_key,
)
from trellis.crm import queries
from trellis.crm.management.commands.demo import PASSWORD, SEARCH_FIELDS, USERS
from trellis.crm.models import (
    Account,
    Activity,
    Contact,
    Lead,
    Opportunity,
    Order,
    OrderLine,
    Product,
)
from trellis.process.pipelines.models import StageChange

pytestmark = pytest.mark.django_db

HANGUL = re.compile(r"[가-힣]{2,}")


def _demo(**options) -> str:
    out = StringIO()
    call_command("demo", no_progress=True, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


@pytest.fixture(params=["services", "bulk"])
def demo(request):
    _demo(scale=50, seed=7, method=request.param)
    return request.param


def test_counts_follow_the_scale(demo):
    assert Opportunity.objects.count() == 50
    assert Account.objects.count() == 10
    assert 10 <= Contact.objects.count() <= 20
    assert Lead.objects.count() == 25
    assert Product.objects.count() == 30
    assert Activity.objects.exists()
    # Every contact belongs to an account, and every account has a contact.
    assert not Contact.objects.filter(accounts=None).exists()
    assert not Account.objects.filter(contacts=None).exists()


def test_every_value_passes_the_real_validators(demo):
    for account in Account.objects.all():
        assert normalize_phone(account.phone) == account.phone
        assert normalize_email(account.email) == account.email
        brn = account.business_registration_number
        assert normalize_business_registration_number(brn) == brn
    for contact in Contact.objects.all():
        assert normalize_phone(contact.phone) == contact.phone
        assert normalize_phone(contact.mobile) == contact.mobile
        assert normalize_email(contact.email) == contact.email
    for lead in Lead.objects.all():
        assert normalize_phone(lead.phone) == lead.phone
        assert normalize_email(lead.email) == lead.email
    for user in User.objects.all():
        assert normalize_email(user.email) == user.email


def test_search_text_is_what_the_services_write(demo):
    for model, fields in SEARCH_FIELDS.items():
        for record in model.objects.all():
            expected = search_key(*(getattr(record, f) for f in fields))
            assert record.search_text == expected, (model, record.pk)


def test_deals_are_consistent(demo):
    for deal in Opportunity.objects.select_related("account"):
        assert deal.owner.role.code in (Role.SALES, Role.MANAGER)
        assert deal.team_id == deal.owner.team_id
        if deal.status == "won":
            assert deal.probability == 100
        elif deal.status == "lost":
            assert deal.probability == 0
        if deal.currency == "KRW":
            assert deal.amount == deal.amount.to_integral_value()
            assert 5_000_000 <= deal.amount <= 500_000_000
    for order in Order.objects.all():
        assert order.opportunity.status == "won"
        lines = list(OrderLine.objects.filter(order=order))
        assert lines
        exact = sum(line.line_total for line in lines)
        step = Decimal(1).scaleb(-MINOR_UNITS[order.currency])
        assert order.total == exact.quantize(step, rounding=ROUND_HALF_UP)
    assert not Activity.objects.filter(is_voc=True).exclude(kind="note").exists()


def test_every_deal_and_lead_has_a_stage_history_that_ends_where_it_stands(demo):
    for model in (Opportunity, Lead):
        content_type = ContentType.objects.get_for_model(model)
        history: dict[int, list[StageChange]] = {}
        for change in StageChange.objects.filter(content_type=content_type).order_by("at", "id"):
            history.setdefault(change.object_id, []).append(change)
        for record in model.objects.select_related("stage"):
            changes = history[record.pk]
            assert changes[0].direction == "entered"
            assert changes[-1].to_stage == record.stage
            assert changes[-1].at == record.stage_entered_at
            for before, after in pairwise(changes):
                assert after.from_stage_id == before.to_stage_id
                assert after.from_entered_at == before.at <= after.at
                forward = after.to_stage.order > before.to_stage.order
                assert after.direction == ("forward" if forward else "backward")
            if model is Opportunity:
                assert record.stage.kind == record.status
                assert record.probability == record.stage.probability
    # Some deals went back a stage, as deals do.
    assert StageChange.objects.filter(direction="backward").exists()


def test_global_search_finds_a_demo_account_by_part_of_its_korean_name(demo):
    admin = User.objects.get(username="admin")
    account = next(a for a in Account.objects.order_by("-id") if HANGUL.search(a.name))
    word = HANGUL.search(account.name).group()
    found = queries.global_search(admin, word[:3])
    assert account in found["account"]


def test_sales_user_sees_own_deals():
    _demo(scale=50, seed=3)
    minji = User.objects.get(username="minji")
    assert minji.get_full_name() == "김민지"
    assert minji.role.code == Role.SALES
    assert minji.manager.role.code == Role.MANAGER
    assert minji.team.name.startswith("서울 영업")
    mine = queries.records(minji, "opportunity")
    assert all(deal.owner_id == minji.pk for deal in mine)


def test_running_twice_keeps_one_set_of_users_and_logins_work():
    _demo(scale=20, seed=1)
    users = User.objects.count()
    deals = Opportunity.objects.count()
    second = _demo(scale=20, seed=1)
    assert User.objects.count() == users == len(USERS)
    assert Opportunity.objects.count() == deals, "no records added without --append"
    assert "--append" in second
    _demo(scale=20, seed=2, append=True)
    assert User.objects.count() == users
    assert Product.objects.count() == 30
    assert Opportunity.objects.count() == deals + 20
    admin = authenticate(username="admin", password=PASSWORD)
    assert admin is not None and admin.is_superuser and admin.is_staff
    assert authenticate(username="minji", password=PASSWORD) is not None
    assert authenticate(username="minji", password="wrong") is None


def test_the_same_seed_gives_the_same_data():
    _demo(scale=30, seed=11, method="bulk")
    first = list(Opportunity.objects.order_by("id").values_list("name", "amount", "status"))
    Opportunity.objects.all().delete()
    _demo(scale=30, seed=11, method="bulk", append=True)
    second = list(Opportunity.objects.order_by("id").values_list("name", "amount", "status"))
    assert first == second


def test_demo_tasks_show_every_kind_of_work_once(django_capture_on_commit_callbacks):
    from trellis.process import queries as task_queries
    from trellis.process.models import Task, Thread

    _demo(scale=50, seed=7)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo_tasks", stdout=StringIO())
    minji = User.objects.get(username="minji")

    work = task_queries.my_work(minji)
    assert work.overdue.tasks and work.queue.tasks
    external = Task.objects.get(assignee_kind=Task.Assignee.EXTERNAL)
    assert external.handed_from.handed_from.owner == minji  # minji -> manager -> partner
    assert Thread.objects.filter(status=Thread.Status.FINISHED).count() == 1
    count = Task.objects.count()
    call_command("demo_tasks", stdout=StringIO())
    assert Task.objects.count() == count


def test_demo_approvals_show_every_state_and_fill_the_report():
    from trellis.core import clock
    from trellis.process.approvals import queries as approval_queries
    from trellis.process.approvals import reports
    from trellis.process.approvals.models import (
        ApprovalAssignment,
        ApprovalProcess,
        ApprovalRequest,
        ExceptionRequest,
    )

    out = _demo(scale=200, seed=1)
    assert "approval requests" in out
    requests = ApprovalRequest.objects.all()
    assert set(requests.values_list("status", flat=True)) == {
        "pending",
        "approved",
        "rejected",
        "recalled",
    }
    assert set(ApprovalProcess.objects.values_list("object_type", flat=True)) == {
        "opportunity",
        "order",
    }
    assert set(ExceptionRequest.objects.values_list("kind", "status")) == {
        ("unlock", "granted"),
        ("override", "refused"),
    }
    assert ApprovalAssignment.objects.filter(on_behalf_of__isnull=False).exists()
    assert ApprovalAssignment.objects.filter(via="escalation").exists()
    assert all(r.submitted_at < clock.now() for r in requests)
    waiting = [r for r in requests if r.status == "pending"]
    overdue = [r for r in waiting if r.steps.get(status="pending").due_at < clock.now()]
    assert len(waiting) == 2 and len(overdue) == 1
    assert (
        approval_queries.inbox_counts(overdue[0].steps.get().assignments.get().user)["overdue"] == 1
    )

    admin = User.objects.get(username="admin")
    deals = ApprovalProcess.objects.get(code="large-deal")
    report = reports.report(admin, deals, reports.period())
    assert report.requests == requests.filter(process=deals).count()
    manager, finance = report.steps
    assert manager.escalated == 1 and manager.median_hours and finance.p90_hours
    assert report.exception_count == 2

    # Running it again adds nothing.
    count = requests.count()
    _demo(scale=20, seed=2, append=True)
    assert ApprovalRequest.objects.count() == count


@pytest.mark.django_db(transaction=True)
def test_demo_automations_tell_the_replacement_part_story():
    # Real commits: the rules run as each change commits, as they do when ``trellis demo`` runs.
    # An earlier test with real commits may have flushed the default pipelines: put them back.
    from importlib import import_module

    from django.apps import apps

    from trellis.process.automations.models import HoldPlacement, Rule, RuleRun
    from trellis.process.models import Task

    import_module("trellis.crm.migrations.0005_default_pipelines").create_pipelines(apps, None)
    out = _demo(scale=200, seed=1)
    assert "automation rules" in out
    assert Rule.objects.count() == 5
    placements = HoldPlacement.objects.order_by("object_id")
    assert [p.released_at is None for p in placements] == [False, False, True]
    shipped, cancelled, _waiting = (p.object_id for p in placements)
    assert Order.objects.get(pk=cancelled).status == "cancelled"
    ship = Task.objects.filter(task_type__code="shipping")
    assert list(ship.values_list("thread__object_id", flat=True)) == [shipped]
    assert Task.objects.filter(task_type__code="picking").count() == 3
    assert not RuleRun.objects.filter(outcome="failed").exists()
