"""The Django admin: configuration is edited there; records, tokens and the audit log are not."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse

from trellis.core import services as core_services
from trellis.core.models import ApiToken, AuditEvent, Role, RoleRight, Scope, Team, User
from trellis.crm import services
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

CRM_MODELS = (Account, Contact, Lead, Opportunity, Product, Order, Activity)
OUR_MODELS = (User, Team, Role, ApiToken, AuditEvent, *CRM_MODELS)


@pytest.fixture
def superuser(db):
    return factories.UserFactory(
        username="root", role=None, team=None, is_staff=True, is_superuser=True
    )


@pytest.fixture
def site(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def records(sales, admin):
    """One record of each CRM type, an API token and the audit events they made."""
    account = factories.account(sales, name="Hanbit")
    product = factories.product(admin, name="Sensor")
    order = factories.order(
        sales, account_id=account.pk, lines=[{"product_id": product.pk, "quantity": 2}]
    )
    token, raw = core_services.create_api_token(sales, "import script")
    return {
        Account: account,
        Contact: factories.contact(sales, accounts=[account.pk]),
        Lead: factories.lead(sales),
        Opportunity: factories.opportunity(sales, account_id=account.pk),
        Product: product,
        Order: order,
        Activity: factories.activity(sales, account),
        ApiToken: token,
        "raw token": raw,
    }


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def instance_of(model, records, sales):
    if model in records:
        return records[model]
    return {
        User: sales,
        Team: sales.team,
        Role: sales.role,
        AuditEvent: AuditEvent.objects.first(),
    }[model]


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda m: m._meta.label)
def test_every_changelist_loads(site, records, model):
    assert site.get(admin_url(model, "changelist")).status_code == 200


@pytest.mark.parametrize("model", OUR_MODELS, ids=lambda m: m._meta.label)
def test_every_change_page_loads(site, records, sales, model):
    record = instance_of(model, records, sales)
    response = site.get(admin_url(model, "change", record.pk))
    assert response.status_code == 200
    assert str(record) in response.text


@pytest.mark.parametrize("model", (User, Team, Role), ids=lambda m: m._meta.label)
def test_configuration_can_be_added(site, model):
    assert site.get(admin_url(model, "add")).status_code == 200


def test_the_user_page_has_the_organisation_fields(site, sales):
    response = site.get(admin_url(User, "change", sales.pk))
    for field in ("team", "role", "manager", "language"):
        assert f'name="{field}"' in response.text


# Roles and their rights


def inline_data(role: Role) -> dict[str, str]:
    """The role's change form as the browser sends it back, rights rows included."""
    rows = list(role.rights.order_by("pk")) if role.pk else []
    missing = [
        t
        for t in ("account", "contact", "lead", "opportunity", "product", "order", "activity")
        if t not in {r.object_type for r in rows}
    ]
    data = {
        "name": role.name,
        "rights-TOTAL_FORMS": str(len(rows) + len(missing)),
        "rights-INITIAL_FORMS": str(len(rows)),
        "rights-MIN_NUM_FORMS": "0",
        "rights-MAX_NUM_FORMS": "1000",
    }
    forms = [(r.pk, r.object_type, r.scope, r.can_create, r.can_edit, r.can_delete) for r in rows]
    forms += [("", object_type, "none", False, False, False) for object_type in missing]
    for index, (pk, object_type, scope, create, edit, delete) in enumerate(forms):
        prefix = f"rights-{index}-"
        data |= {
            f"{prefix}id": str(pk),
            f"{prefix}role": str(role.pk) if role.pk else "",
            f"{prefix}object_type": object_type,
            f"{prefix}scope": scope,
        }
        for name, value in (("can_create", create), ("can_edit", edit), ("can_delete", delete)):
            if value:
                data[f"{prefix}{name}"] = "on"
    return data


def index_of(data: dict[str, str], object_type: str) -> str:
    [key] = [k for k, v in data.items() if k.endswith("-object_type") and v == object_type]
    return key.removesuffix("-object_type")


