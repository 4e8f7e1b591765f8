"""Assignment on arrival: rules by order and condition, and each method of picking an owner.

Cases are opened through the intake, which calls ``assignment.assign_on_arrival``.
"""

import threading
from collections import Counter
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connections

from trellis.core.models import Role
from trellis.support import assignment, intake, queries, services
from trellis.support.models import AssignmentRule, Case

from .. import factories

pytestmark = pytest.mark.django_db

Method = AssignmentRule.Method


@pytest.fixture
def desk(db):
    """The support team: three agents, plus a sales person and a former agent who get none."""
    team = factories.TeamFactory(name="Support desk")
    agents = [
        factories.user(Role.SUPPORT, username=f"agent{n}", first_name=f"Agent{n}", team=team)
        for n in (1, 2, 3)
    ]
    factories.user(Role.SALES, username="seller", team=team)
    factories.user(Role.SUPPORT, username="former", team=team, is_active=False)
    return team, agents


_counter = iter(range(1, 10_000))


def arrive(**overrides: Any) -> Case:
    values = {
        "channel": "web",
        "subject": f"Question {next(_counter)}",
        "body": "Something happened.",
        "requester_email": "kim@example.co.kr",
    }
    values.update(overrides)
    case, _key = intake.open_case(**values)
    return Case.objects.get(pk=case.pk)


def rule(**fields: Any) -> AssignmentRule:
    fields.setdefault("name", f"Rule {next(_counter)}")
    return AssignmentRule.objects.create(**fields)


def test_without_rules_a_case_waits_in_the_general_queue(desk):
    _team, agents = desk
    case = arrive()
    assert (case.owner_id, case.team_id, case.status) == (None, None, Case.Status.NEW)
    assert [c.pk for c in queries.cases(agents[0], view="queue").items] == [case.pk]


def test_a_rule_for_a_named_user(desk):
    team, agents = desk
    rule(method=Method.USER, user=agents[1])
    case = arrive()
    assert (case.owner_id, case.team_id) == (agents[1].pk, team.pk)


def test_a_named_user_who_left_sends_the_case_to_the_rules_team_queue(desk):
    team, agents = desk
    agents[1].is_active = False
    agents[1].save(update_fields=["is_active"])
    rule(method=Method.USER, user=agents[1], team=team)
    case = arrive()
    assert (case.owner_id, case.team_id) == (None, team.pk)


def test_round_robin_goes_round_the_teams_agents_in_turn(desk):
    team, agents = desk
    robin = rule(method=Method.ROUND_ROBIN, team=team)

    owners = [arrive().owner_id for _ in range(7)]

    ids = [a.pk for a in agents]
    assert owners == [*ids, *ids, ids[0]]
    robin.refresh_from_db()
    assert robin.last_assigned_id == ids[0]
    # Each case still waits for its agent: a team member on the job, not in the queue.
    assert queries.cases(agents[0], view="queue").items == []


def test_round_robin_takes_in_a_new_agent_in_turn(desk):
    team, agents = desk
    rule(method=Method.ROUND_ROBIN, team=team)
    assert [arrive().owner_id for _ in range(2)] == [agents[0].pk, agents[1].pk]
    newcomer = factories.user(Role.SUPPORT, username="newcomer", team=team)
    owners = [arrive().owner_id for _ in range(3)]
    assert owners == [agents[2].pk, newcomer.pk, agents[0].pk]


def test_least_open_picks_the_agent_with_the_fewest_cases_still_being_worked_on(desk):
    team, (a, b, c) = desk
    for owner, count in ((a, 2), (c, 1)):
        for _ in range(count):
            services.assign(owner, arrive().pk, user_id=owner.pk)
    # Resolved work does not count.
    done = arrive()
    services.assign(b, done.pk, user_id=b.pk)
    services.set_status(b, done.pk, Case.Status.RESOLVED)
    rule(method=Method.LEAST_OPEN, team=team)

    owners = [arrive().owner_id for _ in range(4)]

    # Open cases before each arrival (a, b, c): (2, 0, 1) -> b; (2, 1, 1), a tie that goes on
    # in turn after b -> c; (2, 1, 2) -> b; (2, 2, 2), all tie, after b -> c.
    assert owners == [b.pk, c.pk, b.pk, c.pk]


