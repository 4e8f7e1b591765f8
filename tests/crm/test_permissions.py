"""Who may see and do what with CRM records: every kind of user, object type and action.

The expected policy is written out here, apart from ``crm.apps.DEFAULT_RIGHTS``, on purpose: a
change to what a role may do has to be made in both places, so it is never made by accident.

One organisation is built once for the module (each test runs in a savepoint inside it):

    team North:  viewer ............ the user under test; the role changes per test
                 teammate .......... same team, not in the viewer's reporting line
    team South:  report ............ reports to the viewer
                 reports_report .... reports to the report
    team East:   other_team ........ no relation to the viewer

Each of them owns one record of every object type. Scopes, as the viewer sees them:

    own           the viewer's records
    team          the viewer's and the team's (a record belongs to its owner's team by default)
    subordinates  the viewer's and those of everyone reporting to the viewer, at any depth
    all           every record
    none          nothing
"""

import itertools
import re
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db import transaction

from trellis.core.errors import NotFound, PermissionDenied
from trellis.core.models import AuditEvent, Role, RoleRight, Scope, User
from trellis.core.services import ensure_default_rights
from trellis.crm import queries, services
from trellis.crm.apps import DEFAULT_RIGHTS
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

from .. import factories

pytestmark = pytest.mark.django_db

# object type -> role -> "scope:CED", where C, E and D say the role may create, edit and delete.
POLICY_TABLE = """
              manager           sales      support    marketing  readonly
account       subordinates:CED  team:CE-   all:-E-    all:---    all:---
contact       subordinates:CED  team:CE-   all:CE-    all:CE-    all:---
lead          subordinates:CED  own:CED    none:---   all:CED    all:---
opportunity   subordinates:CED  own:CED    none:---   all:---    all:---
product       all:CE-           all:---    all:---    all:---    all:---
order         subordinates:CED  own:CE-    all:---    none:---   all:---
activity      subordinates:CED  team:CED   all:CE-    all:CE-    all:---
"""


@dataclass(frozen=True)
class Right:
    scope: str
    create: bool
    edit: bool
    delete: bool

    @classmethod
    def parse(cls, cell: str) -> "Right":
        scope, letters = cell.split(":")
        assert scope in Scope.values and re.fullmatch("[C-][E-][D-]", letters), cell
        return cls(scope, letters[0] == "C", letters[1] == "E", letters[2] == "D")


def _parse(table: str) -> dict[str, dict[str, Right]]:
    header, *rows = [line.split() for line in table.strip().splitlines()]
    return {
        row[0]: {role: Right.parse(c) for role, c in zip(header, row[1:], strict=True)}
        for row in rows
    }


POLICY = _parse(POLICY_TABLE)
ROLES = ("manager", "sales", "support", "marketing", "readonly")
assert all(tuple(rights) == ROLES for rights in POLICY.values())
OBJECT_TYPES = tuple(POLICY)
EVERYTHING = Right("all", True, True, True)
NOTHING = Right("none", False, False, False)

# Kinds of user beside the five roles above: the administrator role and a superuser (no role)
# may do everything; a user without a role, and an inactive one (whose role is sales), nothing.
VIEWERS = ("admin", "superuser", *ROLES, "no_role", "inactive")


def expected(viewer: str, object_type: str) -> Right:
    if viewer in ("admin", "superuser"):
        return EVERYTHING
    if viewer in ("no_role", "inactive"):
        return NOTHING
    return POLICY[object_type][viewer]


RELATIONS = ("self", "teammate", "report", "reports_report", "other_team")
SEES = {
    Scope.ALL: set(RELATIONS),
    Scope.SUBORDINATES: {"self", "report", "reports_report"},
    Scope.TEAM: {"self", "teammate"},
    Scope.OWN: {"self"},
    Scope.NONE: set(),
}
MODELS = {
    "account": Account,
    "contact": Contact,
    "lead": Lead,
    "opportunity": Opportunity,
    "product": Product,
    "order": Order,
    "activity": Activity,
}
SEARCHABLE = ("account", "contact", "lead", "opportunity")


def test_the_table_is_the_shipped_default():
    from_defaults = {
        object_type: {role: Right(*rights[role]) for role in ROLES}
        for object_type, rights in DEFAULT_RIGHTS.items()
    }
    assert from_defaults == POLICY


