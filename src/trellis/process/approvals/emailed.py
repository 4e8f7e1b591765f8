"""Deciding an approval from its e-mail: the signed Approve / Reject links, and replies.

The e-mail that asks an approver for a decision (``ask``) says what to decide and carries two
signed links and the request's reply address (``mail.routing``) as Reply-To.

A link (``django.core.signing``, salted) names one assignment: the approver, the step run and
the decision. Opening it (``open_link``) never decides; ``decide`` does, once, through the
same services as the inbox, for the approver the link was made for, whoever is logged in: the
signature is the credential. A link that has been used, or whose step was settled otherwise,
is refused with who settled it and when (``AlreadyDecided``), and changes nothing. A link
stops working after the step's due time plus ``LINK_GRACE_HOURS`` (without a due time,
``LINK_DAYS`` after it was sent), both under ``TRELLIS["APPROVALS"]``.

A reply (``handle_reply``, registered with the mail layer for requests) decides for its
sender when its first line is a decision word (``APPROVE_WORDS``, ``REJECT_WORDS``; any
letter case, trailing punctuation ignored) and the sender is an approver of the current step;
the rest of the reply, without the quoted message, is the comment. Anything else from an
approver is a comment on the request. A decision the request does not take (no comment on a
rejection, already decided) is answered at once and changes nothing. A reply from someone who
is not an approver, or to a request that is finished, is refused like a reply to a task: the
mail layer quarantines it, and the task replies' sweep answers it once (``refusal``,
``answer_refused``).
"""

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from trellis.core import clock, ratelimit
from trellis.core.errors import Conflict, NotFound, RateLimited, ServiceError, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, User
from trellis.core.money import format_money
from trellis.mail import outbound, parsing
from trellis.mail.models import InboundMessage, OutboundMessage
from trellis.mail.parsing import ParsedMessage

from .. import notify
from ..external import LinkGone
from . import services
from .models import ApprovalAssignment, ApprovalEvent, ApprovalRequest, ApprovalStepRun

Pending = ApprovalAssignment.Status.PENDING
DECIDED = (ApprovalAssignment.Status.APPROVED, ApprovalAssignment.Status.REJECTED)
Kind = ApprovalEvent.Kind

APPROVE_WORDS = frozenset({"approve", "approved", "승인", "승인합니다"})
REJECT_WORDS = frozenset({"reject", "rejected", "반려", "반려합니다"})
_TRAILING = " \t.!?~,;:。！？…·"
_SALT = "trellis.approvals.decision-link"
_DECISIONS = ("approve", "reject")
# Uses per client address in a window: signatures cannot be guessed, this only stops floods.
PER_CLIENT = (300, 600)
# Answers to one sender in an hour at most; a forged sender must not turn us into a spammer.
_ANSWERS_PER_SENDER = (5, 3600)
# The events that settle a step or a request, for "already decided by X at T".
_SETTLING = (
    Kind.STEP_APPROVED,
    Kind.STEP_REJECTED,
    Kind.APPROVED,
    Kind.REJECTED,
    Kind.RECALLED,
    Kind.CANCELLED,
    Kind.ESCALATED,
    Kind.REASSIGNED,
    Kind.EXCEPTION,
)
_FINAL = (Kind.APPROVED, Kind.REJECTED, Kind.RECALLED, Kind.CANCELLED)


def _setting(name: str, default: float) -> float:
    return settings.TRELLIS.get("APPROVALS", {}).get(name, default)


# What the approver is asked.


@dataclass(frozen=True)
class Summary:
    record: models.Model | None
    # (label, value) of the process's material fields: the amount and terms being approved.
    terms: list[tuple[str, str]]


def summary(request: ApprovalRequest) -> Summary:
    record = services.record_of(request)
    terms = []
    if record is not None:
        for name in request.process_version.material_fields:
            try:
                field = record._meta.get_field(name)
            except FieldDoesNotExist:
                continue
            terms.append((capfirst(str(field.verbose_name)), _shown(record, name)))
    return Summary(record, terms)


def _shown(record: models.Model, name: str) -> str:
    value = getattr(record, name, None)
    if value is None or value == "":
        return "—"
    currency = getattr(record, "currency", None)
    if isinstance(value, Decimal) and isinstance(currency, str) and currency:
        return format_money(value, currency)
    display = getattr(record, f"get_{name}_display", None)
    return str(display() if callable(display) else value)


