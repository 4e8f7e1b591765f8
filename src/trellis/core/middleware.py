from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import translation


def user_language(get_response: Callable[[HttpRequest], HttpResponse]):
    """Speak the language a signed-in user chose in their profile.

    The browser's language (LocaleMiddleware) applies until the user picks one; a language
    chosen with the switcher (the language cookie) wins over both for that browser.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        chosen = getattr(user, "language", "") if user and user.is_authenticated else ""
        if chosen and settings.LANGUAGE_COOKIE_NAME not in request.COOKIES:
            translation.activate(chosen)
            request.LANGUAGE_CODE = chosen
        return get_response(request)

    return middleware
