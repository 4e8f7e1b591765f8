"""How support pages show what is special to cases: the navigation, timeline entries, e-mail
HTML."""

from decimal import Decimal, InvalidOperation
from typing import Any

import nh3
from django import template
from django.urls import NoReverseMatch, reverse
from django.utils import translation
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from trellis.core.money import format_money
from trellis.core.visibility import can, is_admin
from trellis.crm.templatetags.crm import show

from .. import billing
from ..models import Case, CaseEvent, Charge

register = template.Library()


_CONTRACT_PAGES = ("contract-list", "contract-new", "contract-detail")
_BILLING_PAGES = ("billing", "billing-mark")


@register.inclusion_tag("support/agent/_nav.html", takes_context=True)
def support_nav(context: template.Context) -> dict[str, Any]:
    """Cases and feature requests for those who may see cases; the mail quarantine for admins."""
    request = context["request"]
    user = request.user
    match = request.resolver_match
    namespace = match.namespace if match else ""
    url_name = match.url_name if match else ""
    items = []
    if can(user, "view", "case"):
        items += [
            {
                "key": "cases",
                "label": _("Cases"),
                "url": reverse("support:case-list"),
                "current": namespace == "support"
                and url_name not in ("feature-list", *_CONTRACT_PAGES, *_BILLING_PAGES),
            },
            {
                "key": "features",
                "label": _("Feature requests"),
                "url": reverse("support:feature-list"),
                "current": namespace == "support" and url_name == "feature-list",
            },
        ]
    if can(user, "view", "support_contract"):
        items.append(
            {
                "key": "contracts",
                "label": _("Support contracts"),
                "url": reverse("support:contract-list"),
                "current": namespace == "support" and url_name in _CONTRACT_PAGES,
            }
        )
    if can(user, "view", "support_charge"):
        items.append(
            {
                "key": "billing",
                "label": _("Support fee billing"),
                "url": reverse("support:billing"),
                "current": namespace == "support" and url_name in _BILLING_PAGES,
            }
        )
    if is_admin(user):
        try:
            url = reverse("mail:quarantine")
        except NoReverseMatch:  # the mail pages are not installed
            url = ""
        if url:
            items.append(
                {
                    "key": "quarantine",
                    "label": _("Mail quarantine"),
                    "url": url,
                    "current": namespace == "mail",
                }
            )
    return {"items": items}


def _no_remote_images(tag: str, attribute: str, value: str) -> str | None:
    # Loading a remote image tells the sender that the message was opened, and when.
    if tag == "img" and attribute in ("src", "srcset") and not value.startswith("data:image/"):
        return None
    return value


