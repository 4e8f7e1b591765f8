from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Role code -> (scope, create, edit, delete) for tasks on a fresh install. Tasks are how work
# moves between teams, so every role sees them; a task about a record is still hidden from
# whoever may not see that record (see ``queries.visible_tasks``).
DEFAULT_RIGHTS = {
    "manager": ("all", True, True, True),
    "sales": ("all", True, True, False),
    "support": ("all", True, True, False),
    "marketing": ("all", True, True, False),
    "readonly": ("all", False, False, False),
}


class ProcessConfig(AppConfig):
    name = "trellis.process"
    label = "process"
    verbose_name = _("Process")

    def ready(self) -> None:
        from trellis.core import records, registry
        from trellis.mail import inbound, routing

        from . import mailreplies, models, reminders, services  # noqa: F401  (sweepers)
        from .approvals import emailed
        from .approvals import services as approvals  # (registers its sweeper)
        from .approvals.models import ApprovalRequest
        from .automations import engine, holds  # noqa: F401  (engine subscribes to events)
        from .pipelines import (
            alerts,  # noqa: F401  (subscribes to events, registers sweepers)
            snapshots,  # noqa: F401  (registers its sweeper)
        )

        registry.register(
            registry.ObjectType(
                key="task",
                model=models.Task,
                default_rights=DEFAULT_RIGHTS,
                detail_url_name="process:task-detail",
            )
        )
        records.register_write_guard(approvals.guard_write, many=approvals.guard_writes)
        records.register_write_guard(holds.guard_write, many=holds.guard_writes)
        services.register_task_guard(holds.guard_task)
        routing.register_reply_handler(models.Task, mailreplies.handle_reply)
        inbound.register_reference_resolver(mailreplies.resolve_reference)
        routing.register_reply_handler(ApprovalRequest, emailed.handle_reply)
        mailreplies.register_refusal_answer(ApprovalRequest, emailed.answer_refused)
        inbound.register_reference_resolver(emailed.resolve_reference)
