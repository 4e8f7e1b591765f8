"""The entry point of a mail processing process started by the intake listener.

Kept apart from the listener's module: a fresh process imports this before Django is set up,
and the listener's module imports models.
"""

from typing import Any


def main(databases: dict, jobs: Any, done: Any, changed: Any) -> None:
    """Process message ids from ``jobs`` until ``None``, counting each in ``done``."""
    import django
    from django.conf import settings

    # Before anything connects: the database the listener uses (in tests, the test database).
    settings.DATABASES = databases
    django.setup()
    from django.db import close_old_connections, connections

    from .smtpd import process_message

    try:
        while (inbound_id := jobs.get()) is not None:
            close_old_connections()
            process_message(inbound_id)
            with changed:
                done.value += 1
                changed.notify_all()
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the listener stops us.
    finally:
        connections.close_all()
