"""Running test code in several threads at once, each with its own database connection."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections


class OwnConnections:
    """Runs functions in threads, each with a database connection of its own (Django opens one
    per thread), against the same test database file or server."""

    def _in_thread(self, function: Callable[[], Any], outcome: list, index: int) -> None:
        try:
            outcome[index] = function()
        except Exception as exc:
            outcome[index] = exc
        finally:
            connections[DEFAULT_DB_ALIAS].close()

    def run(self, *functions: Callable[[], Any]) -> list[Any]:
        """Each function's result, or the exception it raised."""
        outcome: list[Any] = [None] * len(functions)
        threads = [
            threading.Thread(target=self._in_thread, args=(function, outcome, index))
            for index, function in enumerate(functions)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        return outcome
