"""Who may do what with a case: every agent action for every kind of user.

    support, manager, admin   see every case and may act on it
    sales, readonly           see every case, may change none (403)
    marketing                 sees no case: every case is missing to them (404)
    junior (a custom role)    sees and changes only the cases they own; others are missing

A refused action changes nothing: the case, its timeline, its mail and its audit stay as they
were.
"""

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from trellis.core.errors import NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Role, RoleRight, Scope, User
from trellis.mail.models import OutboundMessage
from trellis.support import queries, services
from trellis.support.models import AssignmentRule, Case, CaseEvent

from .. import factories

pytestmark = pytest.mark.django_db

ALLOWED, FORBIDDEN, MISSING = "allowed", "forbidden", "missing"

EXPECTED = {
    Role.SUPPORT: ALLOWED,
    Role.MANAGER: ALLOWED,
    Role.ADMIN: ALLOWED,
    Role.SALES: FORBIDDEN,
    Role.READ_ONLY: FORBIDDEN,
    Role.MARKETING: MISSING,
    "junior": MISSING,
}


@pytest.fixture
def world(db, team, open_web_case):
    """Two cases of one customer, and someone to hand them to."""
    helper = factories.user(Role.SUPPORT, username="helper", first_name="Hana", team=team)
    case, _key = open_web_case(subject="Export fails")
    other, _key = open_web_case(subject="Export fails again")
    return {"case": case, "other": other, "helper": helper}


def junior_role() -> Role:
    role = Role.objects.create(code="junior", name="Junior agent")
    RoleRight.objects.create(
        role=role, object_type="case", scope=Scope.OWN, can_create=True, can_edit=True
    )
    return role


def user_with(code: str, team) -> User:
    if code == "junior":
        junior_role()
    return factories.user(code, username=f"user-{code}", first_name="Test", team=team)


def first_message(case: Case) -> int:
    return CaseEvent.objects.get(case=case, kind=CaseEvent.Kind.CUSTOMER_MESSAGE).pk


ACTIONS: dict[str, Callable[[User, dict[str, Any]], Any]] = {
    "claim": lambda user, w: services.claim(user, w["case"].pk),
    "assign": lambda user, w: services.assign(user, w["case"].pk, user_id=w["helper"].pk),
    "set_status": lambda user, w: services.set_status(user, w["case"].pk, "in_progress"),
    "classify": lambda user, w: services.classify(user, w["case"].pk, "defect"),
    "reply": lambda user, w: services.reply(user, w["case"].pk, "We are on it."),
    "add_note": lambda user, w: services.add_note(user, w["case"].pk, "Checked the logs."),
    "merge": lambda user, w: services.merge(user, w["case"].pk, w["other"].pk),
    "split": lambda user, w: services.split(
        user, w["case"].pk, [first_message(w["case"])], subject="Part two"
    ),
    "edit": lambda user, w: services.edit(user, w["case"].pk, {"priority": "high"}, version=1),
}


def everything() -> dict[str, Any]:
    case_type = ContentType.objects.get_for_model(Case)
    return {
        "cases": list(Case.objects.order_by("pk").values()),
        "events": list(CaseEvent.objects.order_by("pk").values()),
        "mail": OutboundMessage.objects.count(),
        "audit": AuditEvent.objects.filter(content_type=case_type).count(),
    }


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("role", EXPECTED)
def test_each_action_for_each_role(world, team, role, action):
    user = user_with(role, team)
    expected = EXPECTED[role]
    before = everything()

    if expected == ALLOWED:
        ACTIONS[action](user, world)
        assert everything() != before
        return
    error = PermissionDenied if expected == FORBIDDEN else NotFound
    with pytest.raises(error):
        ACTIONS[action](user, world)
    assert everything() == before


@pytest.mark.parametrize("role", EXPECTED)
def test_reading_a_case(world, team, role):
    user = user_with(role, team)
    case = world["case"]
    if EXPECTED[role] == MISSING:
        with pytest.raises(NotFound):
            queries.case(user, case.pk)
        assert queries.cases(user, view="all").items == []
    else:
        assert queries.case(user, case.pk) == case
        assert {c.pk for c in queries.cases(user, view="all").items} == {
            case.pk,
            world["other"].pk,
        }


