"""How a customer without a login reaches their case, and what of it they may see.

Two ways in: the signed link from the acknowledgement (tracking number + access key), or the
tracking number with the e-mail address the case came from. Both answer a wrong number and a
wrong key or address the same way, after the same work: a case that exists and one that does not
cost one indexed query and one constant-time comparison each, so neither the answer nor its
timing tells whether a number exists. Both count attempts per client address, and the look-up by
e-mail also per tracking number, so guessing is slow. (Someone flooding one number can lock its
look-up by e-mail for a few minutes; the link from the acknowledgement keeps working.)

After a look-up by e-mail the customer has no key to put in a link. The portal then remembers
the case in the visitor's session (``grant``), for ``GRANT_SECONDS``, and the status page is
reachable without a key from that browser only. A signed link would do the same but would be a
bearer token in the address bar, in the browser history and in anything it is pasted into; the
session cookie is HttpOnly and SameSite, and it is dropped when the browser session ends.
"""

import hmac

from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from trellis.core import clock, ratelimit
from trellis.core.errors import RateLimited
from trellis.core.models import hash_token

from .models import Case, CaseEvent

# (attempts, window in seconds). The look-up by e-mail is what a guesser would use.
LOOKUP_PER_CLIENT = (10, 600)
LOOKUP_PER_NUMBER = (10, 600)
# Opening the status page by its link: keys cannot be guessed, this only stops floods.
VIEW_PER_CLIENT = (300, 600)
GRANT_SECONDS = 3600
_SESSION_KEY = "portal_cases"
# What an unknown number is compared against, so that it costs what a known one costs.
_DUMMY_HASH = hash_token("no such case")


def status_url(case: Case, access_key: str) -> str:
    """The status page's path: ``/help/c/<tracking number>/<key>/``."""
    return reverse("portal:status", args=[case.tracking_number, access_key])


def status_link(case: Case, access_key: str) -> str:
    """The status page's full address, for e-mail."""
    return settings.TRELLIS["BASE_URL"] + status_url(case, access_key)


def portal_link() -> str:
    """The portal's front page (look-up by number and e-mail), for e-mail without the key."""
    return settings.TRELLIS["BASE_URL"] + reverse("portal:index")


def normalize_number(value: str) -> str:
    return (value or "").strip().upper()[:20]


def case_by_key(tracking_number: str, access_key: str, *, client: str = "") -> Case | None:
    """The case if ``access_key`` is its key; ``None`` for a wrong number or a wrong key.

    Raises ``RateLimited`` when ``client`` (the visitor's IP address) opened too many pages.
    """
    _count(f"portal-view:{client}", VIEW_PER_CLIENT)
    case = _case(tracking_number)
    given = hash_token(access_key or "")
    matches = hmac.compare_digest(given, case.access_key_hash if case else _DUMMY_HASH)
    return case if case is not None and matches else None


def case_by_email(tracking_number: str, email: str, *, client: str = "") -> Case | None:
    """The case if ``email`` is the address it came from (any letter case); else ``None``.

    Raises ``RateLimited`` after too many attempts from ``client`` or on this number.
    """
    number = normalize_number(tracking_number)
    _count(f"portal-lookup:{client}", LOOKUP_PER_CLIENT)
    _count(f"portal-lookup-number:{number}", LOOKUP_PER_NUMBER)
    case = _case(number)
    stored = case.requester_email if case is not None else "nobody@invalid"
    matches = hmac.compare_digest(_digest(email), _digest(stored))
    return case if case is not None and matches else None


def _digest(email: str) -> str:
    return hash_token((email or "").strip().lower())


def _case(tracking_number: str) -> Case | None:
    return Case.objects.filter(tracking_number=normalize_number(tracking_number)).first()


def _count(key: str, limit: tuple[int, int]) -> None:
    attempts, window = limit
    if not ratelimit.hit(key, attempts, window):
        raise RateLimited(str(_("Too many attempts. Please wait a few minutes and try again.")))


def count_view(client: str) -> None:
    """Count a page view that needs no look-up (a case granted in the session)."""
    _count(f"portal-view:{client}", VIEW_PER_CLIENT)


# The session grant after a look-up by e-mail.


def grant(request, case: Case) -> None:
    """Let this browser open ``case``'s status page without the key for a while."""
    if not request.session.get(_SESSION_KEY):
        # A new key for the session that now holds a grant: one planted before cannot ride it.
        request.session.cycle_key()
    now = int(clock.now().timestamp())
    live = {k: v for k, v in request.session.get(_SESSION_KEY, {}).items() if v > now}
    live[str(case.pk)] = now + GRANT_SECONDS
    # A session holds a handful of cases at most; the oldest grants go first.
    request.session[_SESSION_KEY] = dict(sorted(live.items(), key=lambda kv: kv[1])[-20:])


def granted_case(request, tracking_number: str) -> Case | None:
    """The case with this number if this browser's session holds a live grant for it."""
    granted = request.session.get(_SESSION_KEY) or {}
    if not granted:
        return None
    case = _case(tracking_number)
    if case is None:
        return None
    expires = granted.get(str(case.pk), 0)
    return case if expires > clock.now().timestamp() else None


# What the customer sees.


def customer_status(case: Case) -> str:
    """The case's status in words the customer understands."""
    return status_words(case.status, assigned=bool(case.owner_id or case.team_id))


def status_words(status: str, *, assigned: bool = True) -> str:
    if status == Case.Status.NEW and not assigned:
        return str(_("Received"))
    return str(
        {
            Case.Status.NEW: _("Assigned to the support team"),
            Case.Status.OPEN: _("Assigned to the support team"),
            Case.Status.WAITING_ON_CUSTOMER: _("Waiting on you"),
            Case.Status.IN_PROGRESS: _("Fix in progress"),
            Case.Status.RESOLVED: _("Resolved"),
            Case.Status.CLOSED: _("Closed"),
        }.get(status, _("Assigned to the support team"))
    )


def agent_first_name(event: CaseEvent) -> str:
    """The only part of an agent a customer sees: the first name, or "Support team"."""
    # Without an account (deleted), ``author`` holds the first name the reply was sent with.
    name = event.actor.first_name if event.actor_id is not None else event.author
    return (name or "").strip() or support_team_name()


def support_team_name() -> str:
    return str(_("Support team"))
