"""Who is calling: a script with an API token, or a browser with a session.

Tried in that order; neither -> 401. A token request carries no cookie, so it needs no CSRF
token; a session request that writes does (the ``X-CSRFToken`` header), as anywhere in Django.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from trellis.core.models import User
from trellis.core.services import authenticate_token


class BearerToken(HttpBearer):
    """``Authorization: Bearer trl_...``; one query finds the token, its user and role."""

    def authenticate(self, request: HttpRequest, token: str) -> User | None:
        return authenticate_token(token)


class BrowserSession(APIKeyCookie):
    """The Django session of a logged-in browser; writes need the CSRF token."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        # ninja checks CSRF here, before it knows whether anyone is logged in, which answers an
        # anonymous write with 403 instead of 401. ``authenticate`` checks it once there is a
        # user. (``self.csrf`` stays true: it also tells the docs page to send the token.)
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not key or not request.user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise HttpError(
                403,
                "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header.",
            )
        return request.user


authentication = [BearerToken(), BrowserSession()]
