"""What each rule reads and writes, and the cycles and races that follow.

A rule *reads* what can fire it: the field its trigger watches, the fields of its condition
when any update may fire it, and events named as nodes of their own ("(created)",
"(approval:code)", "(hold:code)"). It *writes* the fields its actions set, the records it
creates ("(created)" on their type), approvals it starts and holds it releases. Rule A leads to
rule B when A writes something B reads; a cycle of such edges could run forever, and is
refused. Only what can fire a rule counts as read: a condition field of a rule fired by
another field's change cannot fire it, so it makes no edge (see docs/decisions/0010).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from .. import cel
from . import subjects

CREATED = "(created)"
ANY_FIELD = "*"
STAGE_FIELD = "stage_id"

Node = tuple[str, str]  # (object type, field or event)


@dataclass(frozen=True)
class RuleShape:
    """What the graph needs of a rule, saved or not."""

    id: int | None
    name: str
    object_type: str
    trigger: str
    params: dict[str, Any]
    condition: str
    mode: str
    actions: list[dict[str, Any]]
    position: int | None

    @classmethod
    def of(cls, rule: Any) -> "RuleShape":
        return cls(
            rule.pk,
            rule.name,
            rule.object_type,
            rule.trigger,
            rule.trigger_params,
            rule.condition,
            rule.mode,
            rule.actions,
            rule.position,
        )


class GraphError(ValueError):
    def __init__(self, message: str, rules: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.rules = rules


def reads(rule: RuleShape) -> set[Node]:
    t = rule.object_type
    kind = rule.trigger
    if kind == "created":
        return {(t, CREATED)}
    if kind == "updated":
        if rule.mode == "every" or not rule.condition:
            return {(t, ANY_FIELD)}
        return {(t, name) for name in _condition_fields(rule.condition)}
    if kind in ("field_changed", "time"):
        return {(t, rule.params["field"])}
    if kind in ("stage_entered", "stage_left"):
        return {(t, STAGE_FIELD)}
    if kind in ("approval_approved", "approval_rejected"):
        return {(t, f"(approval:{rule.params.get('process') or ANY_FIELD})")}
    if kind == "hold_released":
        return {(t, f"(hold:{rule.params['hold']})")}
    return set()  # a task completed: done by a person, never by a rule


def writes(rule: RuleShape, release_fields: dict[str, set[str]] | None = None) -> set[Node]:
    """``release_fields`` maps each hold code of the type to the fields its release condition
    reads: setting one of those may release the hold."""
    t = rule.object_type
    written: set[Node] = set()
    for action in rule.actions:
        kind = action["kind"]
        if kind == "set_fields":
            written |= {(t, name) for name in action["values"]}
        elif kind == "assign":
            written.add((t, "owner_id"))
        elif kind == "create_related":
            written.add((action["object_type"], CREATED))
        elif kind == "start_approval":
            written.add((t, f"(approval:{action['process']})"))
        elif kind == "release":
            written.add((t, f"(hold:{action['hold']})"))
    for code, fields in (release_fields or {}).items():
        if any((t, name) in written for name in fields):
            written.add((t, f"(hold:{code})"))
    return written


def _condition_fields(source: str) -> set[str]:
    try:
        return set(cel.compile_condition(source).references()["variables"])
    except cel.ConditionError:
        return set()


def _reaches(written: set[Node], read: set[Node]) -> set[Node]:
    """The nodes of ``read`` that ``written`` touches."""
    hit = written & read
    for t, name in read:
        if name == ANY_FIELD:
            hit |= {(wt, w) for wt, w in written if wt == t and not w.startswith("(")}
        elif name == "(approval:*)":
            hit |= {(wt, w) for wt, w in written if wt == t and w.startswith("(approval:")}
    return hit


def find_cycle(
    rules: Iterable[RuleShape], release_fields: dict[str, dict[str, set[str]]]
) -> list[tuple[RuleShape, set[Node]]] | None:
    """A cycle as [(rule, what it writes that the next rule reads), ...], or None."""
    rules = list(rules)
    out = {id(r): writes(r, release_fields.get(r.object_type)) for r in rules}
    into = {id(r): reads(r) for r in rules}
    edges = {
        id(a): [(b, hit) for b in rules if (hit := _reaches(out[id(a)], into[id(b)]))]
        for a in rules
    }
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    path: list[tuple[RuleShape, set[Node]]] = []

    def visit(rule: RuleShape) -> list[tuple[RuleShape, set[Node]]] | None:
        state[id(rule)] = 1
        for nxt, hit in edges[id(rule)]:
            path.append((rule, hit))
            if state.get(id(nxt)) == 1:
                start = next(i for i, (r, _h) in enumerate(path) if r is nxt)
                return path[start:]
            if id(nxt) not in state and (found := visit(nxt)):
                return found
            path.pop()
        state[id(rule)] = 2
        return None

    for rule in rules:
        if id(rule) not in state and (found := visit(rule)):
            return found
    return None


def trigger_key(rule: RuleShape) -> tuple[Any, ...]:
    """Rules with the same key fire on the same events."""
    p = rule.params
    return (
        rule.object_type,
        rule.trigger,
        p.get("field"),
        p.get("stage"),
        p.get("process"),
        p.get("hold"),
        p.get("task_type"),
    )


def field_writes(rule: RuleShape) -> set[str]:
    return {name for t, name in writes(rule) if t == rule.object_type and not name.startswith("(")}


def find_race(rule: RuleShape, others: Iterable[RuleShape]) -> tuple[RuleShape, set[str]] | None:
    """Another rule on the same trigger writing a field ``rule`` writes, where the two are not
    both given their place in the order."""
    mine = field_writes(rule)
    for other in others:
        if trigger_key(other) != trigger_key(rule):
            continue
        shared = mine & field_writes(other)
        ordered = (
            rule.position is not None
            and other.position is not None
            and rule.position != other.position
        )
        if shared and not ordered:
            return other, shared
    return None


def check(rule: RuleShape, others: list[RuleShape]) -> None:
    """Refuse ``rule`` (enabled, about to be saved) if, with the other enabled rules, it closes
    a cycle or races another rule."""
    release_fields = hold_release_fields()
    cycle = find_cycle([rule, *others], release_fields)
    if cycle is not None:
        steps = "; ".join(
            _("“%(rule)s” writes %(fields)s, which “%(next)s” reads")
            % {
                "rule": r.name,
                "fields": ", ".join(sorted(_show(n) for n in hit)),
                "next": cycle[(i + 1) % len(cycle)][0].name,
            }
            for i, (r, hit) in enumerate(cycle)
        )
        raise GraphError(
            _("These rules would fire each other in a loop: %(steps)s.") % {"steps": steps},
            [r.name for r, _hit in cycle],
        )
    race = find_race(rule, others)
    if race is not None:
        other, shared = race
        raise GraphError(
            _(
                "“%(rule)s” and “%(other)s” both write %(fields)s on the same trigger: "
                "give both an order to say which runs first."
            )
            % {"rule": rule.name, "other": other.name, "fields": ", ".join(sorted(shared))},
            [rule.name, other.name],
        )


def _show(node: Node) -> str:
    object_type, name = node
    subject = subjects.find(object_type)
    label = subject.label if subject else object_type
    return f"{label}.{name}"


def hold_release_fields() -> dict[str, dict[str, set[str]]]:
    from .models import Hold

    found: dict[str, dict[str, set[str]]] = {}
    for hold in Hold.objects.exclude(release_condition="").only(
        "object_type", "code", "release_condition"
    ):
        found.setdefault(hold.object_type, {})[hold.code] = _condition_fields(
            hold.release_condition
        )
    return found
