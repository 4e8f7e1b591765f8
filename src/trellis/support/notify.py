"""E-mail to the customer about their case, in the customer's language.

Every message goes from the support address with the case's reply address as Reply-To (set by
``mail.outbound.queue`` for the record), and answers the customer's last message (In-Reply-To,
References), so that mail programs keep one thread per case and a reply finds its case. Only an
agent's first name is ever written. Messages no person wrote carry ``Auto-Submitted`` (RFC 3834)
so that well-behaved auto-responders on the customer's side stay quiet.

Callers queue inside their transaction; the mail is sent after it commits.
"""

import re
from datetime import datetime

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from trellis.core.money import format_money
from trellis.mail import outbound
from trellis.mail.models import OutboundMessage

from . import access
from .models import Case, CaseEvent, SupportFee

# Subjects quote the customer's subject, cut to leave room for our words (300 in all).
_SUBJECT_ROOM = 200
# How much of the conversation an agent's reply quotes below its text.
_QUOTED_MESSAGES = 5
_QUOTED_CHARS = 4000
# References kept in a reply; long threads keep the first and the latest ones.
_MAX_REFERENCES = 20

_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|sv|답장|회신|전달)\s*(?:\[\d+\])?\s*:\s*|\[CS-\d{4}-\d{6}\]\s*)",
    re.IGNORECASE,
)

AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"


def acknowledge(case: Case, access_key: str, *, answering: str | None = None) -> OutboundMessage:
    """The first answer: tracking number, access key and the status page link.

    ``answering`` is the Message-ID of the message that opened the case ("" for none), when the
    caller knows the case has no other; otherwise the thread is read from the case.
    """
    with translation.override(case.language):
        subject = _("[%(number)s] We received your request: %(subject)s") % _subject_values(case)
        text = _render(
            "acknowledge",
            case,
            key=access_key,
            status_link=access.status_link(case, access_key),
        )
    thread = None if answering is None else (answering, [answering] if answering else [])
    return _send(case, subject, text, auto=AUTO_REPLIED, thread=thread)


def status_changed(case: Case, old: str, new: str) -> OutboundMessage | None:
    """Tell the customer their case moved to ``new``; nothing when they would see no change."""
    assigned = bool(case.owner_id or case.team_id)
    with translation.override(case.language):
        old_words = access.status_words(old, assigned=assigned)
        new_words = access.status_words(new, assigned=assigned)
        if old_words == new_words:
            return None
        subject = _("[%(number)s] Status: %(status)s — %(subject)s") % {
            **_subject_values(case),
            "status": new_words,
        }
        text = _render("status_changed", case, status=new, status_words=new_words)
    return _send(case, subject, text, auto=AUTO_GENERATED)


def agent_reply(case: Case, event: CaseEvent) -> OutboundMessage:
    """An agent's public reply, signed with their first name, the conversation quoted below."""
    with translation.override(case.language):
        subject = _("Re: [%(number)s] %(subject)s") % _subject_values(case)
        text = _render(
            "agent_reply",
            case,
            body=event.body,
            agent=access.agent_first_name(event),
            quoted=_quoted_thread(case, before=event),
        )
    message = _send(case, subject, text)
    if event.pk and event.outbound_id is None:
        CaseEvent.objects.filter(pk=event.pk, outbound__isnull=True).update(outbound=message)
        event.outbound = message
    return message


def feature_logged(case: Case) -> OutboundMessage:
    """The request went to the product-feedback list instead of the defect queue."""
    with translation.override(case.language):
        subject = _("[%(number)s] Your request is on our product feedback list") % (
            _subject_values(case)
        )
        text = _render("feature_logged", case, feature=case.feature.title if case.feature else "")
    return _send(case, subject, text, auto=AUTO_GENERATED)


def fee_proposed(case: Case, fee: SupportFee) -> OutboundMessage:
    """A support fee to agree to or decline on the status page (the key is not stored, so the
    link is the portal's front page: tracking number and e-mail open the case)."""
    with translation.override(case.language):
        subject = _("[%(number)s] A support fee for your request: please agree or decline") % (
            _subject_values(case)
        )
        text = _render(
            "fee_proposed",
            case,
            amount=format_money(fee.amount, fee.currency),
            description=fee.description,
            contract=fee.contract.number if fee.contract_id else "",
        )
    return _send(case, subject, text, auto=AUTO_GENERATED)


