"""Every error the API answers, in one shape: RFC 7807 problem details.

    {"type": "urn:trellis:problem:validation-failed", "title": "Validation failed",
     "status": 422, "detail": "...", "errors": [{"field": "lines.0.quantity", "message": "..."}]}

A 409 for a stale version also carries ``current``, the record as it is now. Domain errors come
from ``core.errors``; request errors from ninja and pydantic; anything unexpected is logged and
answered with a 500 in the same shape.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, URLPattern, re_path, resolve
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as RequestInvalid
from pydantic import Field

from trellis.core.api import json_response
from trellis.core.errors import ServiceError, StaleVersion, ValidationFailed

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/problem+json"

# Titles for errors that do not come with one of their own.
_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Permission denied",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Validation failed",
    429: "Too many requests",
    500: "Server error",
}


class FieldError(Schema):
    field: str | None = Field(
        description="The input the message is about, as a path: `amount`, `lines.0.quantity`, "
        "a query parameter or a path parameter. Null for the request as a whole."
    )
    message: str


class Problem(Schema):
    type: str = Field(description="A stable identifier of the kind of problem.")
    title: str
    status: int
    detail: str
    errors: list[FieldError] = Field(default=[], description="One entry per invalid input.")
    current: dict[str, Any] | None = Field(
        default=None, description="With 409 for a stale version: the record as it is now."
    )


def problem(
    status: int,
    detail: str = "",
    *,
    title: str = "",
    errors: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> HttpResponse:
    title = title or _TITLES.get(status, "Error")
    body = {
        "type": "urn:trellis:problem:" + title.lower().replace(" ", "-"),
        "title": title,
        "status": status,
        "detail": detail or title,
        "errors": errors or [],
        **extra,
    }
    return json_response(body, status=status, content_type=CONTENT_TYPE)


def _service_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    extra = {}
    errors = []
    if isinstance(exc, ValidationFailed):
        errors = [
            {"field": None if name == "__all__" else name, "message": str(message)}
            for name, messages in exc.errors.items()
            for message in messages
        ]
    if isinstance(exc, StaleVersion) and isinstance(exc.current, dict):
        # The endpoint replaced the model instance by its API form (see crm.api).
        extra["current"] = exc.current
    return problem(exc.status, str(exc.detail), title=exc.title, errors=errors, **extra)


def _field_path(location: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "payload", "lines", 0, "quantity")`` -> ``"lines.0.quantity"``."""
    source, *path = location
    if source == "body" and path:
        path = path[1:]  # the name of the view's body parameter, which clients never see
    return ".".join(str(part) for part in path) or None


def _request_invalid(request: HttpRequest, exc: RequestInvalid) -> HttpResponse:
    errors = []
    for error in exc.errors:
        field = _field_path(error.get("loc", ()))
        message = error.get("msg", "Invalid.")
        if field is None and error.get("type") == "missing":
            message = "Send a JSON object in the body."
        errors.append({"field": field, "message": message})
    return problem(422, "Some inputs are not valid.", errors=errors)


def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc, AuthenticationError):
        response = problem(401, "Send an API token (Authorization: Bearer trl_...) or log in.")
        response["WWW-Authenticate"] = 'Bearer realm="trellis"'
        return response
    return problem(exc.status_code, str(exc))


def _not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return problem(404, "No such record.")


def _forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
    return problem(403, "You may not do this.")


def _suspicious(request: HttpRequest, exc: Exception) -> HttpResponse:
    # E.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE: Django answers these with 400 too.
    return problem(400, "The request was refused: " + str(exc))


def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API request failed: %s %s", request.method, request.path)
    return problem(500, "Something went wrong on our side; it has been logged.")


def install(api: NinjaAPI) -> None:
    """Replace ninja's default error answers with problem details."""
    api.add_exception_handler(ServiceError, _service_error)
    api.add_exception_handler(RequestInvalid, _request_invalid)
    api.add_exception_handler(HttpError, _http_error)
    api.add_exception_handler(Http404, _not_found)
    api.add_exception_handler(DjangoPermissionDenied, _forbidden)
    api.add_exception_handler(SuspiciousOperation, _suspicious)
    api.add_exception_handler(Exception, _unexpected)


# Answers that ninja gives outside its exception handlers.


def with_problem_405(pattern: URLPattern) -> URLPattern:
    """Wrap an API view so that a method it does not serve gets a problem, not an empty 405."""
    view = pattern.callback

    def view_with_problem_405(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and response.get("Content-Type") != CONTENT_TYPE:
            allowed = response["Allow"]
            response = problem(405, f"This endpoint answers {allowed}.")
            response["Allow"] = allowed
        return response

    # Keep the marks Django reads off the view, e.g. csrf_exempt.
    view_with_problem_405.__dict__.update(view.__dict__)
    return URLPattern(pattern.pattern, view_with_problem_405, pattern.default_args, pattern.name)


def _unknown_endpoint(request: HttpRequest, path: str) -> HttpResponse:
    detail = "There is no such endpoint."
    if not request.path.endswith("/"):
        try:
            found = resolve(request.path + "/")
        except Resolver404:
            found = None
        if found and found.url_name != "unknown-endpoint":
            detail += f" Did you mean {request.path}/ ?"
    return problem(404, detail)


# Last in the API's URLs: a mistyped path gets a problem instead of Django's HTML page.
unknown_endpoint = re_path(r"^(?P<path>.*)$", _unknown_endpoint, name="unknown-endpoint")
_unknown_endpoint.csrf_exempt = True


def document(schema: dict[str, Any]) -> None:
    """Add the problem answers each operation can give to the OpenAPI schema.

    They follow from the method and the path, so they are declared here once instead of on
    every endpoint.
    """
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    definitions = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(definitions.pop("$defs", {}))
    components["Problem"] = definitions

    def answer(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }

    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if method in ("post", "put", "patch"):
                responses.setdefault(400, answer("The body is not valid JSON."))
            if operation.get("security") != []:
                responses.setdefault(401, answer("No valid token or session."))
                responses.setdefault(
                    403,
                    answer("You may not do this (or, with a session, the CSRF token is missing)."),
                )
            if "{" in path:
                responses.setdefault(404, answer("No such record, or you may not see it."))
            if method in ("put", "patch", "delete"):
                responses.setdefault(
                    409,
                    answer("The record changed since you read it (see `current`), or is in use."),
                )
            responses.setdefault(422, answer("An input is not valid; `errors` names each one."))
