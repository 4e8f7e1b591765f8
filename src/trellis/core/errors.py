"""Domain errors raised by services and mapped to HTTP answers in one place (``api.errors``)."""

from typing import Any


class ServiceError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class ValidationFailed(ServiceError):
    """Input that breaks a rule. ``errors`` maps a field name (or ``__all__``) to messages."""

    status = 422
    title = "Validation failed"

    def __init__(self, errors: dict[str, list[str]], detail: str = "") -> None:
        super().__init__(detail or "Some fields are not valid.")
        self.errors = errors


class NotFound(ServiceError):
    """Missing, or not visible to the actor: the two must look the same."""

    status = 404
    title = "Not found"


class PermissionDenied(ServiceError):
    """The actor sees the record (or the list) but may not do this to it."""

    status = 403
    title = "Permission denied"


class StaleVersion(ServiceError):
    """The record changed since the client read it; ``current`` is what it is now."""

    status = 409
    title = "Conflict"

    def __init__(self, current: Any, detail: str = "") -> None:
        super().__init__(
            detail or "This record was changed by someone else. Review the current values."
        )
        self.current = current


class Conflict(ServiceError):
    """The action no longer fits the record's state, e.g. a case someone else just claimed."""

    status = 409
    title = "Conflict"


class RateLimited(ServiceError):
    """Too many attempts from one source in a short time; try again later."""

    status = 429
    title = "Too many requests"