def ask(
    request: ApprovalRequest,
    run: ApprovalStepRun,
    assignment: ApprovalAssignment,
    *,
    subject: str,
) -> OutboundMessage:
    """The e-mail asking ``assignment``'s approver to decide, in the active language."""
    about = summary(request)
    body = render_to_string(
        "approvals/mail/ask.txt",
        {
            "name": str(assignment.user),
            "label": _label(request),
            "step": run.name,
            "on_behalf_of": assignment.on_behalf_of,
            "submitter": request.submitter,
            "comment": request.comment,
            "record": about.record,
            "terms": about.terms,
            "due": notify.local_time(run.due_at),
            "link": settings.TRELLIS["BASE_URL"] + services.request_path(request),
            "approve_link": link_url(link_token(assignment, "approve")),
            "reject_link": link_url(link_token(assignment, "reject")),
        },
    )
    return outbound.queue(
        to=[assignment.user.email],
        subject=parsing.one_line(subject)[:300],
        text=body.strip() + "\n",
        record=request,
        headers={"Auto-Submitted": notify.AUTO_GENERATED},
    )


def _label(request: ApprovalRequest) -> str:
    return _("%(process)s #%(n)d") % {"process": request.process.label, "n": request.pk}


# Signed links.


def link_token(assignment: ApprovalAssignment, decision: str) -> str:
    payload = {
        "a": assignment.pk,
        "u": assignment.user_id,
        "s": assignment.step_run_id,
        "d": decision,
        "t": int(clock.now().timestamp()),
    }
    return signing.Signer(salt=_SALT).sign_object(payload)


def link_url(token: str) -> str:
    return settings.TRELLIS["BASE_URL"] + reverse("approvals:link", args=[token])


@dataclass(frozen=True)
class Settled:
    """Who settled a step (or the request) and when, in words for the approver."""

    who: str
    at: dt.datetime | None
    outcome: str


class AlreadyDecided(Conflict):
    def __init__(self, settled: Settled) -> None:
        super().__init__(
            _("Already decided by %(who)s at %(at)s (%(outcome)s); nothing was changed.")
            % {"who": settled.who, "at": notify.local_time(settled.at), "outcome": settled.outcome}
        )
        self.settled = settled


@dataclass(frozen=True)
class Link:
    assignment: ApprovalAssignment
    request: ApprovalRequest
    run: ApprovalStepRun
    approve: bool
    expires_at: dt.datetime

    @property
    def settled(self) -> Settled | None:
        return settled(self.assignment, self.request)


def open_link(token: str, *, ip: str = "") -> Link:
    """What a link is about, for its page. ``NotFound`` for a link that is not ours or was
    altered, ``LinkGone`` for an expired one, ``RateLimited`` for a flood."""
    if not ratelimit.hit(f"approval-link:{_client(ip) or '-'}", *PER_CLIENT):
        raise RateLimited(_("Too many requests. Please wait a few minutes."))
    payload = _payload(token)
    assignment = (
        ApprovalAssignment.objects.select_related(
            "user",
            "on_behalf_of",
            "step_run",
            "request__process",
            "request__process_version",
            "request__content_type",
            "request__submitter",
        )
        .filter(pk=payload["a"], user_id=payload["u"], step_run_id=payload["s"])
        .first()
    )
    if assignment is None:
        raise NotFound(_("This link is not valid."))
    run = assignment.step_run
    issued = dt.datetime.fromtimestamp(payload["t"], tz=dt.UTC)
    expires_at = _expiry(run, issued)
    if clock.now() >= expires_at:
        raise LinkGone(
            _("This link has expired. Open the request in Trellis, or reply to the e-mail.")
        )
    if not assignment.user.is_active:
        raise LinkGone(_("This link no longer works: the approver's account is closed."))
    return Link(assignment, assignment.request, run, payload["d"] == "approve", expires_at)


def _payload(token: Any) -> dict[str, Any]:
    invalid = NotFound(_("This link is not valid."))
    if not isinstance(token, str) or len(token) > 400:
        raise invalid
    try:
        payload = signing.Signer(salt=_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError):
        raise invalid from None
    ints = ("a", "u", "s", "t")
    if (
        not isinstance(payload, dict)
        or payload.get("d") not in _DECISIONS
        or not all(isinstance(payload.get(k), int) and 0 < payload[k] < 2**63 for k in ints)
    ):
        raise invalid
    return payload


def _expiry(run: ApprovalStepRun, issued: dt.datetime) -> dt.datetime:
    """The step's due time (or the sending, if later: an escalation) plus the grace; without
    a due time, a number of days after the sending."""
    if run.due_at is None:
        return issued + dt.timedelta(days=_setting("LINK_DAYS", 14))
    return max(run.due_at, issued) + dt.timedelta(hours=_setting("LINK_GRACE_HOURS", 24))


def _client(ip: str) -> str | None:
    try:
        return str(ipaddress.ip_address((ip or "").strip()))
    except ValueError:
        return None


