"""The entry point of a mail processing process started by the intake listener.

Kept apart from the listener's module: a fresh process imports this before Django is set up,
and the listener's module imports models.
"""

import queue
from typing import Any


def main(databases: dict, jobs: Any, done: Any, changed: Any) -> None:
    """Process message ids from ``jobs`` until ``None``, counting each in ``done``.

    The ids waiting in the queue are taken together, up to ``inbound.BATCH_SIZE``, and
    processed in one transaction: under load a batch is big and the cost per message falls;
    when mail trickles in, each message goes alone, as soon as it is stored.
    """
    import django
    from django.conf import settings

    # Before anything connects: the database the listener uses (in tests, the test database).
    settings.DATABASES = databases
    django.setup()
    from django.db import close_old_connections, connections

    from .inbound import BATCH_SIZE
    from .smtpd import process_messages

    try:
        stopping = False
        while not stopping and (first := jobs.get()) is not None:
            batch = [first]
            while len(batch) < BATCH_SIZE:
                try:
                    inbound_id = jobs.get_nowait()
                except queue.Empty:
                    break
                if inbound_id is None:
                    stopping = True
                    break
                batch.append(inbound_id)
            close_old_connections()
            process_messages(batch)
            with changed:
                done.value += len(batch)
                changed.notify_all()
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the listener stops us.
    finally:
        connections.close_all()
