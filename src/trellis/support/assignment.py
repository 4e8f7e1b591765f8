"""Who owns a new case: assignment rules, round robin, least open work, or the team queue.

Rules are tried by ``order``; the first active rule whose conditions all hold decides. Its
conditions are the case's product, account, language and skill tags (keywords found in the
subject or the text); an empty condition matches every case. Its method picks:

- ``user``: the named user (if still active; else the rule's team queue), in the rule's team
  or, for a rule without one, the user's own;
- ``round_robin``: the next agent of the rule's team after the one it chose last;
- ``least_open``: the agent of the rule's team with the fewest cases still being worked on
  (ties go round the team like round robin);
- ``queue``: nobody; the case waits in the rule's team queue for the first agent to claim it.

The agents of a team are its active members whose role may edit cases (support, manager,
admin by default): a sales person who happens to sit in the support team is not handed cases.
A rule whose team has no such agent leaves the case in that team's queue.

When no rule matches, the case goes to the general queue: no owner and no team, shown in every
agent's queue view. A site that wants a catch-all team adds a last rule without conditions.

Two cases arriving at once must not both go to the same agent out of turn: round robin and
least open lock their rule's row while they choose, so choices are made one after the other.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, QuerySet

from trellis.core.models import User
from trellis.core.visibility import users_who_may

from .models import AssignmentRule, Case

# A case in one of these states is someone's work; resolved and closed cases are not.
WORKING_STATUSES = (
    Case.Status.NEW,
    Case.Status.OPEN,
    Case.Status.WAITING_ON_CUSTOMER,
    Case.Status.IN_PROGRESS,
)


@dataclass(frozen=True)
class Choice:
    """What the rules decided for one case."""

    rule: AssignmentRule | None
    owner: User | None
    team_id: int | None


def agents(team_id: int | None) -> QuerySet[User]:
    """The members of a team who may be handed cases, in a stable order."""
    if team_id is None:
        return User.objects.none()
    return users_who_may("edit", "case").filter(team_id=team_id).order_by("pk")


def skill_tags(value: str) -> list[str]:
    """``"VPN, 결제 , sso"`` -> ``["vpn", "결제", "sso"]``."""
    return [tag.strip().casefold() for tag in value.split(",") if tag.strip()]


def _language(code: str) -> str:
    return code.split("-")[0].split("_")[0].casefold()


def matches(rule: AssignmentRule, case: Case, text: str | None = None) -> bool:
    """Whether every condition of ``rule`` holds for ``case``."""
    if rule.product_id is not None and rule.product_id != case.product_id:
        return False
    if rule.account_id is not None and rule.account_id != case.account_id:
        return False
    if rule.language and _language(rule.language) != _language(case.language or ""):
        return False
    tags = skill_tags(rule.skill_tags)
    if tags:
        if text is None:
            text = f"{case.subject}\n{case.description}".casefold()
        if not any(tag in text for tag in tags):
            return False
    return True


def choose(case: Case, rules: Iterable[AssignmentRule] | None = None) -> Choice:
    """Apply the first matching rule; round robin and least open remember whom they chose."""
    if rules is None:
        rules = AssignmentRule.objects.filter(is_active=True).order_by("order", "pk")
    text = f"{case.subject}\n{case.description}".casefold()
    for rule in rules:
        if matches(rule, case, text):
            owner = _pick(rule)
            team_id = rule.team_id
            if team_id is None and owner is not None:
                team_id = owner.team_id
            return Choice(rule, owner, team_id)
    return Choice(None, None, None)


def _pick(rule: AssignmentRule) -> User | None:
    method = rule.method
    if method == AssignmentRule.Method.USER:
        user = rule.user
        return user if user is not None and user.is_active else None
    if method not in (AssignmentRule.Method.ROUND_ROBIN, AssignmentRule.Method.LEAST_OPEN):
        return None
    with transaction.atomic():
        # The lock makes concurrent arrivals take turns: each sees the choice the last one
        # made (and, for least open, the case it assigned) before making its own.
        last = (
            AssignmentRule.objects.select_for_update()
            .filter(pk=rule.pk)
            .values_list("last_assigned_id", flat=True)
            .first()
        )
        members = list(agents(rule.team_id))
        if not members:
            return None
        if method == AssignmentRule.Method.LEAST_OPEN:
            load = dict(
                Case.objects.filter(owner__in=members, status__in=WORKING_STATUSES)
                .order_by()
                .values_list("owner_id")
                .annotate(n=Count("pk"))
            )
            fewest = min(load.get(member.pk, 0) for member in members)
            members = [member for member in members if load.get(member.pk, 0) == fewest]
        chosen = _next_after(members, last)
        AssignmentRule.objects.filter(pk=rule.pk).update(last_assigned=chosen)
    return chosen


def _next_after(members: list[User], last_id: int | None) -> User:
    """The first member after ``last_id`` in id order, wrapping round to the first."""
    if last_id is not None:
        for member in members:
            if member.pk > last_id:
                return member
    return members[0]


def assign_on_arrival(case: Case) -> AssignmentRule | None:
    """Set ``case.owner`` and ``case.team`` from the first matching rule (not saved here).

    Returns the rule that decided, or ``None`` (general queue: no owner, no team). The caller
    (intake, inside its transaction) saves ``owner`` and ``team`` and writes the timeline
    event; the status stays "new" until an agent works on the case. The case's product,
    account, language, subject and description must be set before. Round robin and least open
    do write here: the rule's ``last_assigned``, under the rule's row lock.
    """
    choice = choose(case)
    case.owner = choice.owner
    case.team_id = choice.team_id
    return choice.rule
