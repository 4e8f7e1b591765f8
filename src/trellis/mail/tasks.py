"""Background work of the mail app, on the django-tasks queue."""

from django_tasks import task

from . import outbound


@task()
def send_message(outbound_id: int) -> str:
    """Send one queued outgoing message; safe to run twice (the second run finds it sent)."""
    return _send(outbound_id)


@task()
def send_messages(outbound_ids: list[int]) -> dict[str, int]:
    """Send messages queued together (the acknowledgements of a batch of new cases), one after
    the other, each as ``send_message`` would; how many ended in each status."""
    outcome: dict[str, int] = {}
    for outbound_id in outbound_ids:
        status = _send(outbound_id)
        outcome[status] = outcome.get(status, 0) + 1
    return outcome


def _send(outbound_id: int) -> str:
    message = outbound.send(outbound_id)
    return message.status if message is not None else "missing"