def test_a_junior_works_on_their_own_cases_only(world, team, manager):
    junior = user_with("junior", team)
    mine, theirs = world["case"], world["other"]
    services.assign(manager, mine.pk, user_id=junior.pk)

    services.set_status(junior, mine.pk, "in_progress")
    services.reply(junior, mine.pk, "Looking into it.")
    assert [c.pk for c in queries.cases(junior, view="all").items] == [mine.pk]
    assert queries.queue_counts(junior)["all"] == 1
    with pytest.raises(NotFound):
        services.set_status(junior, theirs.pk, "in_progress")
    # Merging into a case they cannot see: the target is an unknown input, not a 404.
    with pytest.raises(ValidationFailed) as refused:
        services.merge(junior, mine.pk, theirs.pk)
    assert refused.value.errors == {"target_id": ["No such case."]}


def test_a_case_cannot_be_handed_to_someone_who_may_not_work_on_cases(world, manager, sales):
    before = everything()
    with pytest.raises(ValidationFailed) as refused:
        services.assign(manager, world["case"].pk, user_id=sales.pk)
    assert list(refused.value.errors) == ["user_id"]
    assert everything() == before


def test_the_feature_list_needs_a_right_on_cases(world, team):
    with pytest.raises(PermissionDenied):
        queries.features(user_with(Role.MARKETING, team))
    assert queries.features(user_with(Role.SALES, team)) == []


def test_bad_case_ids_look_missing(world, team):
    agent = user_with(Role.SUPPORT, team)
    for bad in (None, "abc", 0, -1, 999_999):
        with pytest.raises(NotFound):
            services.claim(agent, bad)
        with pytest.raises(NotFound):
            queries.case(agent, bad)


# The Django admin: configuration edited, cases only read.


@pytest.fixture
def site(client, db):
    root = factories.UserFactory(
        username="root", role=None, team=None, is_staff=True, is_superuser=True
    )
    client.force_login(root)
    return client


def test_cases_are_read_only_in_the_admin_and_never_show_the_key_hash(site, world):
    case = world["case"]
    listing = site.get(reverse("admin:support_case_changelist"))
    assert listing.status_code == 200
    assert case.tracking_number in listing.content.decode()
    page = site.get(reverse("admin:support_case_change", args=[case.pk]))
    assert page.status_code == 200
    assert case.access_key_hash not in page.content.decode()
    assert site.get(reverse("admin:support_case_add")).status_code == 403
    before = everything()
    site.post(reverse("admin:support_case_change", args=[case.pk]), {"subject": "Changed"})
    site.post(reverse("admin:support_case_delete", args=[case.pk]), {"post": "yes"})
    assert everything() == before


def test_an_assignment_rule_names_whom_its_method_needs(site, team):
    url = reverse("admin:support_assignmentrule_add")
    base = {"name": "Korean customers", "order": 10, "is_active": "on", "language": "ko"}
    refused = site.post(url, {**base, "method": "round_robin"})
    assert refused.status_code == 200
    assert "Choose the team" in refused.content.decode()
    refused = site.post(url, {**base, "method": "user"})
    assert "Choose the user" in refused.content.decode()
    assert not AssignmentRule.objects.exists()

    created = site.post(url, {**base, "method": "round_robin", "team": team.pk})
    assert created.status_code == 302
    rule = AssignmentRule.objects.get()
    assert (rule.method, rule.team_id, rule.language) == ("round_robin", team.pk, "ko")


def test_features_and_reply_templates_are_edited_in_the_admin(site, world, admin):
    services.classify(admin, world["case"].pk, "feature_request", feature_title="Dark mode")
    listing = site.get(reverse("admin:support_feature_changelist"))
    assert listing.status_code == 200
    assert "Dark mode" in listing.content.decode()
    created = site.post(
        reverse("admin:support_replytemplate_add"),
        {"name": "Screenshot", "language": "ko", "body": "스크린샷을 보내 주시겠어요?"},
    )
    assert created.status_code == 302
    assert [t.name for t in queries.reply_templates(admin, "ko")] == ["Screenshot"]
