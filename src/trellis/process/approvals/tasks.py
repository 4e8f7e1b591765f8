"""Background work of approvals, on the django-tasks queue."""

from django_tasks import task

from . import services


@task()
def tell_approvers(step_run_id: int) -> int:
    """Write the notices and e-mails of a step's approvers not told yet; safe to run twice."""
    return services.tell_approvers(step_run_id)
