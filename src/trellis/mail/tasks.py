"""Background work of the mail app, on the django-tasks queue."""

from django_tasks import task

from . import outbound


@task()
def send_message(outbound_id: int) -> str:
    """Send one queued outgoing message; safe to run twice (the second run finds it sent)."""
    message = outbound.send(outbound_id)
    return message.status if message is not None else "missing"
