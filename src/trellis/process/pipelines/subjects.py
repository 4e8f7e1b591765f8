"""The object types that run in pipelines, as their domain apps describe them to the engine.

A domain app registers a ``Subject`` from ``AppConfig.ready``: which field holds the record's
stage and when it was entered, and, where the type has them, which fields hold the amount, the
expected close date and the probability. The engine reads and writes only those fields.
"""

from dataclasses import dataclass

from django.db import models

from trellis.core import registry


@dataclass(frozen=True)
class Subject:
    object_type: str
    stage_field: str = "stage"
    entered_field: str = "stage_entered_at"
    amount_field: str = ""
    currency_field: str = ""
    close_date_field: str = ""
    probability_field: str = ""
    # True once the owner set the probability by hand: a move then leaves it alone.
    probability_manual_field: str = ""
    # Set to the kind of the stage entered (open, won, lost) on every move.
    status_field: str = ""

    @property
    def model(self) -> type[models.Model]:
        return registry.get(self.object_type).model

    @property
    def label(self) -> str:
        return registry.get(self.object_type).label


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
