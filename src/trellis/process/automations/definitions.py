"""Checking a rule or a hold before it is saved: every fault reported under its path
(``actions.1.values.amount``) with the line and column where CEL or a template says one."""

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.db import models
from django.utils.translation import gettext as _

from trellis.core.models import User
from trellis.core.visibility import right

from .. import cel
from ..approvals.models import ApprovalProcess
from ..models import Stage, TaskType
from . import subjects
from .models import Hold, Rule

Errors = dict[str, list[str]]

MAX_ACTIONS = 20
MAX_OFFSET = 3650
UNITS = ("days", "business_days", "hours")
ACTION_KINDS = (
    "set_fields",
    "create_task",
    "send_email",
    "start_approval",
    "hold",
    "release",
    "assign",
    "create_related",
    "webhook",
)
ASSIGN_METHODS = ("round_robin", "least_open", "expression")
# Names a template may use besides the record's own.
TEMPLATE_NAMES = {"record", "record_url", "rule"}
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")


def may_define(actor: User, object_type: str) -> bool:
    """Admins, and people who may edit every record of the type (managers, by default)."""
    scope, _create, edit, _delete = right(actor, object_type)
    return edit and scope == "all"


def checked_rule(actor: User, data: Mapping[str, Any], errors: Errors) -> dict[str, Any]:
    """The rule's values from ``data`` as the model keeps them; faults go to ``errors``."""
    unknown = set(data) - {
        "object_type",
        "name",
        "is_enabled",
        "position",
        "trigger",
        "trigger_params",
        "condition",
        "mode",
        "actions",
        "throttle_per_hour",
    }
    for key in sorted(unknown):
        errors[key] = [_("Unknown field.")]
    subject = subjects.find(data.get("object_type"))
    if subject is None:
        errors["object_type"] = [
            _("Choose one of: %(choices)s.")
            % {"choices": ", ".join(s.object_type for s in subjects.all_subjects())}
        ]
        return {}
    if not may_define(actor, subject.object_type):
        errors["object_type"] = [_("You may not define rules for this kind of record.")]
    values: dict[str, Any] = {"object_type": subject.object_type}
    values["name"] = _text(data.get("name"), "name", 100, errors, required=True)
    values["is_enabled"] = _bool(data.get("is_enabled", True), "is_enabled", errors)
    values["position"] = _number(
        data.get("position"), "position", errors, low=0, high=10**6, optional=True
    )
    values["throttle_per_hour"] = _number(
        data.get("throttle_per_hour", 10), "throttle_per_hour", errors, low=1, high=1000
    )
    mode = data.get("mode") or Rule.Mode.NEWLY
    if mode not in Rule.Mode.values:
        errors["mode"] = [_choices(Rule.Mode.values)]
    values["mode"] = mode
    readable = subject.readable()
    values["condition"] = _text(data.get("condition"), "condition", 2000, errors)
    if values["condition"]:
        check_expression(values["condition"], subject, bool, "condition", errors)
    trigger = data.get("trigger")
    if trigger not in Rule.Trigger.values:
        errors["trigger"] = [_choices(Rule.Trigger.values)]
        values["trigger"], values["trigger_params"] = "", {}
    else:
        values["trigger"] = trigger
        values["trigger_params"] = _checked_params(
            trigger, data.get("trigger_params") or {}, subject, readable, errors
        )
    values["actions"] = _checked_actions(actor, data.get("actions"), subject, errors)
    return values


