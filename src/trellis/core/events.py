"""What happened, published after the transaction commits.

Services call ``emit``; subscribers (the process engine, webhooks, notifications) register with
``subscribe``. Dispatch waits for the commit, so nobody reacts to a change that was rolled back or
to a half-written record.
"""

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]
_handlers: dict[str, list[Handler]] = defaultdict(list)


def subscribe(name: str, handler: Handler) -> None:
    """Call ``handler(name, payload)`` for each event ``name``; ``"*"`` hears every event."""
    if handler not in _handlers[name]:
        _handlers[name].append(handler)


def unsubscribe(name: str, handler: Handler) -> None:
    if handler in _handlers[name]:
        _handlers[name].remove(handler)


def emit(name: str, **payload: Any) -> None:
    transaction.on_commit(lambda: _dispatch(name, payload))


def _dispatch(name: str, payload: dict[str, Any]) -> None:
    for handler in [*_handlers[name], *_handlers["*"]]:
        try:
            handler(name, payload)
        except Exception:
            # A failing subscriber must not undo a committed change nor stop the others.
            log.exception("event handler %r failed for %s", handler, name)
