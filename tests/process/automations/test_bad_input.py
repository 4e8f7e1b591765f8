"""A rule or hold that cannot work is refused when saved, with the position of the fault,
and nothing is written."""

import pytest

from trellis.core.errors import ValidationFailed
from trellis.core.models import Role
from trellis.process.automations import services
from trellis.process.automations.models import Hold, Rule

from ... import factories
from .conftest import rule


def refused(actor, **fields):
    with pytest.raises(ValidationFailed) as caught:
        rule(actor, **fields)
    assert not Rule.objects.exists()
    return caught.value.errors


def test_a_condition_that_does_not_compile_gives_its_line_and_column(people):
    errors = refused(people["admin"], condition="amount >\n  && probability")
    assert "line 2, column 3" in errors["condition"][0]


def test_a_condition_of_the_wrong_type(people):
    errors = refused(people["admin"], condition="amount + 'x' > 1.0")
    assert "mixes types" in errors["condition"][0]
    errors = refused(people["admin"], condition="amount * 2.0")
    assert "true or false" in errors["condition"][0]


def test_a_value_of_the_wrong_type_for_its_field(people):
    errors = refused(
        people["admin"],
        actions=[{"kind": "set_fields", "values": {"probability": "'high'"}}],
    )
    assert "a number" in errors["actions.0.values.probability"][0]


def test_an_action_on_a_field_that_does_not_exist_or_cannot_be_set(people):
    errors = refused(
        people["admin"],
        actions=[{"kind": "set_fields", "values": {"colour": "'red'", "stage_id": "1"}}],
    )
    assert "cannot set" in errors["actions.0.values.colour"][0]
    assert "cannot set" in errors["actions.0.values.stage_id"][0]


def test_a_user_who_cannot_edit_the_type_cannot_define_rules_for_it(people):
    errors = refused(people["sales"])
    assert "may not define" in errors["object_type"][0]


def test_a_manager_without_rights_on_the_target_type_cannot_create_there(people, team):
    reader = factories.user(Role.MANAGER, username="reader", team=team)
    errors = refused(
        reader,
        trigger="field_changed",
        trigger_params={"field": "amount"},
        actions=[
            {"kind": "create_related", "object_type": "contact", "values": {"name": "name"}},
            {"kind": "create_related", "object_type": "product", "values": {"name": "name"}},
        ],
    )
    assert "actions.1.object_type" in errors


def test_an_email_template_with_an_unknown_variable_gives_its_position(people):
    errors = refused(
        people["admin"],
        actions=[
            {
                "kind": "send_email",
                "to": "owner",
                "subject": "About {{ name }}",
                "body": "Hello,\nthe deal {{ nmae }} closes {{ expected_close_date }}.",
            }
        ],
    )
    assert errors["actions.0.body"] == ["Unknown variable {{ nmae }} (line 2, column 10)."]


def test_a_webhook_address_that_is_not_http(people):
    for url in ("file:///etc/passwd", "ftp://example.com/x", "javascript:alert(1)", "http://"):
        errors = refused(people["admin"], actions=[{"kind": "webhook", "url": url}])
        assert errors["actions.0.url"] == ["Give an http or https address."]


def test_unknown_trigger_fields_and_actions(people):
    errors = refused(
        people["admin"],
        trigger="time",
        trigger_params={"field": "name", "offset": -1, "unit": "weeks", "colour": 1},
        actions=[{"kind": "launch"}],
    )
    assert set(errors) >= {
        "trigger_params.field",
        "trigger_params.offset",
        "trigger_params.unit",
        "trigger_params.colour",
        "actions.0.kind",
    }


def test_a_hold_with_a_bad_release_condition_or_blocks(people):
    with pytest.raises(ValidationFailed) as caught:
        services.save_hold(
            people["admin"],
            {
                "object_type": "order",
                "code": "x y",
                "name": "X",
                "release_condition": "notes ==",
                "blocks": [{"task_type": "nope"}, {"field": "colour"}, "status"],
            },
        )
    assert set(caught.value.errors) == {
        "code",
        "release_condition",
        "blocks.0",
        "blocks.1",
        "blocks.2",
    }
    assert not Hold.objects.exists()
