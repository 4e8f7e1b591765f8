"""What happened, published after the transaction commits.

Services call ``emit``; subscribers (the process engine, webhooks, notifications) register with
``subscribe``. Dispatch waits for the commit, so nobody reacts to a change that was rolled back or
to a half-written record. Work that commits many like events at once (the time-rule sweep)
dispatches them together, so that a subscriber can do once per batch what it does per event.
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
BatchHandler = Callable[[list[tuple[str, dict[str, Any]]]], None]
_handlers: dict[str, list[Handler]] = defaultdict(list)
# A handler's form that takes all its events of a batch in one call.
_batch_forms: dict[Handler, BatchHandler] = {}
# The events committed inside ``dispatched_together``, waiting for its end.
_held: ContextVar[list[tuple[str, dict[str, Any]]] | None] = ContextVar("events_held", default=None)
# What the events emitted now follow from (the automation engine's cascade). Taken at emit
# time, so it reaches subscribers however late the commit dispatches the event.
_cause: ContextVar[Any] = ContextVar("event_cause", default=None)


def subscribe(name: str, handler: Handler, *, many: BatchHandler | None = None) -> None:
    """Call ``handler(name, payload)`` for each event ``name``; ``"*"`` hears every event.
    Events dispatched together go to ``many([(name, payload), ...])`` instead, if given."""
    if handler not in _handlers[name]:
        _handlers[name].append(handler)
    if many is not None:
        _batch_forms[handler] = many


def unsubscribe(name: str, handler: Handler) -> None:
    if handler in _handlers[name]:
        _handlers[name].remove(handler)
    if not any(handler in handlers for handlers in _handlers.values()):
        _batch_forms.pop(handler, None)


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


@contextmanager
def dispatched_together() -> Iterator[None]:
    """Events of the transactions that commit inside the block are dispatched when it ends,
    handler by handler rather than event by event: a handler with a batch form gets all its
    events in one call. Events stay in the order they were committed for each handler."""
    held: list[tuple[str, dict[str, Any]]] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        _dispatch_all(held)


def _dispatch(name: str, payload: dict[str, Any]) -> None:
    held = _held.get()
    if held is not None:
        held.append((name, payload))
        return
    for handler in [*_handlers[name], *_handlers["*"]]:
        _call(handler, name, payload)


def _dispatch_all(held: list[tuple[str, dict[str, Any]]]) -> None:
    heard_by: dict[Handler, list[tuple[str, dict[str, Any]]]] = {}
    for name, payload in held:
        for handler in [*_handlers[name], *_handlers["*"]]:
            heard_by.setdefault(handler, []).append((name, payload))
    for handler, items in heard_by.items():
        many = _batch_forms.get(handler)
        if many is None:
            for name, payload in items:
                _call(handler, name, payload)
            continue
        try:
            many(items)
        except Exception:
            log.exception("event handler %r failed for a batch of %d", many, len(items))


def _call(handler: Handler, name: str, payload: dict[str, Any]) -> None:
    try:
        handler(name, payload)
    except Exception:
        # A failing subscriber must not undo a committed change nor stop the others.
        log.exception("event handler %r failed for %s", handler, name)
