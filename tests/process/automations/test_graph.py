"""Loops and races are refused when a rule is saved, naming the rules and fields."""

import pytest

from trellis.core.errors import ValidationFailed
from trellis.process.automations import services
from trellis.process.automations.models import Rule

from .conftest import rule


def changed(field, writes, **fields):
    return {
        "trigger": "field_changed",
        "trigger_params": {"field": field},
        "actions": [{"kind": "set_fields", "values": {writes: f"{writes}"}}],
        **fields,
    }


def test_a_cycle_of_three_rules_is_refused_with_the_cycle_named(people):
    admin = people["admin"]
    rule(admin, name="Amount sets probability", **changed("amount", "probability"))
    rule(admin, name="Probability sets close date", **changed("probability", "expected_close_date"))
    with pytest.raises(ValidationFailed) as refused:
        rule(admin, name="Close date sets amount", **changed("expected_close_date", "amount"))
    message = refused.value.errors["actions"][0]
    for name in (
        "Amount sets probability",
        "Probability sets close date",
        "Close date sets amount",
    ):
        assert name in message
    assert "amount" in message and "probability" in message and "expected_close_date" in message
    assert Rule.objects.count() == 2


def test_a_cycle_smuggled_in_by_editing_a_rule_is_refused(people):
    admin = people["admin"]
    rule(admin, name="A", **changed("amount", "probability"))
    b = rule(admin, name="B", **changed("probability", "description"))
    with pytest.raises(ValidationFailed) as refused:
        services.save_rule(
            admin,
            {"actions": [{"kind": "set_fields", "values": {"amount": "amount + 1.0"}}]},
            pk=b.pk,
            version=b.version,
        )
    assert "“A”" in refused.value.errors["actions"][0]
    b.refresh_from_db()
    assert b.actions[0]["values"] == {"description": "description"}


def test_enabling_a_disabled_rule_that_closes_a_cycle_is_refused(people):
    admin = people["admin"]
    rule(admin, name="A", **changed("amount", "probability"))
    b = rule(admin, name="B", is_enabled=False, **changed("probability", "amount"))
    with pytest.raises(ValidationFailed):
        services.set_rule_enabled(admin, b.pk, True, b.version)
    b.refresh_from_db()
    assert not b.is_enabled


def test_a_condition_field_of_a_rule_fired_by_another_field_makes_no_loop(people):
    # Fired only when the amount changes: writing the description cannot fire it again.
    rule(
        people["admin"],
        name="Describe big amounts",
        condition="description == ''",
        **changed("amount", "description"),
    )


def test_an_update_rule_reading_its_own_write_is_a_loop(people):
    with pytest.raises(ValidationFailed) as refused:
        rule(
            people["admin"],
            name="Bump",
            mode="every",
            actions=[{"kind": "set_fields", "values": {"probability": "probability"}}],
        )
    assert "Bump" in refused.value.errors["actions"][0]


def test_a_rule_creating_records_of_its_own_type_on_creation_is_a_loop(people):
    with pytest.raises(ValidationFailed):
        rule(
            people["admin"],
            name="Clone on create",
            trigger="created",
            actions=[
                {
                    "kind": "create_related",
                    "object_type": "opportunity",
                    "values": {"name": "name", "account": "account_id"},
                }
            ],
        )


def test_two_rules_writing_one_field_on_one_trigger_race_unless_ordered(people):
    admin = people["admin"]
    first = rule(admin, name="First", **changed("amount", "description"))
    with pytest.raises(ValidationFailed) as refused:
        rule(admin, name="Second", **changed("amount", "description"))
    message = refused.value.errors["actions"][0]
    assert "First" in message and "Second" in message and "description" in message
    services.save_rule(admin, {"position": 1}, pk=first.pk, version=first.version)
    second = rule(admin, name="Second", position=2, **changed("amount", "description"))
    assert second.pk


def test_two_rules_that_loop_only_together_saved_at_once_one_is_refused(transactional_db):
    import threading

    from trellis.core.models import Role, User

    from ... import factories
    from ...concurrency import OwnConnections

    admin = factories.user(Role.ADMIN, username="root")
    start = threading.Barrier(2, timeout=30)

    def save(name, field, writes):
        def run():
            actor = User.objects.get(pk=admin.pk)
            start.wait()
            return rule(actor, name=name, **changed(field, writes))

        return run

    outcomes = OwnConnections().run(
        save("A", "amount", "probability"), save("B", "probability", "amount")
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Rule", "ValidationFailed"]
    assert Rule.objects.count() == 1