def settled(assignment: ApprovalAssignment, request: ApprovalRequest) -> Settled | None:
    """``None`` while the assignment waits for its approver; else who settled it and when."""
    run = assignment.step_run
    if (
        assignment.status == Pending
        and run.status == ApprovalStepRun.Status.PENDING
        and request.status == ApprovalRequest.Status.PENDING
    ):
        return None
    if assignment.status in DECIDED:
        return Settled(str(assignment.user), assignment.decided_at, assignment.get_status_display())
    decider = (
        run.assignments.filter(status__in=DECIDED)
        .select_related("user")
        .order_by("-decided_at", "-pk")
        .first()
    )
    if decider is not None:
        return Settled(str(decider.user), decider.decided_at, decider.get_status_display())
    event = (
        request.events.filter(kind__in=_SETTLING, at__gte=assignment.created_at)
        .select_related("actor")
        .order_by("-at", "-pk")
        .first()
    )
    if event is not None:
        return Settled(_who(event), event.at, event.get_kind_display())
    return Settled("Trellis", run.finished_at, run.get_status_display())


def _who(event: ApprovalEvent) -> str:
    return str(event.actor) if event.actor else "Trellis"


def decide(link: Link, comment: str) -> ApprovalRequest:
    """Decide as the link says, for its approver; once. ``AlreadyDecided`` when the link was
    used or its step settled otherwise; ``ValidationFailed`` for a rejection without a
    comment."""
    with transaction.atomic():
        # The request's lock first, as every decision takes it: a second use of the link, or
        # the approver deciding in the inbox at the same moment, waits here and finds it done.
        request = (
            ApprovalRequest.objects.select_for_update(of=("self",))
            .select_related("process", "process_version", "content_type")
            .get(pk=link.request.pk)
        )
        assignment = ApprovalAssignment.objects.select_related("user", "step_run").get(
            pk=link.assignment.pk
        )
        already = settled(assignment, request)
        if already is not None:
            raise AlreadyDecided(already)
        act = services.approve if link.approve else services.reject
        return act(assignment.user, request.pk, comment=comment, channel="link")


# Replies.


def read_decision(text: str) -> tuple[bool | None, str]:
    """(True for approve, False for reject, None for no decision word; the comment)."""
    lines = (text or "").strip().splitlines()
    if not lines:
        return None, ""
    word = lines[0].strip().rstrip(_TRAILING).casefold()
    if word in APPROVE_WORDS:
        return True, "\n".join(lines[1:]).strip()
    if word in REJECT_WORDS:
        return False, "\n".join(lines[1:]).strip()
    return None, "\n".join(lines).strip()


_REFERENCE = re.compile(r"^\s*(?:approval|승인|결재)\s*[-#:]?\s*(\d{1,18})\s*$", re.IGNORECASE)


def resolve_reference(text: str) -> ApprovalRequest | None:
    """For the mail layer's quarantine: the request "approval 42" (or "결재 42") names."""
    match = _REFERENCE.match(text or "")
    return ApprovalRequest.objects.filter(pk=int(match.group(1))).first() if match else None


def _sender(parsed: ParsedMessage) -> str:
    return (parsed.from_address or "").strip().lower()


def approver_of(request: ApprovalRequest, sender: str) -> User | None:
    """The active user with this address who decides (or decided) a step of the request, or
    for whom a delegate does; one waiting on the current step first."""
    if not sender:
        return None
    people = {
        user.pk: user
        for user in User.objects.filter(email__iexact=sender, is_active=True).exclude(
            username=SYSTEM_USERNAME
        )
    }
    if not people:
        return None
    theirs = list(
        ApprovalAssignment.objects.filter(request=request)
        .filter(Q(user_id__in=people) | Q(on_behalf_of_id__in=people))
        .order_by("-pk")
    )
    for assignment in theirs:
        if assignment.status == Pending and assignment.user_id in people:
            return people[assignment.user_id]
    if not theirs:
        return None
    latest = theirs[0]
    return people.get(latest.user_id) or people[latest.on_behalf_of_id]


def refusal(request: ApprovalRequest, sender: str) -> str:
    """Why ``request`` does not take a reply from ``sender``; "" when it does."""
    return _refusal(request, sender, approver_of(request, sender))


def _refusal(request: ApprovalRequest, sender: str, user: User | None) -> str:
    if not sender:
        return _("The message has no readable From address.")
    if user is None:
        return _("%(sender)s is not an approver of %(request)s.") % {
            "sender": sender,
            "request": _label(request),
        }
    if request.status != ApprovalRequest.Status.PENDING:
        final = (
            request.events.filter(kind__in=_FINAL)
            .select_related("actor")
            .order_by("-at", "-pk")
            .first()
        )
        settled_by = (
            Settled(_who(final), final.at, request.get_status_display())
            if final
            else Settled("Trellis", request.finished_at, request.get_status_display())
        )
        return str(AlreadyDecided(settled_by).detail)
    return ""


class ReplyRefused(Conflict):
    """The request does not take this reply; the mail layer quarantines it with this reason."""


