"""What happened, published after the transaction commits.

Services call ``emit``; subscribers (the process engine, webhooks, notifications) register with
``subscribe``. Dispatch waits for the commit, so nobody reacts to a change that was rolled back or
to a half-written record.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]
_handlers: dict[str, list[Handler]] = defaultdict(list)
# What the events emitted now follow from (the automation engine's cascade). Taken at emit
# time, so it reaches subscribers however late the commit dispatches the event.
_cause: ContextVar[Any] = ContextVar("event_cause", default=None)


def subscribe(name: str, handler: Handler) -> None:
    """Call ``handler(name, payload)`` for each event ``name``; ``"*"`` hears every event."""
    if handler not in _handlers[name]:
        _handlers[name].append(handler)


def unsubscribe(name: str, handler: Handler) -> None:
    if handler in _handlers[name]:
        _handlers[name].remove(handler)


def emit(name: str, **payload: Any) -> None:
    cause = _cause.get()
    if cause is not None:
        payload["cause"] = cause
    transaction.on_commit(lambda: _dispatch(name, payload))


@contextmanager
def caused_by(cause: Any) -> Iterator[None]:
    """Events emitted inside the block carry ``cause`` in their payload."""
    token = _cause.set(cause)
    try:
        yield
    finally:
        _cause.reset(token)


def _dispatch(name: str, payload: dict[str, Any]) -> None:
    for handler in [*_handlers[name], *_handlers["*"]]:
        try:
            handler(name, payload)
        except Exception:
            # A failing subscriber must not undo a committed change nor stop the others.
            log.exception("event handler %r failed for %s", handler, name)
