from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Role code -> (scope, create, edit, delete) for each CRM object type on a fresh install.
# Admins change them per role in the admin; these are only the starting point.
_READ_ALL = ("all", False, False, False)
DEFAULT_RIGHTS = {
    "account": {
        "manager": ("subordinates", True, True, True),
        "sales": ("team", True, True, False),
        "support": ("all", False, True, False),
        "marketing": _READ_ALL,
        "readonly": _READ_ALL,
    },
    "contact": {
        "manager": ("subordinates", True, True, True),
        "sales": ("team", True, True, False),
        "support": ("all", True, True, False),
        "marketing": ("all", True, True, False),
        "readonly": _READ_ALL,
    },
    "lead": {
        "manager": ("subordinates", True, True, True),
        "sales": ("own", True, True, True),
        "support": ("none", False, False, False),
        "marketing": ("all", True, True, True),
        "readonly": _READ_ALL,
    },
    "opportunity": {
        "manager": ("subordinates", True, True, True),
        "sales": ("own", True, True, True),
        "support": ("none", False, False, False),
        "marketing": _READ_ALL,
        "readonly": _READ_ALL,
    },
    "product": {
        "manager": ("all", True, True, False),
        "sales": _READ_ALL,
        "support": _READ_ALL,
        "marketing": _READ_ALL,
        "readonly": _READ_ALL,
    },
    "order": {
        "manager": ("subordinates", True, True, True),
        "sales": ("own", True, True, False),
        "support": _READ_ALL,
        "marketing": ("none", False, False, False),
        "readonly": _READ_ALL,
    },
    "activity": {
        "manager": ("subordinates", True, True, True),
        "sales": ("team", True, True, True),
        "support": ("all", True, True, False),
        "marketing": ("all", True, True, False),
        "readonly": _READ_ALL,
    },
}


def _customer(record) -> dict:
    account = record.account
    return {
        "customer_name": account.name if account else "",
        "customer_email": account.email if account else "",
    }


class CrmConfig(AppConfig):
    name = "trellis.crm"
    label = "crm"
    verbose_name = _("CRM")

    def ready(self) -> None:
        from trellis.core import registry
        from trellis.process.approvals import subjects as approvals
        from trellis.process.automations import subjects as automations
        from trellis.process.pipelines import subjects

        from . import models, services

        searchable = {"account", "contact", "lead", "opportunity"}
        for key, model in [
            ("account", models.Account),
            ("contact", models.Contact),
            ("lead", models.Lead),
            ("opportunity", models.Opportunity),
            ("product", models.Product),
            ("order", models.Order),
            ("activity", models.Activity),
        ]:
            registry.register(
                registry.ObjectType(
                    key=key,
                    model=model,
                    default_rights=DEFAULT_RIGHTS[key],
                    searchable=key in searchable,
                    detail_url_name=f"crm:{key}-detail",
                )
            )
        subjects.register(
            subjects.Subject(
                object_type="opportunity",
                amount_field="amount",
                currency_field="currency",
                close_date_field="expected_close_date",
                probability_field="probability",
                probability_manual_field="probability_manual",
                status_field="status",
            )
        )
        subjects.register(subjects.Subject(object_type="lead"))
        subjects.register(subjects.Subject(object_type="account"))
        for key in ("opportunity", "order", "lead", "account", "contact"):
            automations.register(
                automations.Subject(
                    object_type=key,
                    create=(
                        services.create_order
                        if key == "order"
                        else lambda actor, data, key=key: services.create(actor, key, data)
                    ),
                    update=lambda actor, pk, data, version, key=key: services.update(
                        actor, key, pk, data, version
                    ),
                    update_many=lambda actor, items, key=key: services.update_many(
                        actor, key, items
                    ),
                    writable=services.SPECS[key].fields,
                    # Rules about orders and deals often write to the customer.
                    derived=_customer if key in ("order", "opportunity") else None,
                    derived_names=("customer_name", "customer_email")
                    if key in ("order", "opportunity")
                    else (),
                    related=("account",) if key in ("order", "opportunity") else (),
                )
            )
        for key in ("opportunity", "order", "lead", "account"):
            approvals.register(
                approvals.Subject(
                    object_type=key,
                    update=lambda actor, pk, data, version, key=key: services.update(
                        actor, key, pk, data, version
                    ),
                )
            )
