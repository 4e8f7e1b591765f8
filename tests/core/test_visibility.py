"""``core.visibility``: the rights a user has and the records each scope lets them see.

The full role x object type x action matrix is in ``tests/crm/test_permissions.py``; these tests
pin down the building blocks and the edges of the scopes.
"""

import pytest
from django.contrib.auth.models import AnonymousUser

from trellis.core import registry
from trellis.core.models import Role, RoleRight, Scope, User
from trellis.core.visibility import can, right, rights_of, subordinate_ids, visible
from trellis.crm.models import Account

from .. import factories


def seen_by(user: User) -> set[str]:
    return set(visible(user, Account).values_list("name", flat=True))


def fresh(user: User) -> User:
    return User.objects.get(pk=user.pk)


def grant(role: str, object_type: str, scope: str, *, edit=False) -> None:
    RoleRight.objects.filter(role__code=role, object_type=object_type).update(
        scope=scope, can_edit=edit
    )


def test_subordinates_reach_down_the_whole_reporting_line(db):
    head = factories.user("manager", username="head")
    lead = factories.user("manager", username="lead", manager=head)
    rep = factories.user("sales", username="rep", manager=lead)
    trainee = factories.user("sales", username="trainee", manager=rep)
    peer = factories.user("manager", username="peer")
    assert subordinate_ids(fresh(head)) == {head.pk, lead.pk, rep.pk, trainee.pk}
    assert subordinate_ids(fresh(rep)) == {rep.pk, trainee.pk}
    assert subordinate_ids(fresh(peer)) == {peer.pk}


def test_a_reporting_loop_does_not_hang(db):
    one = factories.user("manager", username="one")
    two = factories.user("manager", username="two", manager=one)
    User.objects.filter(pk=one.pk).update(manager=two)
    assert subordinate_ids(fresh(one)) == {one.pk, two.pk}


def test_subordinates_scope(db, admin, manager, sales, other_sales, outsider):
    report_of_sales = factories.user("sales", username="junior", manager=sales)
    for owner in (manager, sales, other_sales, outsider, report_of_sales):
        factories.account(admin, name=owner.username, owner=owner.pk)
    grant("sales", "account", Scope.SUBORDINATES)
    assert seen_by(fresh(manager)) == {"manager", "sales", "colleague", "junior"}
    assert seen_by(fresh(sales)) == {"sales", "junior"}


def test_team_scope_follows_the_records_team(db, admin, sales, other_sales, outsider):
    factories.account(admin, name="mine", owner=sales.pk)
    factories.account(admin, name="colleague's", owner=other_sales.pk)
    factories.account(admin, name="outsider's", owner=outsider.pk)
    # A record belongs to a team of its own, which need not be its owner's.
    factories.account(admin, name="handed to us", owner=outsider.pk, team=sales.team_id)
    factories.account(admin, name="handed away", owner=other_sales.pk, team=outsider.team_id)
    factories.account(admin, name="mine, no team", owner=sales.pk, team=None)
    assert seen_by(fresh(sales)) == {"mine", "colleague's", "handed to us", "mine, no team"}


def test_team_scope_without_a_team_is_own_records(db, admin, sales):
    loner = factories.user("sales", username="loner", team=None)
    factories.account(admin, name="loner's", owner=loner.pk)
    factories.account(admin, name="teamless", owner=sales.pk, team=None)
    assert seen_by(fresh(loner)) == {"loner's"}


def test_own_scope(db, admin, sales, other_sales):
    factories.account(admin, name="mine", owner=sales.pk)
    factories.account(admin, name="colleague's", owner=other_sales.pk)
    grant("sales", "account", Scope.OWN)
    assert seen_by(fresh(sales)) == {"mine"}


def test_none_scope_sees_nothing_not_even_own_records(db, admin, sales):
    factories.account(admin, name="mine", owner=sales.pk)
    grant("sales", "account", Scope.NONE)
    assert seen_by(fresh(sales)) == set()


def test_superusers_and_administrators_have_every_right_on_every_type(db, admin):
    superuser = factories.UserFactory(role=None, is_superuser=True)
    everything = {t.key: ("all", True, True, True) for t in registry.all_types()}
    assert rights_of(fresh(superuser)) == everything
    assert rights_of(fresh(admin)) == everything
    # The administrator role has no rows; it does not need any.
    assert not RoleRight.objects.filter(role__code=Role.ADMIN).exists()


def test_an_inactive_user_has_no_rights_even_as_superuser(db, admin):
    User.objects.filter(pk=admin.pk).update(is_active=False, is_superuser=True)
    assert rights_of(fresh(admin)) == {}
    assert seen_by(fresh(admin)) == set()


def test_a_user_without_a_role_and_an_anonymous_one_have_no_rights(db, sales):
    factories.account(sales, name="mine")
    User.objects.filter(pk=sales.pk).update(role=None)
    for nobody in (fresh(sales), AnonymousUser()):
        assert rights_of(nobody) == {}
        assert not visible(nobody, Account).exists()
        assert not any(can(nobody, action, "account") for action in ("view", "create", "edit"))


def test_a_type_without_a_row_is_none(db, sales):
    RoleRight.objects.filter(role__code="sales", object_type="lead").delete()
    assert right(fresh(sales), "lead") == (Scope.NONE, False, False, False)
    assert right(fresh(sales), "no-such-type") == (Scope.NONE, False, False, False)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("sales", {"view", "create", "edit"}),
        ("support", {"view", "edit"}),
        ("readonly", {"view"}),
    ],
)
def test_can_answers_from_the_role_right(db, role, allowed):
    user = factories.user(role)
    actions = ("view", "create", "edit", "delete")
    assert {action for action in actions if can(user, action, "account")} == allowed


def test_rights_are_read_once_per_user_object(db, sales):
    # A request works with one user object; a change applies from the next request on.
    factories.account(sales, name="mine")
    same = fresh(sales)
    assert seen_by(same) == {"mine"}
    grant("sales", "account", Scope.NONE)
    assert seen_by(same) == {"mine"}
    assert seen_by(fresh(sales)) == set()