def test_the_table_is_what_a_migrated_database_holds(world):
    stored = {
        (r.role.code, r.object_type): Right(r.scope, r.can_create, r.can_edit, r.can_delete)
        for r in RoleRight.objects.select_related("role").filter(object_type__in=OBJECT_TYPES)
    }
    assert stored == {
        (role, object_type): POLICY[object_type][role]
        for object_type in OBJECT_TYPES
        for role in ROLES
    }


# The organisation


@dataclass
class World:
    viewer: int
    owners: dict[str, int]  # relation -> user id
    records: dict[tuple[str, str], int]  # (object type, relation) -> record id
    # An account of the viewer's, for the records that need one when the viewer creates them.
    viewers_account: int

    def relation_of(self, owner_id: int) -> str:
        return {pk: relation for relation, pk in self.owners.items()}[owner_id]


def _build_world() -> World:
    north, south, east = (factories.TeamFactory(name=n) for n in ("North", "South", "East"))
    viewer = factories.user("sales", username="viewer", team=north)
    report = factories.user("sales", username="report", team=south, manager=viewer)
    owners = {
        "self": viewer,
        "teammate": factories.user("sales", username="teammate", team=north),
        "report": report,
        "reports_report": factories.user("sales", username="rr", team=south, manager=report),
        "other_team": factories.user("sales", username="other", team=east),
    }
    builder = factories.UserFactory(username="builder", role=None, team=None, is_superuser=True)
    records: dict[tuple[str, str], int] = {}
    accounts = {}
    for relation, owner in owners.items():
        mine = {"owner": owner.pk}
        # Records the matrix does not touch, which the matrix records hang off.
        accounts[relation] = services.create(
            builder, "account", {"name": f"Base {relation}", **mine}
        )
        part = services.create(
            builder,
            "product",
            {"name": f"Part {relation}", "sku": f"PART-{relation}", "unit_price": 100, **mine},
        )
        base = accounts[relation].pk
        made = {
            "account": services.create(builder, "account", {"name": f"Quokka {relation}", **mine}),
            "contact": services.create(builder, "contact", {"name": f"Quokka {relation}", **mine}),
            "lead": services.create(builder, "lead", {"name": f"Quokka {relation}", **mine}),
            "opportunity": services.create(
                builder,
                "opportunity",
                {"name": f"Quokka {relation}", "account_id": base, "amount": 5000, **mine},
            ),
            "product": services.create(
                builder,
                "product",
                {"name": f"Gadget {relation}", "sku": f"G-{relation}", "unit_price": 900, **mine},
            ),
            "order": services.create_order(
                builder, {"account_id": base, **mine}, [{"product_id": part.pk, "quantity": 2}]
            ),
            "activity": services.create_activity(
                builder, "account", base, {"subject": f"Call {relation}", **mine}
            ),
        }
        for object_type, record in made.items():
            records[object_type, relation] = record.pk
    return World(
        viewer=viewer.pk,
        owners={relation: user.pk for relation, user in owners.items()},
        records=records,
        viewers_account=accounts["self"].pk,
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """The organisation, built once and rolled back when the module is done."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield _build_world()
        transaction.set_rollback(True)


def become(world: World, viewer: str) -> User:
    """The viewer as the given kind of user, fresh from the database."""
    role = {"no_role": None, "superuser": None, "inactive": "sales"}.get(viewer, viewer)
    User.objects.filter(pk=world.viewer).update(
        role=Role.objects.get(code=role) if role else None,
        is_superuser=viewer == "superuser",
        is_active=viewer != "inactive",
    )
    return User.objects.get(pk=world.viewer)


def cases() -> list:
    """Every (viewer, object type) pair."""
    return [
        pytest.param(viewer, object_type, id=f"{viewer}-{object_type}")
        for viewer, object_type in itertools.product(VIEWERS, OBJECT_TYPES)
    ]


def state(model, pk: int) -> dict:
    """Everything a refused action must leave as it was."""
    return {
        "rows": model.objects.count(),
        "record": model.objects.filter(pk=pk).values().first(),
        "lines": list(OrderLine.objects.order_by("id").values()),
        "audit": AuditEvent.objects.count(),
    }


def new_audit_event(before: dict) -> AuditEvent:
    [event] = AuditEvent.objects.order_by("id")[before["audit"] :]
    return event


# Reading


@pytest.mark.parametrize(("viewer", "object_type"), cases())
def test_view_list(world, viewer, object_type):
    user = become(world, viewer)
    sees = SEES[expected(viewer, object_type).scope]
    page = queries.page(user, object_type, size=100)
    listed = {record.pk for record in page.items}
    everything = MODELS[object_type].objects.values_list("pk", "owner_id")
    assert listed == {pk for pk, owner in everything if world.relation_of(owner) in sees}
    assert not page.has_next
    assert {world.records[object_type, r] for r in RELATIONS} & listed == {
        world.records[object_type, r] for r in sees
    }


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize(("viewer", "object_type"), cases())
def test_view_detail(world, viewer, object_type, relation):
    user = become(world, viewer)
    pk = world.records[object_type, relation]
    if relation in SEES[expected(viewer, object_type).scope]:
        assert queries.get(user, object_type, pk).pk == pk
    else:
        with pytest.raises(NotFound):
            queries.get(user, object_type, pk)


@pytest.mark.parametrize("viewer", VIEWERS)
def test_global_search_shows_only_visible_records(world, viewer):
    user = become(world, viewer)
    found = queries.global_search(user, "quokka")
    assert {t: {r.pk for r in records} for t, records in found.items()} == {
        object_type: {world.records[object_type, r] for r in sees}
        for object_type in SEARCHABLE
        if (sees := SEES[expected(viewer, object_type).scope])
    }


# Writing

_serial = itertools.count(1)


def create(user: User, object_type: str, world: World):
    n = next(_serial)
    if object_type == "order":
        return services.create_order(user, {"account_id": world.viewers_account})
    if object_type == "activity":
        return services.create_activity(
            user, "account", world.viewers_account, {"subject": f"New call {n}"}
        )
    data = {
        "opportunity": {"account_id": world.viewers_account},
        "product": {"sku": f"NEW-{n}", "unit_price": Decimal(1000)},
    }.get(object_type, {})
    return services.create(user, object_type, {"name": f"New {n}", **data})


@pytest.mark.parametrize(
    ("viewer", "object_type"),
    cases(),
)
def test_create(world, viewer, object_type):
    user = become(world, viewer)
    model = MODELS[object_type]
    before = state(model, 0)
    if expected(viewer, object_type).create:
        record = create(user, object_type, world)
        assert model.objects.count() == before["rows"] + 1
        assert (record.owner_id, record.version) == (user.pk, 1)
        event = new_audit_event(before)
        assert (event.action, event.object_id, event.actor_id) == ("created", record.pk, user.pk)
    else:
        with pytest.raises(PermissionDenied):
            create(user, object_type, world)
        assert state(model, 0) == before


EDITS = {
    "account": ("name", "Renamed"),
    "contact": ("name", "Renamed"),
    "lead": ("name", "Renamed"),
    "opportunity": ("name", "Renamed"),
    "product": ("name", "Renamed"),
    "order": ("notes", "Call before delivery"),
    "activity": ("subject", "Renamed"),
}


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize(("viewer", "object_type"), cases())
def test_edit(world, viewer, object_type, relation):
    user = become(world, viewer)
    model, pk = MODELS[object_type], world.records[object_type, relation]
    right = expected(viewer, object_type)
    field, value = EDITS[object_type]
    before = state(model, pk)

    def edit():
        return services.update(user, object_type, pk, {field: value}, version=1)

    if relation not in SEES[right.scope]:
        with pytest.raises(NotFound):
            edit()
    elif not right.edit:
        with pytest.raises(PermissionDenied):
            edit()
    else:
        edit()
        after = model.objects.filter(pk=pk).values().get()
        assert (after[field], after["version"]) == (value, 2)
        event = new_audit_event(before)
        assert (event.action, event.object_id, event.actor_id) == ("updated", pk, user.pk)
        assert event.changes == {field: [before["record"][field], value]}
        return
    assert state(model, pk) == before


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize(("viewer", "object_type"), cases())
def test_delete(world, viewer, object_type, relation):
    user = become(world, viewer)
    model, pk = MODELS[object_type], world.records[object_type, relation]
    right = expected(viewer, object_type)
    before = state(model, pk)

    if relation not in SEES[right.scope]:
        with pytest.raises(NotFound):
            services.delete(user, object_type, pk)
    elif not right.delete:
        with pytest.raises(PermissionDenied):
            services.delete(user, object_type, pk)
    else:
        services.delete(user, object_type, pk)
        assert not model.objects.filter(pk=pk).exists()
        assert model.objects.count() == before["rows"] - 1
        event = new_audit_event(before)
        assert (event.action, event.object_id, event.actor_id) == ("deleted", pk, user.pk)
        if object_type == "order":
            assert not OrderLine.objects.filter(order_id=pk).exists()
        return
    assert state(model, pk) == before


def test_order_lines_follow_the_order_rights(world):
    order = world.records["order", "other_team"]
    part = Product.objects.get(sku="PART-other_team").pk
    lines = [{"product_id": part, "quantity": 5}]
    before = state(Order, order)
    with pytest.raises(NotFound):  # sales see their own orders only
        services.set_order_lines(become(world, "sales"), order, lines, version=1)
    with pytest.raises(PermissionDenied):  # support see every order but may not change one
        services.set_order_lines(become(world, "support"), order, lines, version=1)
    assert state(Order, order) == before
    services.set_order_lines(become(world, "admin"), order, lines, version=1)
    assert Order.objects.get(pk=order).total == Decimal(500)


# Rights are data


def right_row(role: str, object_type: str) -> RoleRight:
    return RoleRight.objects.get(role__code=role, object_type=object_type)


def visible_relations(world: World, user: User, object_type: str) -> set[str]:
    return {world.relation_of(r.owner_id) for r in queries.records(user, object_type)}


def test_changing_a_right_row_changes_what_the_role_may_do(world):
    lead = world.records["lead", "self"]
    assert visible_relations(world, become(world, "sales"), "lead") == {"self"}

    RoleRight.objects.filter(pk=right_row("sales", "lead").pk).update(
        scope=Scope.TEAM, can_delete=False
    )
    sales = become(world, "sales")
    assert visible_relations(world, sales, "lead") == {"self", "teammate"}
    with pytest.raises(PermissionDenied):
        services.delete(sales, "lead", lead)

    RoleRight.objects.filter(pk=right_row("sales", "lead").pk).update(scope=Scope.SUBORDINATES)
    assert visible_relations(world, become(world, "sales"), "lead") == {
        "self",
        "report",
        "reports_report",
    }


def test_a_role_without_a_row_for_a_type_has_no_access_to_it(world):
    right_row("readonly", "account").delete()
    readonly = become(world, "readonly")
    assert visible_relations(world, readonly, "account") == set()
    with pytest.raises(NotFound):
        queries.get(readonly, "account", world.records["account", "self"])
    assert visible_relations(world, readonly, "contact") == set(RELATIONS)


def test_granting_a_right_lets_the_role_act(world):
    RoleRight.objects.filter(pk=right_row("readonly", "lead").pk).update(can_edit=True)
    readonly = become(world, "readonly")
    pk = world.records["lead", "other_team"]
    services.update(readonly, "lead", pk, {"name": "Touched"}, version=1)
    assert Lead.objects.get(pk=pk).name == "Touched"
    with pytest.raises(PermissionDenied):  # the right to edit is not the right to create
        services.create(readonly, "lead", {"name": "New"})


def test_ensure_default_rights_keeps_what_an_admin_changed(world):
    RoleRight.objects.filter(pk=right_row("sales", "account").pk).update(
        scope=Scope.OWN, can_create=False, can_edit=False, can_delete=True
    )
    right_row("marketing", "lead").delete()
    Role.objects.filter(code="sales").update(name="영업")
    auditor = Role.objects.create(code="auditor", name="Auditor")
    RoleRight.objects.create(role=auditor, object_type="order", scope=Scope.ALL)
    rows_before = RoleRight.objects.count()

    ensure_default_rights()
    ensure_default_rights()  # and again: nothing more to do

    assert Right(*_values(right_row("sales", "account"))) == Right("own", False, False, True)
    assert Role.objects.get(code="sales").name == "영업"
    # A missing row of a built-in role is put back with its default; nothing else is added.
    assert Right(*_values(right_row("marketing", "lead"))) == POLICY["lead"]["marketing"]
    assert RoleRight.objects.count() == rows_before + 1
    assert list(auditor.rights.values_list("object_type", flat=True)) == ["order"]


def _values(row: RoleRight) -> tuple:
    return row.scope, row.can_create, row.can_edit, row.can_delete
