"""Notices to agents in their notifications inbox: the customer wrote, a reply bounced.

Subscribed to events, so they are left once the change has committed. The case's owner is told;
a case waiting in a queue has no one to tell yet (the queue shows it).
"""

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext as _

from trellis.core import events
from trellis.mail.models import OutboundMessage
from trellis.process.notify import language_of, notice, noticed_together

from .models import Case, CaseEvent
from .notify import one_line


def _case_link(case: Case) -> str:
    return reverse("support:case-detail", args=[case.pk])


def customer_wrote(name: str, payload: dict[str, Any]) -> None:
    customer_wrote_many([(name, payload)])


def customer_wrote_many(items: list[tuple[str, dict[str, Any]]]) -> None:
    """``customer_wrote`` for the messages of a batch of mail: their events read in one query,
    the notices written in one statement."""
    wanted = {payload.get("event_id"): payload.get("id") for _name, payload in items}
    found = CaseEvent.objects.select_related("case__owner").in_bulk(
        [pk for pk in wanted if pk is not None]
    )
    with noticed_together():
        for event_id, case_id in wanted.items():
            event = found.get(event_id)
            if event is not None and event.case_id == case_id:
                _tell_owner(event)


def _tell_owner(event: CaseEvent) -> None:
    if event.case.owner is None or not event.case.owner.is_active:
        return
    case, owner = event.case, event.case.owner
    with translation.override(language_of(owner)):
        if event.public:
            text = _("%(number)s: the customer wrote — %(subject)s")
        else:
            text = _("%(number)s: someone other than the customer wrote — %(subject)s")
        text %= {"number": case.tracking_number, "subject": one_line(case.subject)}
    notice(owner, text, link=_case_link(case) + f"#event-{event.pk}")


def reply_failed(_name: str, payload: dict[str, Any]) -> None:
    """Mail to a customer that could not be delivered: the agent who wrote it (else the case's
    owner) must find another way to reach them."""
    message = OutboundMessage.objects.filter(
        pk=payload.get("id"), content_type=ContentType.objects.get_for_model(Case)
    ).first()
    if message is None:
        return
    case = Case.objects.select_related("owner").filter(pk=message.object_id).first()
    if case is None:
        return
    written = CaseEvent.objects.select_related("actor").filter(case=case, outbound=message).first()
    person = written.actor if written is not None and written.actor_id else case.owner
    if person is None or not person.is_active:
        return
    with translation.override(language_of(person)):
        text = _("%(number)s: mail to %(to)s could not be delivered — %(error)s") % {
            "number": case.tracking_number,
            "to": ", ".join(message.to),
            "error": one_line(message.last_error)[:200] or "?",
        }
    notice(person, text, link=_case_link(case))


def subscribe() -> None:
    events.subscribe("case.customer_message", customer_wrote, many=customer_wrote_many)
    events.subscribe("case.foreign_message", customer_wrote, many=customer_wrote_many)
    events.subscribe("mail.outbound.failed", reply_failed)
