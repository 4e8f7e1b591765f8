"""The object types approval processes run on, as their domain apps describe them to the engine.

A domain app registers a ``Subject`` from ``AppConfig.ready``: the object type, and the service
function that writes fields of one of its records (``update(actor, pk, data, version)``), which
the "set fields" actions of a process call.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models

from trellis.core import registry
from trellis.core.models import User

Update = Callable[[User, int, Mapping[str, Any], int], models.Model]


@dataclass(frozen=True)
class Subject:
    object_type: str
    update: Update

    @property
    def model(self) -> type[models.Model]:
        return registry.get(self.object_type).model

    @property
    def label(self) -> str:
        return registry.get(self.object_type).label

    def user_fields(self) -> list[str]:
        """The fields of the record that name a user, for "a user field of the record"."""
        return sorted(
            f.name
            for f in self.model._meta.concrete_fields
            if f.is_relation and f.related_model is User
        )

    def field_names(self) -> set[str]:
        return {f.name for f in self.model._meta.concrete_fields}


_subjects: dict[str, Subject] = {}


def register(subject: Subject) -> None:
    _subjects[subject.object_type] = subject


def get(object_type: str) -> Subject:
    return _subjects[object_type]


def for_model(model: type[models.Model]) -> Subject | None:
    try:
        return _subjects.get(registry.for_model(model).key)
    except KeyError:
        return None


def all_subjects() -> list[Subject]:
    return list(_subjects.values())