def handle_reply(
    request: ApprovalRequest, inbound: InboundMessage, parsed: ParsedMessage
) -> ApprovalRequest:
    sender = _sender(parsed)
    text = parsing.strip_quoted(parsed.text or "")[: services.MAX_COMMENT]
    # A message no longer "received" is being filed into the request, or run again, by an
    # admin: a comment, whoever sent it.
    if inbound.status != InboundMessage.Status.RECEIVED:
        _comment(request, approver_of(request, sender), text, inbound, parsed, filed=True)
        return request
    user = approver_of(request, sender)
    reason = _refusal(request, sender, user)
    if reason or user is None:
        raise ReplyRefused(reason)
    approve, comment = read_decision(text)
    if approve is None:
        _comment(request, user, text, inbound, parsed)
        return request
    try:
        with transaction.atomic():
            _decide_by_mail(user, request, approve, comment)
    except ServiceError as refused:
        needs_comment = isinstance(refused, ValidationFailed) and "comment" in refused.errors
        _not_taken(user, request, _reason(refused), parsed, needs_comment=needs_comment)
    return request


def _decide_by_mail(user: User, request: ApprovalRequest, approve: bool, comment: str) -> None:
    locked = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related("process", "process_version")
        .get(pk=request.pk)
    )
    mine = (
        ApprovalAssignment.objects.filter(request=locked, user=user)
        .select_related("user", "step_run")
        .order_by("-pk")
        .first()
    )
    if mine is not None:
        already = settled(mine, locked)
        if already is not None:
            raise AlreadyDecided(already)
    act = services.approve if approve else services.reject
    act(user, locked.pk, comment=comment, channel="mail")


def _reason(refused: ServiceError) -> str:
    if isinstance(refused, ValidationFailed) and refused.errors:
        return " ".join(str(m) for messages in refused.errors.values() for m in messages)
    return str(refused.detail)


def _comment(
    request: ApprovalRequest,
    user: User | None,
    text: str,
    inbound: InboundMessage,
    parsed: ParsedMessage,
    *,
    filed: bool = False,
) -> None:
    data: dict[str, Any] = {
        "channel": "mail",
        "from": _sender(parsed),
        "subject": parsing.one_line(parsed.subject)[:300],
        "inbound": inbound.pk,
    }
    if filed:
        data["filed"] = True
    with transaction.atomic():
        locked = ApprovalRequest.objects.select_for_update(of=("self",)).get(pk=request.pk)
        ApprovalEvent.objects.create(
            request=locked,
            kind=Kind.COMMENT,
            at=clock.now(),
            actor=user,
            step_index=locked.step_index,
            comment=text or parsing.one_line(parsed.subject) or "-",
            data=data,
        )


def _not_taken(
    user: User,
    request: ApprovalRequest,
    reason: str,
    parsed: ParsedMessage,
    *,
    needs_comment: bool,
) -> None:
    """Tell the approver at once why their reply did not decide the request."""
    with translation.override(notify.language_of(user)):
        subject = _("Your reply did not decide %(request)s") % {"request": _label(request)}
        text = render_to_string(
            "approvals/mail/reply_answer.txt",
            {
                "taken": True,
                "label": _label(request),
                "reason": reason,
                "needs_comment": needs_comment,
            },
        )
    _answer(_sender(parsed), subject, text, request, parsed.message_id)


def answer_refused(
    request: ApprovalRequest, sender: str, message: InboundMessage, parsed: ParsedMessage
) -> OutboundMessage | None:
    """For the task replies' sweep: answer the sender of a reply the request refused."""
    user = approver_of(request, sender)
    reason = _refusal(request, sender, user)
    if not reason or not ratelimit.hit(f"approval-answer:{sender}", *_ANSWERS_PER_SENDER):
        return None
    language = notify.language_of(user) if user else parsed.language
    with translation.override(language):
        subject = _("Your message did not change %(request)s") % {"request": _label(request)}
        text = render_to_string(
            "approvals/mail/reply_answer.txt",
            {
                "taken": False,
                "label": _label(request),
                "reason": reason,
                "subject": parsing.one_line(parsed.subject),
            },
        )
    # The answer belongs to the refused message, so an answer to the answer stays in the
    # quarantine and is never answered again.
    return _answer(sender, subject, text, message, parsed.message_id)


def _answer(
    to: str, subject: str, text: str, record: models.Model, in_reply_to: str
) -> OutboundMessage:
    return outbound.queue(
        to=[to],
        subject=parsing.one_line(subject)[:300],
        text=text.strip() + "\n",
        record=record,
        in_reply_to=in_reply_to,
        references=[in_reply_to] if in_reply_to else [],
        headers={"Auto-Submitted": notify.AUTO_REPLIED},
    )