def _checked_params(
    trigger: str, params: Any, subject: subjects.Subject, readable: set[str], errors: Errors
) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        errors["trigger_params"] = [_("Give the trigger's details as an object.")]
        return {}
    allowed = {
        "field_changed": {"field", "from", "to"},
        "stage_entered": {"stage"},
        "stage_left": {"stage"},
        "approval_approved": {"process"},
        "approval_rejected": {"process"},
        "task_completed": {"task_type"},
        "hold_released": {"hold"},
        "time": {"field", "offset", "unit", "direction"},
    }.get(trigger, set())
    for key in sorted(set(params) - allowed):
        errors[f"trigger_params.{key}"] = [_("Unknown field.")]
    found = {k: v for k, v in params.items() if k in allowed and v not in (None, "")}
    key = "trigger_params."
    if trigger in ("field_changed", "time"):
        name = found.get("field")
        fields = (
            date_fields(subject) if trigger == "time" else readable - set(subject.derived_names)
        )
        if name not in fields:
            errors[key + "field"] = [
                _("Choose one of: %(choices)s.") % {"choices": ", ".join(sorted(fields))}
            ]
    if trigger == "time":
        found["offset"] = _number(found.get("offset", 0), key + "offset", errors, 0, MAX_OFFSET)
        found.setdefault("unit", "days")
        found.setdefault("direction", "after")
        if found["unit"] not in UNITS:
            errors[key + "unit"] = [_choices(UNITS)]
        if found["direction"] not in ("before", "after"):
            errors[key + "direction"] = [_choices(("before", "after"))]
    for name in ("from", "to"):
        if name in found and not isinstance(found[name], str | int | float | bool):
            errors[key + name] = [_("Give a single value.")]
    if "stage" in found:
        stage = _int(found["stage"])
        if not Stage.objects.filter(pk=stage, pipeline__object_type=subject.object_type).exists():
            errors[key + "stage"] = [_("No such stage for this kind of record.")]
        found["stage"] = stage
    if (
        "process" in found
        and not ApprovalProcess.objects.filter(
            code=found["process"], object_type=subject.object_type
        ).exists()
    ):
        errors[key + "process"] = [_("No such approval process for this kind of record.")]
    if "task_type" in found and not TaskType.objects.filter(code=found["task_type"]).exists():
        errors[key + "task_type"] = [_("No such task type.")]
    if trigger == "hold_released":
        _check_hold(found.get("hold"), subject, key + "hold", errors)
    return found


def date_fields(subject: subjects.Subject) -> set[str]:
    return {
        f.name
        for f in subject.model._meta.concrete_fields
        if isinstance(f, models.DateField | models.DateTimeField)
    }


