from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from . import errors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "core/home.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers: the web process answers. Touches no database on purpose."""
    return JsonResponse({"status": "ok"})


def service_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required; domain errors that are not about a form become HTTP errors: a record
    that is missing or hidden is a 404, a missing right a 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except errors.NotFound as exc:
            raise Http404(exc.detail) from exc
        except errors.PermissionDenied as exc:
            raise PermissionDenied(exc.detail) from exc

    return login_required(wrapper)


def page_number(request: HttpRequest) -> int:
    """The ``page`` asked for; anything that is not a page number means the first page."""
    value = request.GET.get("page", "")
    return int(value) if value.isdigit() and 0 < int(value) < 100_000 else 1