def _subject_values(case: Case) -> dict[str, str]:
    subject = _strip_reply_prefixes(one_line(case.subject))
    if len(subject) > _SUBJECT_ROOM:
        subject = subject[: _SUBJECT_ROOM - 1].rstrip() + "…"
    return {"number": case.tracking_number, "subject": subject}


def one_line(text: str) -> str:
    """Text without CR, LF or other control characters; runs of space become one space.

    What goes into a header must pass through here: a subject from a web form or an e-mail may
    carry CR/LF to inject headers of its own.
    """
    return " ".join("".join(c if c.isprintable() else " " for c in text or "").split())


def _strip_reply_prefixes(subject: str) -> str:
    """ "Re: Fwd: [CS-2026-000001] x" -> "x": our own prefix goes back on in front, once."""
    previous = None
    while previous != subject:
        previous = subject
        subject = _REPLY_PREFIX.sub("", subject)
    return subject.strip() or previous.strip()


def _render(name: str, case: Case, **context) -> str:
    values = {
        "case": case,
        "number": case.tracking_number,
        "subject": one_line(case.subject),
        "name": one_line(case.requester_name),
        "portal_link": access.portal_link(),
        **context,
    }
    return render_to_string(f"support/mail/{name}.txt", values).strip() + "\n"


def _send(
    case: Case,
    subject: str,
    text: str,
    *,
    auto: str = "",
    thread: tuple[str, list[str]] | None = None,
) -> OutboundMessage:
    in_reply_to, references = thread or _thread(case)
    return outbound.queue(
        to=[case.requester_email],
        subject=one_line(subject)[:300],
        text=text,
        record=case,
        in_reply_to=in_reply_to,
        references=references,
        headers={"Auto-Submitted": auto} if auto else {},
        from_address=settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"],
    )


def _thread(case: Case) -> tuple[str, list[str]]:
    """In-Reply-To and References: the customer's last message, after every earlier one of ours
    and theirs on this case, oldest first."""
    customer_ids = list(
        CaseEvent.objects.filter(
            case=case,
            kind=CaseEvent.Kind.CUSTOMER_MESSAGE,
            public=True,
            inbound__isnull=False,
        )
        .exclude(inbound__message_id="")
        .order_by("at", "id")
        .values_list("at", "inbound__message_id")
    )
    sent = list(
        OutboundMessage.objects.filter(
            content_type=ContentType.objects.get_for_model(Case), object_id=case.pk
        )
        .exclude(message_id="")
        .order_by("created_at", "id")
        .values_list("created_at", "message_id")
    )
    ordered = [mid for _at, mid in sorted([*customer_ids, *sent], key=lambda pair: pair[0])]
    ordered = list(dict.fromkeys(ordered))
    if customer_ids:
        in_reply_to = customer_ids[-1][1]
    elif sent:
        in_reply_to = sent[-1][1]
    else:
        return "", []
    references = [mid for mid in ordered if mid != in_reply_to] + [in_reply_to]
    if len(references) > _MAX_REFERENCES:
        references = references[:1] + references[-(_MAX_REFERENCES - 1) :]
    return in_reply_to, references


def _quoted_thread(case: Case, before: CaseEvent) -> list[dict[str, object]]:
    """The latest public messages before ``before``, newest first, for quoting."""
    events = (
        CaseEvent.objects.filter(
            case=case,
            public=True,
            kind__in=[CaseEvent.Kind.CUSTOMER_MESSAGE, CaseEvent.Kind.REPLY],
        )
        .exclude(pk=before.pk)
        .select_related("actor")
        .order_by("-at", "-id")
    )
    if before.pk:
        events = events.filter(at__lte=before.at)
    quoted = []
    room = _QUOTED_CHARS
    for event in events[:_QUOTED_MESSAGES]:
        if room <= 0:
            break
        body = event.body[:room]
        room -= len(body)
        if event.kind == CaseEvent.Kind.REPLY:
            author = access.agent_first_name(event)
        else:
            author = one_line(case.requester_name) or case.requester_email
        quoted.append(
            {
                "at": _local(event.at),
                "author": author,
                "lines": ["> " + line if line else ">" for line in body.splitlines()],
            }
        )
    return quoted


def _local(at: datetime) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M")