def test_a_rights_row_is_edited_inline(site):
    sales = Role.objects.get(code=Role.SALES)
    data = inline_data(sales)
    row = index_of(data, "lead")
    data[f"{row}-scope"] = Scope.TEAM
    data.pop(f"{row}-can_delete")
    response = site.post(admin_url(Role, "change", sales.pk), data)
    assert response.status_code == 302, response.context["errors"] if response.context else ""
    lead = RoleRight.objects.get(role=sales, object_type="lead")
    assert (lead.scope, lead.can_create, lead.can_edit, lead.can_delete) == (
        "team",
        True,
        True,
        False,
    )
    # The other rows are as they were.
    assert RoleRight.objects.get(role=sales, object_type="opportunity").scope == "own"


def test_a_new_role_gets_only_the_rows_that_were_filled_in(site):
    data = inline_data(Role(name="Auditors"))
    data["code"] = "auditor"
    row = index_of(data, "order")
    data[f"{row}-scope"] = Scope.ALL
    response = site.post(admin_url(Role, "add"), data)
    assert response.status_code == 302
    auditor = Role.objects.get(code="auditor")
    # The untouched rows offered for the other types are not saved: no row means no access.
    assert list(auditor.rights.values_list("object_type", "scope")) == [("order", "all")]


def test_an_unknown_object_type_is_refused(site):
    sales = Role.objects.get(code=Role.SALES)
    data = inline_data(sales)
    data[f"{index_of(data, 'lead')}-object_type"] = "spaceship"
    response = site.post(admin_url(Role, "change", sales.pk), data)
    assert response.status_code == 200
    assert RoleRight.objects.filter(role=sales, object_type="lead").exists()
    assert not RoleRight.objects.filter(object_type="spaceship").exists()


def test_the_admin_role_and_built_in_roles_are_protected(site):
    administrator = Role.objects.get(code=Role.ADMIN)
    page = site.get(admin_url(Role, "change", administrator.pk)).text
    assert "rights-TOTAL_FORMS" not in page
    assert "may see and do everything" in page
    sales = Role.objects.get(code=Role.SALES)
    assert site.get(admin_url(Role, "delete", sales.pk)).status_code == 403
    assert site.post(admin_url(Role, "delete", sales.pk), {"post": "yes"}).status_code == 403
    assert Role.objects.filter(code=Role.SALES).exists()


# Users


def user_data(user: User, **changes) -> dict[str, str]:
    data = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "language": user.language,
        "team": user.team_id or "",
        "role": user.role_id or "",
        "manager": user.manager_id or "",
        "is_active": "on",
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }
    return {k: str(v) for k, v in (data | changes).items()}


def test_a_users_team_role_manager_and_language_are_saved(site, sales, outsider, manager):
    support = Role.objects.get(code=Role.SUPPORT)
    data = user_data(
        sales, team=outsider.team_id, role=support.pk, manager=outsider.pk, language="ko"
    )
    response = site.post(admin_url(User, "change", sales.pk), data)
    assert response.status_code == 302
    sales.refresh_from_db()
    assert (sales.team, sales.role, sales.manager, sales.language) == (
        outsider.team,
        support,
        outsider,
        "ko",
    )


def test_a_reporting_loop_is_refused(site, sales, manager):
    # The sales user reports to the manager; the manager cannot report to them.
    response = site.post(
        admin_url(User, "change", manager.pk), user_data(manager, manager=sales.pk)
    )
    assert response.status_code == 200
    assert "reports to" in response.text
    response = site.post(admin_url(User, "change", sales.pk), user_data(sales, manager=sales.pk))
    assert "cannot be their own manager" in response.text
    manager.refresh_from_db()
    sales.refresh_from_db()
    assert (manager.manager_id, sales.manager_id) == (None, manager.pk)


# CRM records: read-only


