"""Factories for test data. Records are made through the services, as users would make them."""

import itertools
from decimal import Decimal

import factory

from trellis.core.models import Role, Team, User
from trellis.crm import services

_counter = itertools.count(1)


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Team {n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    team = factory.SubFactory(TeamFactory)
    password = factory.django.Password("pw-for-tests")

    @factory.lazy_attribute
    def role(self):
        return Role.objects.get(code=Role.SALES)


def user(role: str = Role.SALES, **fields) -> User:
    return UserFactory(role=Role.objects.get(code=role), **fields)


def account(actor: User, **data):
    return services.create(actor, "account", {"name": f"Account {next(_counter)}", **data})


def contact(actor: User, **data):
    return services.create(actor, "contact", {"name": f"Contact {next(_counter)}", **data})


def lead(actor: User, **data):
    return services.create(actor, "lead", {"name": f"Lead {next(_counter)}", **data})


def opportunity(actor: User, **data):
    if "account" not in data and "account_id" not in data:
        data["account_id"] = account(actor).pk
    values = {"name": f"Deal {next(_counter)}", "amount": Decimal(1_000_000), **data}
    return services.create(actor, "opportunity", values)


def product(actor: User, **data):
    n = next(_counter)
    values = {"name": f"Product {n}", "sku": f"SKU-{n}", "unit_price": Decimal(50_000), **data}
    return services.create(actor, "product", values)


def order(actor: User, lines=(), **data):
    if "account_id" not in data:
        data["account_id"] = account(actor).pk
    return services.create_order(actor, data, lines)


def activity(actor: User, record, **data):
    related_type = type(record)._meta.model_name
    values = {"subject": f"Call {next(_counter)}", "kind": "call", **data}
    return services.create_activity(actor, related_type, record.pk, values)


def deal_pipeline(admin: User, code: str, alert_kinds: list[str]):
    """A default deal pipeline of the test's own (open, won, lost) with these alert rules: a
    test with real commits cannot count on the pipelines the migrations made."""
    from trellis.process.pipelines import alerts
    from trellis.process.pipelines import services as pipelines
    from trellis.process.pipelines.models import Pipeline

    Pipeline.objects.filter(object_type="opportunity").update(is_default=False)
    pipeline = pipelines.save_pipeline(
        admin,
        {
            "object_type": "opportunity",
            "code": code,
            "name": code.title(),
            "is_default": True,
            "stages": [
                {"code": "open", "name": "Open"},
                {"code": "won", "name": "Won", "kind": "won"},
                {"code": "lost", "name": "Lost", "kind": "lost"},
            ],
        },
    )
    alerts.save_rules(admin, pipeline.pk, [{"kind": kind} for kind in alert_kinds])
    return pipeline
