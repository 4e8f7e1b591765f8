"""The object types rules run on, as their domain apps describe them to the engine.

A domain app registers a ``Subject`` from ``AppConfig.ready``: the object type, the fields a
rule may set, the services that create and update one of its records (and optionally many at
once), and optionally names a
rule may read beyond the record's own fields (e.g. an order's customer e-mail), computed by
``derived`` from the record.
"""

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import models

from trellis.core import registry
from trellis.core.models import User

from .. import cel

Create = Callable[[User, Mapping[str, Any]], models.Model]
Update = Callable[[User, int, Mapping[str, Any], int], models.Model]
# Many records at once, ``(pk, values, version)`` each; refused as a whole.
UpdateMany = Callable[[User, list[tuple[int, Mapping[str, Any], int]]], list[models.Model]]


@dataclass(frozen=True)
class Subject:
    object_type: str
    create: Create
    update: Update
    # The fields a "set fields" action may write, as the update service names them.
    writable: tuple[str, ...]
    derived: Callable[[models.Model], dict[str, Any]] | None = None
    derived_names: tuple[str, ...] = field(default=())
    # The relations ``derived`` reads, loaded with the record.
    related: tuple[str, ...] = field(default=())
    # The update service for many records, where the type has one (the time-rule sweep).
    update_many: UpdateMany | None = None

    @property
    def model(self) -> type[models.Model]:
        return registry.get(self.object_type).model

    @property
    def label(self) -> str:
        return registry.get(self.object_type).label

    def readable(self) -> set[str]:
        """The names a condition or an expression may read."""
        return cel.fields_of(self.model) | set(self.derived_names)

    def writable_names(self) -> dict[str, str]:
        """What a rule writes, by the name conditions read it under (``account_id``), to the
        name the service takes (``account``)."""
        names = {}
        for name in self.writable:
            model_field = self.model._meta.get_field(name)
            names[model_field.attname if model_field.is_relation else name] = name
        return names

    def records(self, derived: bool = True) -> models.QuerySet:
        """The type's records, with what ``derived`` reads unless told it is not needed."""
        manager = self.model._default_manager
        return manager.select_related(*self.related) if derived else manager.all()

    def context(self, record: models.Model, derived: bool = True) -> dict[str, Any]:
        values = cel.context(record)
        if derived and self.derived is not None:
            values.update(self.derived(record))
        return values

    def read_by(self, rules: Iterable[Any]) -> bool:
        """Whether any of ``rules`` may read a derived name (in its condition, a template or a
        value): a whole-word look, which errs only towards reading them."""
        if not self.derived_names:
            return False
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.derived_names)) + r")\b")
        return any(pattern.search(json.dumps([r.condition, r.actions])) for r in rules)


_subjects: dict[str, Subject] = {}


def register(subject: Subject) -> None:
    _subjects[subject.object_type] = subject


def get(object_type: str) -> Subject:
    return _subjects[object_type]


def find(object_type: Any) -> Subject | None:
    return _subjects.get(object_type) if isinstance(object_type, str) else None


def all_subjects() -> list[Subject]:
    return list(_subjects.values())