@pytest.mark.parametrize("model", CRM_MODELS, ids=lambda m: m._meta.label)
def test_crm_records_cannot_be_changed_in_the_admin(site, records, model):
    record = records[model]
    before = list(model.objects.values())
    lines = list(OrderLine.objects.values())
    audit = AuditEvent.objects.count()

    page = site.get(admin_url(model, "change", record.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    assert site.post(admin_url(model, "change", record.pk), {"name": "Hacked"}).status_code == 403
    assert site.get(admin_url(model, "add")).status_code == 403
    assert site.post(admin_url(model, "add"), {"name": "New"}).status_code == 403
    assert site.post(admin_url(model, "delete", record.pk), {"post": "yes"}).status_code == 403
    changelist = site.get(admin_url(model, "changelist")).text
    assert "delete_selected" not in changelist
    response = site.post(
        admin_url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"},
    )
    assert response.status_code == 200  # no such action here: the list is shown again

    assert list(model.objects.values()) == before
    assert list(OrderLine.objects.values()) == lines
    assert AuditEvent.objects.count() == audit


def test_order_lines_are_shown_with_the_order(site, records):
    order = records[Order]
    page = site.get(admin_url(Order, "change", order.pk)).text
    assert "Sensor" in page
    assert "lines-TOTAL_FORMS" in page
    assert 'name="lines-0-quantity"' not in page  # shown, not editable


def test_staff_see_in_the_admin_only_the_records_they_may_see(client, records, outsider):
    theirs = factories.account(outsider, name="Busan Trading")
    User.objects.filter(pk=outsider.pk).update(is_staff=True)
    outsider.user_permissions.add(Permission.objects.get(codename="view_account"))
    client.force_login(outsider)
    listing = client.get(admin_url(Account, "changelist")).text
    assert "Busan Trading" in listing
    assert "Hanbit" not in listing
    assert client.get(admin_url(Account, "change", records[Account].pk)).status_code == 302
    assert client.get(admin_url(Account, "change", theirs.pk)).status_code == 200


# API tokens and the audit log


def test_a_tokens_hash_is_never_shown(site, records):
    token = records[ApiToken]
    for url in (admin_url(ApiToken, "changelist"), admin_url(ApiToken, "change", token.pk)):
        page = site.get(url).text
        assert "import script" in page
        assert token.key_hash not in page
        assert records["raw token"] not in page
    assert site.get(admin_url(ApiToken, "add")).status_code == 403


def test_tokens_are_revoked_by_an_action(site, records, sales):
    token = records[ApiToken]
    other, _raw = core_services.create_api_token(sales, "second")
    response = site.post(
        admin_url(ApiToken, "changelist"),
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert "1 token revoked." in response.text
    token.refresh_from_db()
    other.refresh_from_db()
    assert token.revoked_at is not None
    assert other.revoked_at is None
    assert core_services.authenticate_token(records["raw token"]) is None


def test_the_audit_log_is_searched_by_record_id_and_by_name(site, records):
    account, lead = records[Account], records[Lead]
    services.update(account.owner, "account", account.pk, {"name": "Hanbit Soft"}, version=1)
    url = admin_url(AuditEvent, "changelist")

    by_name = site.get(url, {"q": "Hanbit Soft"}).context["cl"].result_list
    assert [(e.action, e.object_id) for e in by_name] == [("updated", account.pk)]

    by_id = site.get(url, {"q": str(lead.pk)}).context["cl"].result_list
    assert {e.object_id for e in by_id} == {lead.pk}

    content_type = AuditEvent.objects.filter(object_id=account.pk, action="updated").get()
    one_record = (
        site.get(
            url, {"content_type__id__exact": content_type.content_type_id, "object_id": account.pk}
        )
        .context["cl"]
        .result_list
    )
    assert [e.action for e in one_record] == ["updated", "created"]


def test_the_audit_log_cannot_be_changed(site, records):
    event = AuditEvent.objects.first()
    before = AuditEvent.objects.count()
    page = site.get(admin_url(AuditEvent, "change", event.pk)).text
    assert event.summary in page
    assert 'name="_save"' not in page
    assert site.post(admin_url(AuditEvent, "change", event.pk), {"summary": "x"}).status_code == 403
    assert site.post(admin_url(AuditEvent, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.count() == before
    assert AuditEvent.objects.get(pk=event.pk).summary == event.summary


def test_a_records_page_links_to_its_history_and_to_the_web_ui(site, records):
    account = records[Account]
    page = site.get(admin_url(Account, "change", account.pk)).text
    assert f"object_id={account.pk}" in page
    # and to its page in the web UI, where it is edited
    assert f'href="{reverse("crm:account-detail", kwargs={"pk": account.pk})}"' in page