def _checked_actions(
    actor: User, value: Any, subject: subjects.Subject, errors: Errors
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        errors["actions"] = [_("Give a list of actions.")]
        return []
    if len(value) > MAX_ACTIONS:
        errors["actions"] = [_("At most %(count)d actions.") % {"count": MAX_ACTIONS}]
        return []
    return [
        _checked_action(actor, item, subject, f"actions.{i}.", errors)
        for i, item in enumerate(value)
    ]


_ACTION_FIELDS = {
    "set_fields": {"values"},
    "create_task": {"title", "task_type", "assignee", "due_in_hours"},
    "send_email": {"to", "subject", "body"},
    "start_approval": {"process"},
    "hold": {"hold"},
    "release": {"hold"},
    "assign": {"method", "team", "expression"},
    "create_related": {"object_type", "values"},
    "webhook": {"url"},
}


def _checked_action(
    actor: User, item: Any, subject: subjects.Subject, key: str, errors: Errors
) -> dict[str, Any]:
    if not isinstance(item, Mapping) or item.get("kind") not in ACTION_KINDS:
        errors[key + "kind"] = [_choices(ACTION_KINDS)]
        return {"kind": ""}
    kind = item["kind"]
    for name in sorted(set(item) - _ACTION_FIELDS[kind] - {"kind"}):
        errors[key + name] = [_("Unknown field.")]
    action: dict[str, Any] = {"kind": kind}
    if kind == "set_fields":
        action["values"] = _checked_values(item.get("values"), subject, subject, key, errors)
    elif kind == "create_related":
        target = subjects.find(item.get("object_type"))
        if target is None:
            errors[key + "object_type"] = [_("No rules can create this kind of record.")]
            return action
        if not right(actor, target.object_type)[1]:
            errors[key + "object_type"] = [_("You may not create this kind of record.")]
        action["object_type"] = target.object_type
        action["values"] = _checked_values(item.get("values"), target, subject, key, errors)
    elif kind == "create_task":
        action["title"] = _text(item.get("title"), key + "title", 300, errors, required=True)
        check_template(action["title"], subject, key + "title", errors)
        code = item.get("task_type") or ""
        if code and not TaskType.objects.filter(code=code, is_active=True).exists():
            errors[key + "task_type"] = [_("No such task type.")]
        action["task_type"] = code
        action["assignee"] = _assignee(item.get("assignee") or "owner", key, errors)
        if item.get("due_in_hours") not in (None, ""):
            action["due_in_hours"] = _number(
                item["due_in_hours"], key + "due_in_hours", errors, 1, 10_000
            )
    elif kind == "send_email":
        to = _text(item.get("to"), key + "to", 500, errors) or "owner"
        if to != "owner":
            check_expression(to, subject, str, key + "to", errors)
        action["to"] = to
        action["subject"] = _text(item.get("subject"), key + "subject", 200, errors, required=True)
        action["body"] = _text(item.get("body"), key + "body", 20_000, errors)
        check_template(action["subject"], subject, key + "subject", errors)
        check_template(action["body"], subject, key + "body", errors)
    elif kind == "start_approval":
        code = item.get("process")
        if not ApprovalProcess.objects.filter(
            code=code, object_type=subject.object_type, is_active=True
        ).exists():
            errors[key + "process"] = [_("No such approval process for this kind of record.")]
        action["process"] = code
    elif kind in ("hold", "release"):
        action["hold"] = item.get("hold")
        _check_hold(action["hold"], subject, key + "hold", errors)
    elif kind == "assign":
        method = item.get("method")
        if method not in ASSIGN_METHODS:
            errors[key + "method"] = [_choices(ASSIGN_METHODS)]
        action["method"] = method
        if method == "expression":
            action["expression"] = _text(item.get("expression"), key + "expression", 2000, errors)
            check_expression(action["expression"], subject, int, key + "expression", errors)
        else:
            action["team"] = _team(item.get("team"), key + "team", errors)
        if "owner" not in subject.writable:
            errors[key + "kind"] = [_("This kind of record has no owner to assign.")]
    else:
        url = _text(item.get("url"), key + "url", 500, errors, required=True)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors[key + "url"] = [_("Give an http or https address.")]
        action["url"] = url
    return action


def _checked_values(
    value: Any, target: subjects.Subject, source: subjects.Subject, key: str, errors: Errors
) -> dict[str, str]:
    """Field → CEL expression over the ``source`` record, for fields of ``target``."""
    if not isinstance(value, Mapping) or not value:
        errors[key + "values"] = [_("Give the fields to set and their values.")]
        return {}
    writable = target.writable_names()
    by_service_name = {v: k for k, v in writable.items()}
    checked = {}
    for name, expression in value.items():
        attname = name if name in writable else by_service_name.get(name)
        path = f"{key}values.{name}"
        if attname is None:
            errors[path] = [
                _("Rules cannot set this field. Fields they can set: %(fields)s.")
                % {"fields": ", ".join(sorted(writable))}
            ]
            continue
        if not isinstance(expression, str) or not expression.strip():
            errors[path] = [_("Give a CEL expression, e.g. 'text' or amount * 0.9.")]
            continue
        model_field = target.model._meta.get_field(writable[attname])
        check_expression(expression, source, _cel_type(model_field), path, errors)
        checked[attname] = expression
    return checked


def _cel_type(model_field: models.Field) -> type:
    if isinstance(model_field, models.BooleanField):
        return bool
    if model_field.is_relation or isinstance(model_field, models.IntegerField):
        return int
    if isinstance(model_field, models.DecimalField | models.FloatField):
        return float
    return str


def sample_context(subject: subjects.Subject) -> dict[str, Any]:
    """A record of the type with a typed value in every field, for trying expressions."""
    values: dict[str, Any] = {}
    for model_field in subject.model._meta.concrete_fields:
        name = model_field.attname if model_field.is_relation else model_field.name
        values[name] = {bool: False, int: 1, float: 1.0}.get(_cel_type(model_field), "")
        if isinstance(model_field, models.DateField | models.DateTimeField):
            values[name] = "2026-01-01"
    values.update(dict.fromkeys(subject.derived_names, ""))
    return values


def check_expression(
    source: str, subject: subjects.Subject, wanted: type, key: str, errors: Errors
) -> None:
    """Refuse an expression that does not compile, reads an unknown name, or does not give a
    ``wanted`` value (numbers may stand for each other)."""
    try:
        cel.check(source, subject.readable())
        result = cel.compile_condition(source).execute(sample_context(subject))
    except cel.ConditionError as exc:
        errors[key] = [str(exc)]
        return
    except TypeError as exc:
        errors[key] = [
            _("The expression mixes types: %(detail)s") % {"detail": str(exc).split(". ")[0]}
        ]
        return
    except Exception:
        return
    numbers = (int, float)
    fits = (
        isinstance(result, bool)
        if wanted is bool
        else not isinstance(result, bool)
        and (isinstance(result, numbers) if wanted in numbers else isinstance(result, wanted))
    )
    if result is not None and not fits:
        expected = {bool: _("true or false"), int: _("a number"), float: _("a number")}.get(
            wanted, _("text")
        )
        errors[key] = [_("The expression must give %(type)s.") % {"type": expected}]


def check_template(text: str, subject: subjects.Subject, key: str, errors: Errors) -> None:
    """Refuse a ``{{ name }}`` that names nothing the record has, with its line and column."""
    names = subject.readable() | TEMPLATE_NAMES
    for found in _PLACEHOLDER.finditer(text):
        match = _NAME.fullmatch(found.group(1))
        if match is None or match.group(1) not in names:
            line = text.count("\n", 0, found.start()) + 1
            column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
            errors.setdefault(key, []).append(
                _("Unknown variable %(name)s (line %(line)d, column %(column)d).")
                % {"name": found.group(0), "line": line, "column": column}
            )
    if "{{" in _PLACEHOLDER.sub("", text):
        errors.setdefault(key, []).append(_("A {{ is not closed with }}."))


def render(text: str, values: Mapping[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda m: _shown(values.get(m.group(1).strip())), text)


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def checked_hold(data: Mapping[str, Any], errors: Errors) -> dict[str, Any]:
    for key in sorted(
        set(data) - {"object_type", "code", "name", "name_ko", "release_condition", "blocks"}
    ):
        errors[key] = [_("Unknown field.")]
    subject = subjects.find(data.get("object_type"))
    if subject is None:
        errors["object_type"] = [
            _("Choose one of: %(choices)s.")
            % {"choices": ", ".join(s.object_type for s in subjects.all_subjects())}
        ]
        return {}
    values: dict[str, Any] = {"object_type": subject.object_type}
    code = _text(data.get("code"), "code", 40, errors, required=True)
    if code and not re.fullmatch(r"[-a-zA-Z0-9_]+", code):
        errors["code"] = [_("Use letters, digits, hyphens and underscores.")]
    values["code"] = code
    values["name"] = _text(data.get("name"), "name", 100, errors, required=True)
    values["name_ko"] = _text(data.get("name_ko"), "name_ko", 100, errors)
    values["release_condition"] = _text(
        data.get("release_condition"), "release_condition", 2000, errors
    )
    if values["release_condition"]:
        check_expression(values["release_condition"], subject, bool, "release_condition", errors)
    blocks = data.get("blocks") or []
    if not isinstance(blocks, list):
        errors["blocks"] = [_("Give a list of what the hold blocks.")]
        blocks = []
    checked = []
    fields = {f.name for f in subject.model._meta.concrete_fields}
    for i, block in enumerate(blocks):
        path = f"blocks.{i}"
        if isinstance(block, Mapping) and set(block) == {"task_type"}:
            if not TaskType.objects.filter(code=block["task_type"]).exists():
                errors[path] = [_("No such task type.")]
            checked.append({"task_type": block["task_type"]})
        elif isinstance(block, Mapping) and set(block) in ({"field"}, {"field", "value"}):
            if block["field"] not in fields:
                errors[path] = [_("No such field.")]
            checked.append(dict(block))
        else:
            errors[path] = [
                _('Give {"task_type": code}, {"field": name} or {"field": name, "value": v}.')
            ]
    values["blocks"] = checked
    return values


def _check_hold(code: Any, subject: subjects.Subject, key: str, errors: Errors) -> None:
    if not Hold.objects.filter(code=code, object_type=subject.object_type).exists():
        errors[key] = [_("No such hold for this kind of record.")]


def _assignee(value: Any, key: str, errors: Errors) -> str:
    """ "owner", "user:<id>" or "team:<id>"."""
    if value == "owner":
        return value
    kind, _sep, pk = str(value).partition(":")
    if kind == "user" and User.objects.filter(pk=_int(pk), is_active=True).exists():
        return f"user:{_int(pk)}"
    if kind == "team" and _team(pk, key + "assignee", errors):
        return f"team:{_int(pk)}"
    errors[key + "assignee"] = [_("Give owner, user:<id> or team:<id>.")]
    return "owner"


def _team(value: Any, key: str, errors: Errors) -> int | None:
    from trellis.core.models import Team

    pk = _int(value)
    if not Team.objects.filter(pk=pk).exists():
        errors[key] = [_("No such team.")]
        return None
    return pk


def _text(value: Any, key: str, limit: int, errors: Errors, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        errors[key] = [_("Give text.")]
        return ""
    value = value.strip()
    if required and not value:
        errors[key] = [_("This field is required.")]
    elif len(value) > limit:
        errors[key] = [_("At most %(count)d characters.") % {"count": limit}]
    return value


def _number(
    value: Any, key: str, errors: Errors, low: int, high: int, *, optional: bool = False
) -> int | None:
    if optional and value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[key] = [_("Give a whole number.")]
        return None
    if (isinstance(value, float) and value != number) or not low <= number <= high:
        errors[key] = [
            _("Give a whole number from %(low)d to %(high)d.") % {"low": low, "high": high}
        ]
        return None
    return number


def _bool(value: Any, key: str, errors: Errors) -> bool:
    if not isinstance(value, bool):
        errors[key] = [_("Give true or false.")]
        return True
    return value


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _choices(values: Any) -> str:
    return _("Choose one of: %(choices)s.") % {"choices": ", ".join(values)}
