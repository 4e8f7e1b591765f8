"""What definition pages show an administrator: the fields each kind of record offers."""

from .. import cel
from . import subjects


def by_type() -> list[tuple[str, list[str], list[str]]]:
    """(object type, fields a condition may read, fields naming a user), by object type."""
    return sorted(
        (s.object_type, sorted(cel.fields_of(s.model)), s.user_fields())
        for s in subjects.all_subjects()
    )
