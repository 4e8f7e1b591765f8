"""Object types: the record kinds domain apps hand to core for rights, search and timelines.

Core never imports a domain app; each app registers its models here from ``AppConfig.ready``.
"""

import functools
from dataclasses import dataclass, field

from django.db import models
from django.urls import NoReverseMatch, get_script_prefix, reverse


@dataclass(frozen=True)
class ObjectType:
    key: str
    model: type[models.Model]
    # Role code -> (scope, create, edit, delete): what a fresh install grants.
    default_rights: dict[str, tuple[str, bool, bool, bool]] = field(default_factory=dict)
    # Shown in the global search when the model keeps a ``search_text`` column.
    searchable: bool = False
    # The URL name of the record's page in the web UI, taking ``pk``.
    detail_url_name: str = ""

    @property
    def label(self) -> str:
        return str(self.model._meta.verbose_name)

    @property
    def label_plural(self) -> str:
        return str(self.model._meta.verbose_name_plural)


_types: dict[str, ObjectType] = {}
_by_model: dict[type[models.Model], ObjectType] = {}


def register(object_type: ObjectType) -> None:
    _types[object_type.key] = object_type
    _by_model[object_type.model] = object_type


def get(key: str) -> ObjectType:
    return _types[key]


def for_model(model: type[models.Model]) -> ObjectType:
    return _by_model[model]


def all_types() -> list[ObjectType]:
    return list(_types.values())


def record_path(object_type: str, pk: int) -> str:
    """The record's page in the web UI, or "" where the type has none."""
    try:
        url_name = get(object_type).detail_url_name
    except KeyError:
        return ""
    return detail_path(url_name, pk)


def detail_path(url_name: str, pk: int) -> str:
    """The path of the page ``url_name`` (which takes one id) for ``pk``, or "" if there is no
    such page."""
    template = _path_template(url_name, get_script_prefix()) if url_name else ""
    return template.replace(_PK_MARK, str(int(pk))) if template else ""


# A number no record has, reversed once per page and replaced by the id: reversing a URL for
# each of thousands of records (a sweep telling people) costs more than the rest of the work.
_PK_MARK = "987654321987654321"


@functools.cache
def _path_template(url_name: str, prefix: str) -> str:
    try:
        return reverse(url_name, args=[int(_PK_MARK)])
    except NoReverseMatch:
        return ""