def test_the_queue_method_leaves_the_case_for_the_team_to_claim(desk):
    team, agents = desk
    outsider = factories.user(Role.SUPPORT, username="elsewhere", team=factories.TeamFactory())
    rule(method=Method.QUEUE, team=team)
    case = arrive()
    assert (case.owner_id, case.team_id) == (None, team.pk)
    assert [c.pk for c in queries.cases(agents[2], view="queue").items] == [case.pk]
    assert queries.cases(outsider, view="queue").items == []


def test_a_team_without_agents_leaves_the_case_in_its_queue(desk):
    empty = factories.TeamFactory(name="Nobody here")
    factories.user(Role.SALES, username="lonely-seller", team=empty)
    rule(method=Method.ROUND_ROBIN, team=empty)
    case = arrive()
    assert (case.owner_id, case.team_id) == (None, empty.pk)


def test_conditions_product_account_language_and_skill_tags(desk, admin):
    _team, (a, b, c) = desk
    specialists = factories.TeamFactory(name="Specialists")
    expert = factories.user(Role.SUPPORT, username="expert", team=specialists)
    product = factories.product(admin, name="Trellis ERP")
    account = factories.account(admin, name="Hanbit", email="info@hanbit.example")
    rule(order=10, method=Method.USER, user=a, product=product)
    rule(order=20, method=Method.USER, user=b, account=account)
    rule(order=30, method=Method.USER, user=c, language="ko")
    rule(order=40, method=Method.QUEUE, team=specialists, skill_tags="VPN, 결제 , sso")
    rule(order=50, method=Method.USER, user=expert)

    assert arrive(product=product.pk).owner_id == a.pk
    assert arrive(requester_email="lee@hanbit.example").owner_id == b.pk
    assert arrive(subject="로그인 문제", body="로그인이 안 돼요.").owner_id == c.pk
    told_korean = arrive(subject="Login", body="The language is set to Korean.", language="ko")
    assert told_korean.owner_id == c.pk
    tagged = arrive(subject="Our vpn drops", body="Every hour.")
    assert (tagged.owner_id, tagged.team_id) == (None, specialists.pk)
    assert arrive(subject="SSO", body="Azure AD.").team_id == specialists.pk
    assert arrive(subject="Invoice", body="카드 결제가 두 번 됐어요", language="en").team_id == (
        specialists.pk
    )
    # Nothing special: the last rule, without conditions, catches it.
    assert arrive(subject="Hello", body="Just a question.").owner_id == expert.pk


def test_rules_apply_in_order_and_inactive_ones_are_skipped(desk):
    _team, (a, b, c) = desk
    rule(order=5, method=Method.USER, user=a, is_active=False)
    rule(order=20, method=Method.USER, user=c)
    rule(order=10, method=Method.USER, user=b)
    assert arrive().owner_id == b.pk


def test_matching_is_a_pure_check(db):
    tagged = AssignmentRule(name="t", skill_tags="Export, 내보내기", language="ko-KR")
    case = Case(subject="엑셀 내보내기 오류", description="", language="ko", product_id=None)
    assert assignment.matches(tagged, case)
    case.language = "en"
    assert not assignment.matches(tagged, case)
    assert assignment.skill_tags(" a, ,B ,") == ["a", "b"]


def test_two_arrivals_at_once_do_not_go_to_the_same_agent_out_of_turn(transactional_db):
    team = factories.TeamFactory(name="Desk")
    first = factories.user(Role.SUPPORT, username="first", team=team)
    second = factories.user(Role.SUPPORT, username="second", team=team)
    AssignmentRule.objects.create(name="All", method=Method.ROUND_ROBIN, team=team)
    start = threading.Barrier(2, timeout=30)

    def arrive_at_once(index: int) -> Any:
        try:
            start.wait()
            case, _key = intake.open_case(
                channel="web",
                subject=f"Concurrent {index}",
                body="At the same time.",
                requester_email=f"c{index}@example.com",
            )
            return case.owner_id
        except Exception as exc:
            return exc
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    owners: list[Any] = []
    for round_ in range(3):
        outcome: list[Any] = [None, None]

        def run(index: int, outcome=outcome, round_=round_) -> None:
            outcome[index] = arrive_at_once(round_ * 2 + index)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert sorted(outcome) == sorted([first.pk, second.pk]), outcome
        owners += outcome
    assert Counter(owners) == {first.pk: 3, second.pk: 3}