@register.filter
def email_html(html: str) -> SafeString:
    """The sanitised HTML of an e-mail, cleaned once more where it is shown.

    Intake stores sanitised HTML; cleaning again here means an agent's page never runs a script
    or loads a remote image, whatever an older or faulty row holds.
    """
    cleaned = nh3.clean(
        html or "",
        attribute_filter=_no_remote_images,
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(cleaned)  # noqa: S308  (nh3 output)


@register.filter
def language_name(code: str) -> str:
    """A language code as people read it, in the page's language: "ko" -> "Korean"."""
    try:
        return translation.get_language_info(code or "")["name_translated"]
    except KeyError:
        return code or ""


@register.simple_tag
def event_author(event: CaseEvent) -> str:
    """Who wrote or did it: the customer by the name they gave, agents by their full name."""
    if event.kind == CaseEvent.Kind.CUSTOMER_MESSAGE and event.author:
        return event.author
    if event.actor_id is not None:
        return str(event.actor)
    return event.author or _("System")


def _choice(field: str, value: Any) -> Any:
    return show(Case._meta.get_field(field), value)


def _arrow(old: Any, new: Any) -> SafeString:
    return format_html(
        '{} <span class="arrow" aria-label="{}">→</span> {}', old, _("changed to"), new
    )


def _case_link(number: Any, pk: Any) -> SafeString | str:
    if not number:
        return ""
    if isinstance(pk, int):
        return format_html(
            '<a href="{}" class="tracking">{}</a>',
            reverse("support:case-detail", args=[pk]),
            number,
        )
    return str(number)


@register.simple_tag
def event_summary(event: CaseEvent, names: dict[str, dict[int, str]]) -> SafeString | str:
    """One line saying what a status, assignment, class, merge or split event changed.

    ``names`` maps "users" and "teams" to the names of ids an assignment event holds without
    its names.
    """
    data = event.data if isinstance(event.data, dict) else {}
    summary = _summary(event.kind, data, names)
    if data.get("merged_from"):
        origin = _("Copied from %(number)s.") % {"number": data["merged_from"]}
        summary = format_html("{} {}", summary, origin) if summary else origin
    return summary


def _summary(kind: str, data: dict[str, Any], names: dict[str, dict[int, str]]) -> Any:
    if kind == CaseEvent.Kind.RECEIVED and data.get("channel"):
        text = _("Received by %(channel)s.") % {"channel": _choice("channel", data["channel"])}
        if data.get("follows"):
            text += " " + _("It follows up on %(number)s.") % {"number": data["follows"]}
        return text
    if kind == CaseEvent.Kind.STATUS and data.get("to"):
        return _arrow(_choice("status", data.get("from")), _choice("status", data["to"]))
    if kind == CaseEvent.Kind.CLASSIFIED and data.get("to"):
        shown = _arrow(_choice("kind", data.get("from")), _choice("kind", data["to"]))
        if data.get("feature_title"):
            url = reverse("support:feature-list")
            feature = format_html(
                '<a href="{}#feature-{}">{}</a>', url, data.get("feature"), data["feature_title"]
            )
            shown = format_html("{} · {}", shown, feature)
        return shown
    if kind == CaseEvent.Kind.ASSIGNED:
        return _assignment(data, names)
    if kind == CaseEvent.Kind.EDITED and isinstance(data.get("changes"), dict):
        return format_html_join(
            " · ",
            "{}: {}",
            (
                (capfirst(Case._meta.get_field(name).verbose_name), _edited(name, old, new))
                for name, (old, new) in data["changes"].items()
                if name in _EDITABLE
            ),
        )
    if kind == CaseEvent.Kind.MERGED:
        if data.get("into"):
            link = _case_link(data["into"], data.get("into_id"))
            return _with_number(_("Merged into %(number)s."), link)
        if data.get("merged"):
            link = _case_link(data["merged"], data.get("merged_id"))
            return _with_number(_("%(number)s was merged into this case."), link)
    if kind in _FEE_KINDS:
        return _fee_summary(kind, data)
    if kind == CaseEvent.Kind.COVERAGE:
        if data.get("to"):
            return _("Covered by support contract %(number)s.") % {"number": data["to"]}
        return _("No longer covered by a support contract (was %(number)s).") % {
            "number": data.get("from") or "—"
        }
    if kind == CaseEvent.Kind.SPLIT:
        if data.get("into"):
            link = _case_link(data["into"], data.get("into_id"))
            return _with_number(_("Messages moved into the new case %(number)s."), link)
        if data.get("from_case"):
            link = _case_link(data["from_case"], data.get("from_id"))
            return _with_number(_("Split from %(number)s."), link)
    return ""


_FEE_KINDS = frozenset(
    {
        CaseEvent.Kind.FEE_PROPOSED,
        CaseEvent.Kind.FEE_AGREED,
        CaseEvent.Kind.FEE_DECLINED,
        CaseEvent.Kind.FEE_WAIVED,
        CaseEvent.Kind.CHARGE,
    }
)


def _fee_summary(kind: str, data: dict[str, Any]) -> str:
    try:
        amount = format_money(Decimal(str(data.get("amount"))), str(data.get("currency", "")))
    except (InvalidOperation, ValueError):
        amount = "?"
    values = {"amount": amount, "number": data.get("contract") or ""}
    if kind == CaseEvent.Kind.FEE_PROPOSED:
        if data.get("contract"):
            return _("Proposed %(amount)s, for work outside contract %(number)s.") % values
        return _("Proposed %(amount)s.") % values
    if kind == CaseEvent.Kind.FEE_AGREED:
        return _("The customer agreed to %(amount)s.") % values
    if kind == CaseEvent.Kind.FEE_DECLINED:
        return _("The customer declined %(amount)s.") % values
    if kind == CaseEvent.Kind.FEE_WAIVED:
        return _("%(amount)s waived.") % values
    if data.get("what") == "billed":
        values["invoice"] = data.get("invoice", "")
        return _("%(amount)s billed, invoice %(invoice)s.") % values
    return _("A charge of %(amount)s is to bill.") % values


_EDITABLE = frozenset({"subject", "priority", "product", "contact", "account"})


def _edited(name: str, old: Any, new: Any) -> SafeString:
    if name == "priority":
        return _arrow(_choice(name, old), _choice(name, new))
    return _arrow(old or "—", new or "—")


def _with_number(text: str, number: Any) -> SafeString:
    """A translated sentence around a case's number, which may be a link."""
    return mark_safe(conditional_escape(text) % {"number": conditional_escape(number)})  # noqa: S308


def _assignment(data: dict[str, Any], names: dict[str, dict[int, str]]) -> str:
    owner = data.get("owner_name") or names.get("users", {}).get(data.get("owner"), "")
    team = data.get("team_name") or names.get("teams", {}).get(data.get("team"), "")
    if owner and team:
        text = _("Assigned to %(owner)s (%(team)s).") % {"owner": owner, "team": team}
    elif owner:
        text = _("Assigned to %(owner)s.") % {"owner": owner}
    elif team:
        text = _("Waiting in the %(team)s queue.") % {"team": team}
    else:
        text = _("Waiting in the queue.")
    via = {
        "claim": _("Claimed from the queue."),
        "reply": _("Taken by replying."),
    }.get(data.get("via", ""))
    if data.get("on_arrival"):
        via = _("By the assignment rules.")
    return f"{text} {via}" if via else text


@register.simple_tag
def charge_status(charge: Charge) -> Charge.Status:
    """Where a charge stands now (it follows its case's resolution)."""
    return Charge.Status(billing.charge_status(charge))
