"""What definition pages show an administrator: the fields and the stages each kind of record
offers."""

from .. import cel
from ..pipelines.models import Stage
from . import subjects


def by_type() -> list[tuple[str, list[str], list[str]]]:
    """(object type, fields a condition may read, fields naming a user), by object type."""
    return sorted(
        (s.object_type, sorted(cel.fields_of(s.model)), s.user_fields())
        for s in subjects.all_subjects()
    )


def stages_by_pipeline() -> list[tuple[str, str, list[Stage]]]:
    """(object type, pipeline, its stages in use): what a "stage" action may name."""
    pipelines: dict[int, tuple[str, str, list[Stage]]] = {}
    for stage in (
        Stage.objects.filter(is_active=True, pipeline__is_active=True)
        .select_related("pipeline")
        .order_by("pipeline__object_type", "pipeline__name", "order")
    ):
        pipeline = stage.pipeline
        pipelines.setdefault(pipeline.pk, (pipeline.object_type, pipeline.label, []))[2].append(
            stage
        )
    return list(pipelines.values())
