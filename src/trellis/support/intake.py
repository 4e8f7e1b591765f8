"""Every channel makes the same case.

E-mail (the support mailbox), the portal's web form, the JSON API and an agent logging a phone
call all end in ``open_case``: one transaction that numbers the case, finds or creates the
customer as a contact, writes the first public events, picks an owner and queues the
acknowledgement. A customer's later message, by mail or on the status page, goes through
``customer_reply``.

Threading of mail: the mail layer routes a reply by our reply address or by In-Reply-To /
References to ``handle_reply``; what is left comes to ``handle_mail``, which looks for a tracking
number in the subject, then in the body.

A message without a From address is refused (and so quarantined by the mail layer) rather than
answered at the envelope sender: that address is often rewritten by forwarders and mailing lists
(SRS, bounce addresses), so a case and its access key could go to a stranger. An admin can file
the quarantined message by hand.
"""

import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Upper
from django.utils import translation
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events, numbering
from trellis.core.errors import Conflict, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Team, User, hash_token
from trellis.core.services import system_user
from trellis.core.visibility import can, visible
from trellis.crm import services as crm_services
from trellis.crm.models import Account, Contact, Product
from trellis.mail import outbound, parsing, sanitize
from trellis.mail.models import InboundMessage
from trellis.mail.parsing import Attachment, ParsedMessage

from . import assignment, contracts, notify, triage
from .models import AssignmentRule, Case, CaseAttachment, CaseEvent
from .notify import one_line

log = logging.getLogger(__name__)

TRACKING_NUMBER = re.compile(r"\bCS-\d{4}-\d{6}\b", re.IGNORECASE)
MAX_SUBJECT = Case._meta.get_field("subject").max_length
MAX_NAME = Case._meta.get_field("requester_name").max_length
MAX_EMAIL = 254
MAX_BODY = 100_000
MAX_FILENAME = 200
# Addresses anyone can get: the domain says nothing about the customer's company.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "kakao.com",
        "nate.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "yahoo.co.kr",
        "icloud.com",
        "me.com",
        "proton.me",
        "protonmail.com",
    }
)
_AUDITED = (
    *("tracking_number", "subject", "channel", "status", "requester_email", "language"),
    *("contact", "account", "product", "owner", "team"),
)
# Hops through merged cases before giving up (a merge cycle would be a bug elsewhere).
_MAX_MERGE_HOPS = 10


def safe_filename(name: str) -> str:
    """A file name with no directories, control characters or leading dots, at most 200 long."""
    name = (name or "").replace("\\", "/")
    name = PurePosixPath(name).name if "/" in name else name
    name = "".join(c for c in name if c.isprintable() and c not in '<>:"|?*')
    name = name.strip().lstrip(".").strip()
    if not name:
        return "attachment"
    if len(name) > MAX_FILENAME:
        stem, dot, ending = name.rpartition(".")
        if dot and 0 < len(ending) <= 10:
            name = stem[: MAX_FILENAME - len(ending) - 1] + "." + ending
        else:
            name = name[:MAX_FILENAME]
    return name


def is_forbidden(filename: str) -> bool:
    endings = settings.TRELLIS["MAIL"]["FORBIDDEN_EXTENSIONS"]
    return filename.lower().endswith(tuple(e.lower() for e in endings))


def make_attachment(filename: str, content_type: str, data: bytes) -> Attachment:
    """An ``Attachment`` from an upload, judged by the same rules as one from an e-mail."""
    name = safe_filename(filename)
    too_big = len(data) > settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"]
    return Attachment(
        filename=name,
        content_type=_content_type(content_type),
        data=b"" if too_big else data,
        allowed=not too_big and not is_forbidden(name),
        size=len(data),
    )


def _content_type(value: str) -> str:
    value = (value or "").split(";")[0].strip().lower()
    if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*", value) and len(value) <= 100:
        return value
    return "application/octet-stream"


# Opening a case.


def open_case(
    *,
    channel: str,
    subject: str,
    body: str,
    requester_email: str,
    requester_name: str = "",
    language: str = "",
    html: str = "",
    attachments: Iterable[Attachment] = (),
    product: Product | int | None = None,
    actor: User | None = None,
    inbound: InboundMessage | None = None,
    follows: Case | None = None,
    send_acknowledgement: bool = True,
) -> tuple[Case, str]:
    """A new case and its access key. The key is returned here only; the case keeps its hash.

    ``actor`` is the agent or API user who logs it; the web form and mail pass none (the system
    user acts). ``follows`` is the closed case a customer's new mail continues. Raises
    ``ValidationFailed`` with field errors and writes nothing on bad input.
    """
    if actor is not None and not can(actor, "create", "case"):
        raise PermissionDenied(_("You may not create this kind of record."))
    by_system = actor is None
    actor = actor or system_user()
    request = _checked_request(
        actor,
        channel=channel,
        subject=subject,
        body=body,
        requester_email=requester_email,
        requester_name=requester_name,
        language=language,
        html=html,
        attachments=attachments,
        product=product,
        inbound=inbound,
        send_acknowledgement=send_acknowledgement,
    )
    # No savepoint inside a caller's transaction: what fails from here on fails the caller's
    # transaction too (the mail layer runs each handler in a savepoint of its own).
    with transaction.atomic(savepoint=False):
        contact, account = _contact_for(
            request.email, request.requester_name, actor if by_system else None
        )
        access_key = secrets.token_urlsafe(24)
        number = numbering.next_number("CS")
        case = _new_case(request, contact, account, access_key, number, clock.now())
        case.save(force_insert=True)
        _received, message = CaseEvent.objects.bulk_create(
            _first_events(case, request, actor, follows)
        )
        CaseAttachment.objects.bulk_create(_attachment_rows(case, message, request.attachments))
        _assign(case, actor)
        contracts.link_case(case, actor)
        _created_audit_row(case, actor).save()
        events.emit("case.created", id=case.pk, actor_id=actor.pk, channel=channel)
        if case.acknowledged_at is not None:
            # The only message of a new case is the one it was opened from.
            notify.acknowledge(case, access_key, answering=inbound.message_id if inbound else "")
    return case, access_key


def open_cases(
    requests: list[dict[str, Any]], system: User | None = None
) -> list[tuple[Case, str] | Exception]:
    """``open_case`` for many requests at once, by the system user: the mail intake's batches.

    Each request holds ``open_case``'s arguments but ``actor`` and ``follows``; ``system`` is
    the system user when the caller has it already. Returns, for each, the case and its access
    key, or the ``ValidationFailed`` (or the failure to make its contact) that stopped it alone,
    having written nothing for it. The cases come out as ``open_case`` makes them, field by
    field and row by row; their tracking numbers are taken in one statement, the rows of all of
    them are written together (a few statements in all instead of some twenty per case), and
    the acknowledgements are queued together, to be sent by one task. Raises when a bulk write
    fails; then nothing of the batch is kept (the caller's transaction rolls back).
    """
    actor = system or system_user()
    results: list[tuple[Case, str] | Exception | None] = [None] * len(requests)
    checked: list[tuple[int, _Request]] = []
    for n, request in enumerate(requests):
        try:
            checked.append((n, _checked_request(actor, **request)))
        except ValidationFailed as exc:
            results[n] = exc
    with transaction.atomic(savepoint=False):
        parties = _contacts_for_many(
            [(request.email, request.requester_name) for _n, request in checked], actor
        )
        now = clock.now()
        rules = list(
            AssignmentRule.objects.filter(is_active=True)
            .select_related("user")
            .order_by("order", "pk")
        )
        accepted: list[tuple[int, _Request, tuple[Contact, Account | None]]] = []
        for n, request in checked:
            party = parties[request.email]
            if isinstance(party, Exception):
                results[n] = party
            else:
                accepted.append((n, request, party))
        if not accepted:
            return results  # type: ignore[return-value]
        numbers = numbering.next_numbers("CS", len(accepted))
        opened: list[tuple[int, Case, str, _Request]] = []
        for (n, request, party), number in zip(accepted, numbers, strict=True):
            access_key = secrets.token_urlsafe(24)
            case = _new_case(request, *party, access_key, number, now)
            if rules:
                _choose_owner(case, rules)
            opened.append((n, case, access_key, request))
        Case.objects.bulk_create([case for _n, case, _key, _request in opened])
        teams = Team.objects.in_bulk({case.team_id for _n, case, _k, _r in opened} - {None})
        timeline: list[CaseEvent] = []
        files: list[tuple[Case, CaseEvent, list[Attachment]]] = []
        for _n, case, _key, request in opened:
            if case.team_id is not None:
                case.team = teams[case.team_id]
            received, message = _first_events(case, request, actor)
            timeline += [received, message]
            files.append((case, message, request.attachments))
            if case.owner_id or case.team_id:
                timeline.append(_assigned_on_arrival(case, actor, now))
        CaseEvent.objects.bulk_create(timeline)
        CaseAttachment.objects.bulk_create(
            [row for case, m, attached in files for row in _attachment_rows(case, m, attached)]
        )
        for _n, case, _key, _request in opened:
            contracts.link_case(case, actor)
        AuditEvent.objects.bulk_create(
            [_created_audit_row(case, actor) for _n, case, _k, _r in opened]
        )
        with outbound.queued_together():
            for n, case, key, request in opened:
                events.emit("case.created", id=case.pk, actor_id=actor.pk, channel=request.channel)
                if case.acknowledged_at is not None:
                    inbound = request.inbound
                    notify.acknowledge(case, key, answering=inbound.message_id if inbound else "")
                results[n] = (case, key)
    return results  # type: ignore[return-value]


@dataclass(frozen=True)
class _Request:
    """What a new case is made of, checked."""

    channel: str
    subject: str
    body: str
    html: str
    email: str
    requester_name: str
    language: str
    product: Product | None
    attachments: list[Attachment]
    inbound: InboundMessage | None
    # Whether the case gets an acknowledgement (claimed at creation: nobody else sees the case
    # before its transaction commits, so no conditional update as in ``acknowledge`` is needed).
    acknowledged: bool


def _checked_request(
    actor: User,
    *,
    channel: str,
    subject: str,
    body: str,
    requester_email: str,
    requester_name: str = "",
    language: str = "",
    html: str = "",
    attachments: Iterable[Attachment] = (),
    product: Product | int | None = None,
    inbound: InboundMessage | None = None,
    send_acknowledgement: bool = True,
) -> _Request:
    """The input of a new case, cleaned; ``ValidationFailed`` with every field error."""
    subject = one_line(subject)
    # Callers other than the mail layer may hand in HTML that nobody cleaned.
    html = sanitize.clean_html(html or "")
    body = (body or "").strip() or sanitize.render_text(html)
    requester_name = one_line(requester_name)
    errors: dict[str, list[str]] = {}
    email = _checked_email(requester_email, errors)
    if channel not in Case.Channel.values:
        errors["channel"] = [_("Unknown channel.")]
    if not subject and not body:
        errors["subject"] = [_("Give a subject or a message.")]
    if len(subject) > MAX_SUBJECT:
        errors["subject"] = [_("At most %(n)d characters.") % {"n": MAX_SUBJECT}]
    if len(body) > MAX_BODY:
        errors["body"] = [_("At most %(n)d characters.") % {"n": MAX_BODY}]
    if len(requester_name) > MAX_NAME:
        errors["requester_name"] = [_("At most %(n)d characters.") % {"n": MAX_NAME}]
    languages = {code for code, _name in settings.LANGUAGES}
    if language and language not in languages:
        errors["language"] = [_("Unknown language.")]
    checked_product = _checked_product(actor, product, errors)
    if errors:
        raise ValidationFailed(errors)
    return _Request(
        channel=channel,
        subject=subject or _subject_from(body),
        body=body,
        html=html,
        email=email,
        requester_name=requester_name,
        language=language or parsing.language(subject, body),
        product=checked_product,
        attachments=list(attachments),
        inbound=inbound,
        acknowledged=send_acknowledgement and not _is_ours(email),
    )


def _new_case(
    request: _Request,
    contact: Contact,
    account: Account | None,
    access_key: str,
    tracking_number: str,
    now: Any,
) -> Case:
    """The case's row, not saved yet."""
    return Case(
        tracking_number=tracking_number,
        access_key_hash=hash_token(access_key),
        subject=request.subject,
        description=request.body,
        channel=request.channel,
        contact=contact,
        account=account,
        product=request.product,
        requester_email=request.email,
        requester_name=request.requester_name,
        language=request.language,
        suggested_kind=_suggested_kind(request.subject, request.body),
        created_at=now,
        updated_at=now,
        acknowledged_at=now if request.acknowledged else None,
    )


def _first_events(
    case: Case, request: _Request, actor: User, follows: Case | None = None
) -> list[CaseEvent]:
    """ "Received" and the customer's message, not saved yet."""
    received: dict[str, Any] = {"channel": request.channel}
    if follows is not None:
        received["follows"] = follows.tracking_number
    message = CaseEvent(
        case=case,
        kind=CaseEvent.Kind.CUSTOMER_MESSAGE,
        public=True,
        at=case.created_at,
        actor=actor,
        author=request.requester_name or request.email,
        body=request.body,
        html=request.html,
        data={"via": request.channel, "from": request.email},
        inbound=request.inbound,
    )
    return [
        CaseEvent(
            case=case,
            kind=CaseEvent.Kind.RECEIVED,
            public=True,
            at=case.created_at,
            actor=actor,
            data=received,
        ),
        message,
    ]


def _created_audit_row(case: Case, actor: User) -> AuditEvent:
    """The audit trail's "created" row of a new case, not saved yet."""
    values = {name: value for name, value in audit.snapshot(case, list(_AUDITED)).items() if value}
    return AuditEvent(
        content_type=ContentType.objects.get_for_model(Case),
        object_id=case.pk,
        action=AuditEvent.Action.CREATED,
        actor=actor if actor.pk else None,
        at=clock.now(),
        # ``diff`` against nothing gives each value as the audit trail keeps it.
        changes={name: new for name, (_old, new) in audit.diff({}, values).items()},
        summary=str(case)[:300],
    )


def acknowledge(case: Case, access_key: str) -> bool:
    """Queue the acknowledgement unless this case already had one; says whether it did.

    The conditional update makes it once per case even when two processes try at once.
    """
    if _is_ours(case.requester_email):
        # Mail to ourselves would come back to the intake: a loop.
        return False
    now = clock.now()
    claimed = Case.objects.filter(pk=case.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=now
    )
    if not claimed:
        return False
    case.acknowledged_at = now
    notify.acknowledge(case, access_key)
    return True


def _is_ours(address: str) -> bool:
    return address.rpartition("@")[2].lower() == settings.MAIL_DOMAIN.lower()


def _checked_email(value: str, errors: dict[str, list[str]]) -> str:
    email = (value or "").strip().lower()
    if not email:
        errors["requester_email"] = [_("An e-mail address is required.")]
        return ""
    if len(email) > MAX_EMAIL:
        errors["requester_email"] = [_("At most %(n)d characters.") % {"n": MAX_EMAIL}]
        return ""
    try:
        validate_email(email)
    except ValidationError:
        errors["requester_email"] = [_("Enter a valid e-mail address.")]
    return email


def _checked_product(
    actor: User, product: Product | int | None, errors: dict[str, list[str]]
) -> Product | None:
    if product in (None, ""):
        return None
    pk = product.pk if isinstance(product, Product) else product
    try:
        found = visible(actor, Product).filter(pk=int(pk), is_active=True).first()
    except (TypeError, ValueError):
        found = None
    if found is None:
        errors["product"] = [_("No such product.")]
    return found


def _subject_from(body: str) -> str:
    first_line = one_line(body.strip().splitlines()[0]) if body.strip() else ""
    if len(first_line) > 80:
        first_line = first_line[:79].rstrip() + "…"
    return first_line


def _suggested_kind(subject: str, body: str) -> str:
    kind = triage.suggest_kind(subject, body) or ""
    return kind if kind in Case.Kind.values else ""


def _assign(case: Case, actor: User) -> None:
    """Pick an owner by the assignment rules; a failing rule leaves the case in the queue.

    A broken rule must not turn customers away, so it is logged and the case stays unassigned.
    """
    try:
        with transaction.atomic():
            assignment.assign_on_arrival(case)
            if case.owner_id or case.team_id:
                case.save(update_fields=["owner", "team"])
    except Exception:
        log.exception("assignment on arrival failed for case %s", case.tracking_number)
        case.owner_id = case.team_id = None
        return
    if case.owner_id or case.team_id:
        _assigned_on_arrival(case, actor, clock.now()).save()


def _choose_owner(case: Case, rules: list[AssignmentRule]) -> None:
    """``_assign`` for a case of a batch, not saved yet: the owner and team go in with it."""
    try:
        # Round robin and least open write under a savepoint of their own.
        choice = assignment.choose(case, rules)
    except Exception:
        log.exception("assignment on arrival failed for case %s", case.tracking_number)
        return
    case.owner = choice.owner
    case.team_id = choice.team_id


def _assigned_on_arrival(case: Case, actor: User, at: Any) -> CaseEvent:
    return CaseEvent(
        case=case,
        kind=CaseEvent.Kind.ASSIGNED,
        public=True,
        at=at,
        actor=actor,
        data={"owner": case.owner_id, "team": case.team_id, "on_arrival": True},
    )


# Contacts.


def _contact_for(
    email: str, name: str, system: User | None = None
) -> tuple[Contact, Account | None]:
    """The contact with this e-mail (oldest first), or a new one; and the case's account.

    ``system`` is the system user when the caller has it already (a new contact is its write).
    """
    first_account = (
        Contact.accounts.through.objects.filter(contact=OuterRef("pk"))
        .order_by("account_id")
        .values("account_id")[:1]
    )
    contact = (
        Contact.objects.filter(email__iexact=email)
        .order_by("id")
        # All a case needs of its contact: the link, and the name for the audit trail.
        .only("id", "name")
        .annotate(first_account_id=Subquery(first_account))
        .first()
    )
    if contact is not None:
        if contact.first_account_id is None:
            return contact, account_for_domain(email)
        return contact, Account.objects.get(pk=contact.first_account_id)
    account = account_for_domain(email)
    return _new_contact(email, name, account, system or system_user()), account


def account_for_domain(email: str) -> Account | None:
    """The oldest account whose e-mail or web site is on the sender's domain.

    Free-mail domains match nobody. A web site matches with or without ``www.``.
    """
    domain = _domain(email)
    if domain is None:
        return None
    # One query for both kinds of match (query building costs more here than the scan), of
    # three columns: most senders match nothing.
    candidates = list(
        Account.objects.filter(Q(email__iendswith="@" + domain) | Q(website__icontains=domain))
        .order_by("id")
        .values_list("pk", "email", "website")[:_DOMAIN_CANDIDATES]
    )
    pk = _account_among(candidates, domain)
    return Account.objects.get(pk=pk) if pk is not None else None


# The accounts a domain's match is chosen from: the oldest ones whose e-mail or web site has it.
_DOMAIN_CANDIDATES = 50


def _domain(email: str) -> str | None:
    """The sender's domain, or ``None`` for one that says nothing about the company."""
    domain = email.rpartition("@")[2].lower().strip()
    return None if not domain or domain in FREE_MAIL_DOMAINS else domain


def _account_among(candidates: list[tuple[int, str, str]], domain: str) -> int | None:
    by_email = (pk for pk, address, _site in candidates if address.lower().endswith("@" + domain))
    # A web site only "contains" the domain in the query; its host must be the domain.
    by_site = (pk for pk, _address, site in candidates if _host(site) == domain)
    return next(by_email, None) or next(by_site, None)


def _contacts_for_many(
    senders: list[tuple[str, str]], system: User
) -> dict[str, tuple[Contact, Account | None] | Exception]:
    """``_contact_for`` of each (e-mail, name), in a few queries for all of them.

    A sender who writes twice gets one new contact, named as in the first message. The
    failure to make a contact is kept as that sender's result, having written nothing.
    """
    found: dict[str, tuple[Contact, Account | None] | Exception] = {}
    names: dict[str, str] = {}
    for email, name in senders:
        if not email.isascii() and email not in found:
            # Upper-casing beyond ASCII is the database's to do: looked up alone.
            try:
                found[email] = _contact_for(email, name, system)
            except Exception as exc:
                log.warning("could not make a contact for %s", email, exc_info=True)
                found[email] = exc
        names.setdefault(email, name)
    wanted = {email.upper(): email for email in names if email not in found}
    contacts: dict[str, Contact] = {}
    if wanted:
        first_account = (
            Contact.accounts.through.objects.filter(contact=OuterRef("pk"))
            .order_by("account_id")
            .values("account_id")[:1]
        )
        for contact in (
            Contact.objects.annotate(email_upper=Upper("email"))
            .filter(email_upper__in=list(wanted))
            .order_by("id")
            .only("id", "name")
            .annotate(first_account_id=Subquery(first_account))
        ):
            contacts.setdefault(wanted[contact.email_upper], contact)
    # Each domain's candidates in one query for all the domains that need one.
    domains = {
        domain
        for email in wanted.values()
        if (email not in contacts or contacts[email].first_account_id is None)
        and (domain := _domain(email)) is not None
    }
    candidates: dict[str, list[tuple[int, str, str]]] = {domain: [] for domain in domains}
    if domains:
        condition = Q()
        for domain in domains:
            condition |= Q(email__iendswith="@" + domain) | Q(website__icontains=domain)
        for row in (
            Account.objects.filter(condition).order_by("id").values_list("pk", "email", "website")
        ):
            _pk, address, site = row
            for domain in domains:
                matches = address.upper().endswith("@" + domain.upper()) or (
                    domain.upper() in site.upper()
                )
                if matches and len(candidates[domain]) < _DOMAIN_CANDIDATES:
                    candidates[domain].append(row)
    by_domain = {domain: _account_among(rows, domain) for domain, rows in candidates.items()}
    account_ids = {pk for pk in by_domain.values() if pk is not None}
    account_ids |= {c.first_account_id for c in contacts.values() if c.first_account_id}
    accounts = Account.objects.select_related("owner").in_bulk(account_ids)
    for email in wanted.values():
        domain_account = by_domain.get(_domain(email) or "")
        account = accounts[domain_account] if domain_account is not None else None
        contact = contacts.get(email)
        if contact is not None:
            if contact.first_account_id is not None:
                account = accounts[contact.first_account_id]
            found[email] = (contact, account)
            continue
        try:
            found[email] = (_new_contact(email, names[email], account, system), account)
        except Exception as exc:
            log.warning("could not make a contact for %s", email, exc_info=True)
            found[email] = exc
    return found


def _new_contact(email: str, name: str, account: Account | None, system: User) -> Contact:
    owner = account.owner if account is not None and account.owner.is_active else system
    data: dict[str, Any] = {
        "name": name or email.partition("@")[0][:200],
        "email": email,
        "notes": _("Created from a support request."),
    }
    if account is not None:
        data["accounts"] = [account.pk]
    return crm_services.create(system, "contact", data, preset={"owner": owner})


def _host(url: str) -> str:
    url = url.strip().lower()
    if "://" not in url:
        url = "http://" + url
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.")


# Attachments.


def _save_attachments(
    case: Case, event: CaseEvent, attachments: list[Attachment], *, public: bool
) -> list[CaseAttachment]:
    return CaseAttachment.objects.bulk_create(
        _attachment_rows(case, event, attachments, public=public)
    )


def _attachment_rows(
    case: Case, event: CaseEvent, attachments: list[Attachment], *, public: bool = True
) -> list[CaseAttachment]:
    limit = settings.TRELLIS["MAIL"]["MAX_ATTACHMENT_BYTES"]
    rows = []
    for attachment in attachments:
        name = safe_filename(attachment.filename)
        data = attachment.data or b""
        size = max(attachment.size or 0, len(data))
        too_big = size > limit
        allowed = bool(attachment.allowed) and not too_big and not is_forbidden(name)
        rows.append(
            CaseAttachment(
                case=case,
                event=event,
                filename=name,
                content_type=_content_type(attachment.content_type),
                size=size,
                data=b"" if too_big else data,
                allowed=allowed,
                public=public,
                created_at=event.at,
            )
        )
    return rows


# Replies from the customer.


def customer_reply(
    case: Case,
    *,
    body: str,
    attachments: Iterable[Attachment] = (),
    via: str,
    html: str = "",
    inbound: InboundMessage | None = None,
) -> CaseEvent:
    """The customer's message on their case (by mail or on the status page).

    A case waiting on the customer, or resolved, goes back to the team (status open, with a
    public status event). A closed case takes no more messages (``Conflict``); mail to one opens
    a new case instead (see ``handle_mail``). A merged case passes the message to the case it was
    merged into.
    """
    with transaction.atomic():
        return _customer_message(
            case, body=body, attachments=attachments, via=via, html=html, inbound=inbound
        )


def _customer_message(
    case: Case,
    *,
    body: str,
    attachments: Iterable[Attachment],
    via: str,
    html: str,
    inbound: InboundMessage | None,
    system: User | None = None,
) -> CaseEvent:
    """``customer_reply`` in the caller's transaction, without a savepoint of its own: what
    fails here fails the caller's transaction too. For mail, whose handlers the mail layer runs
    in a savepoint each (and each reply of a batch). ``system`` is the system user when the
    caller has it already."""
    html = sanitize.clean_html(html or "")
    body = (body or "").strip() or sanitize.render_text(html)
    attachments = list(attachments)
    if not body and not attachments:
        raise ValidationFailed({"body": [_("Write a message or attach a file.")]})
    if len(body) > MAX_BODY:
        raise ValidationFailed({"body": [_("At most %(n)d characters.") % {"n": MAX_BODY}]})
    actor = system or system_user()
    case = _locked(final_case(case))
    if case.status == Case.Status.CLOSED:
        raise Conflict(_("This case is closed. Please open a new one."))
    now = clock.now()
    event = CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.CUSTOMER_MESSAGE,
        public=True,
        at=now,
        actor=actor,
        author=case.requester_name or case.requester_email,
        body=body,
        html=html,
        data={"via": via, "from": case.requester_email},
        inbound=inbound,
    )
    _save_attachments(case, event, attachments, public=True)
    changed = ["updated_at"]
    if case.status in (Case.Status.WAITING_ON_CUSTOMER, Case.Status.RESOLVED):
        _set_status(case, Case.Status.OPEN, actor, reason="customer_reply")
        changed = ["status", "resolved_at", "version", "updated_at"]
    case.updated_at = now
    case.save(update_fields=changed)
    events.emit("case.customer_message", id=case.pk, event_id=event.pk, via=via)
    return event


def _set_status(case: Case, new: str, actor: User, *, reason: str) -> None:
    old = case.status
    case.status = new
    if new != Case.Status.RESOLVED:
        case.resolved_at = None
    case.version += 1
    case.updated_at = clock.now()
    CaseEvent.objects.create(
        case=case,
        kind=CaseEvent.Kind.STATUS,
        public=True,
        at=case.updated_at,
        actor=actor,
        data={"from": old, "to": new, "reason": reason},
    )
    audit.record(actor, case, AuditEvent.Action.UPDATED, {"status": [old, new]}, str(case))
    events.emit("case.updated", id=case.pk, actor_id=actor.pk, changed=["status"])


def _locked(case: Case) -> Case:
    return Case.objects.select_for_update().get(pk=case.pk)


def final_case(case: Case) -> Case:
    """The case a merged case was merged into (following a chain of merges)."""
    for _hop in range(_MAX_MERGE_HOPS):
        if case.merged_into_id is None:
            return case
        case = Case.objects.get(pk=case.merged_into_id)
    return case


# Mail.


def handle_mail(inbound: InboundMessage, parsed: ParsedMessage) -> Case:
    """The support mailbox: a reply joins its case by tracking number, otherwise a new case."""
    sender = _sender(parsed)
    case = case_by_reference(parsed.subject, sender) or case_by_reference(parsed.text, sender)
    if case is not None:
        return _mail_to_case(case, inbound, parsed, sender)
    case, _key = _open_from_mail(inbound, parsed, sender)
    return case


def handle_mails(
    pairs: list[tuple[InboundMessage, ParsedMessage]],
) -> list[Case | Exception]:
    """``handle_mail`` for many messages at once: the mail layer's batches.

    The tracking numbers of all of them are looked up in one query; replies join their cases
    one by one, each in a savepoint; new cases are opened together by ``open_cases``. Returns,
    for each message, its case or the exception that stopped it alone.
    """
    results: list[Case | Exception | None] = [None] * len(pairs)
    references = [
        (_tracking_numbers(parsed.subject), _tracking_numbers(parsed.text))
        for _inbound, parsed in pairs
    ]
    wanted = {number for numbers in references for part in numbers for number in part}
    cases = {c.tracking_number: c for c in Case.objects.filter(tracking_number__in=wanted)}
    openings: list[tuple[int, dict[str, Any]]] = []
    replies: list[tuple[int, Case, InboundMessage, ParsedMessage, str]] = []
    for n, ((inbound, parsed), (in_subject, in_text)) in enumerate(
        zip(pairs, references, strict=True)
    ):
        try:
            sender = _sender(parsed)
        except ValidationFailed as exc:
            results[n] = exc
            continue
        case = _case_among(in_subject, cases, sender) or _case_among(in_text, cases, sender)
        if case is None:
            openings.append((n, _mail_request(inbound, parsed, sender)))
        else:
            replies.append((n, case, inbound, parsed, sender))
    if len({case.pk for _n, case, *_rest in replies}) > 1:
        # Locked in one order, before any is written to: two batches with replies to the same
        # cases then wait for each other instead of deadlocking.
        list(
            Case.objects.select_for_update()
            .filter(pk__in={case.pk for _n, case, *_rest in replies})
            .order_by("pk")
            .values_list("pk")
        )
    system = system_user()
    for n, case, inbound, parsed, sender in replies:
        try:
            with transaction.atomic():
                results[n] = _mail_to_case(case, inbound, parsed, sender, system)
        except Exception as exc:
            results[n] = exc
    opened = open_cases([request for _n, request in openings], system)
    for (n, _request), result in zip(openings, opened, strict=True):
        results[n] = result[0] if isinstance(result, tuple) else result
    return results  # type: ignore[return-value]


def handle_reply(record: Case, inbound: InboundMessage, parsed: ParsedMessage) -> Case:
    """Mail to a case's reply address, or answering a message we sent or received for it.

    Also how an admin files a quarantined message into a case by hand; one without a readable
    From then joins the case as an internal message for the agent to judge.
    """
    sender = (parsed.from_address or "").strip().lower()
    return _mail_to_case(record, inbound, parsed, sender)


def case_by_reference(text: str, sender: str = "") -> Case | None:
    """The case a tracking number in ``text`` names; with several, the sender's own, newest.

    A follow-up of a closed case carries both numbers in its subject; the newest is the one the
    conversation continues in.
    """
    numbers = _tracking_numbers(text)
    if not numbers:
        return None
    cases = {c.tracking_number: c for c in Case.objects.filter(tracking_number__in=numbers)}
    return _case_among(numbers, cases, sender)


def _tracking_numbers(text: str) -> list[str]:
    """The tracking numbers in ``text``, each once, the first 20."""
    return list(dict.fromkeys(m.upper() for m in TRACKING_NUMBER.findall(text or "")))[:20]


def _case_among(numbers: list[str], cases: dict[str, Case], sender: str) -> Case | None:
    """Of the cases ``numbers`` name, the sender's own, newest."""
    named = [cases[number] for number in numbers if number in cases]
    if not named:
        return None
    return max(named, key=lambda c: (c.requester_email == sender, c.pk))


def resolve_reference(text: str) -> Case | None:
    """For the mail layer's quarantine: the case "CS-2026-000123" names, or ``None``."""
    match = TRACKING_NUMBER.search((text or "").strip().upper())
    if match is None:
        return None
    return Case.objects.filter(tracking_number=match.group()).first()


def _sender(parsed: ParsedMessage) -> str:
    sender = (parsed.from_address or "").strip().lower()
    if not sender:
        raise ValidationFailed(
            {"from": [_("The message has no readable From address.")]},
            detail="No readable From address; the envelope sender is not trusted for replies.",
        )
    return sender


def _mail_to_case(
    case: Case,
    inbound: InboundMessage,
    parsed: ParsedMessage,
    sender: str,
    system: User | None = None,
) -> Case:
    """The mail's place on ``case``; run in a savepoint of the caller's (the mail layer runs
    every handler in one)."""
    case = final_case(case)
    if not sender or sender != case.requester_email.lower():
        _foreign_message(case, inbound, parsed, sender)
        return case
    if case.status == Case.Status.CLOSED:
        new_case, _key = _open_from_mail(inbound, parsed, sender, follows=case)
        return new_case
    body = _limited(parsed.text)
    if not body.strip() and not parsed.attachments:
        body = one_line(parsed.subject) or "-"
    _customer_message(
        case,
        body=body,
        attachments=parsed.attachments,
        via=Case.Channel.EMAIL,
        html=parsed.html,
        inbound=inbound,
        system=system,
    )
    return case


def _foreign_message(
    case: Case, inbound: InboundMessage, parsed: ParsedMessage, sender: str
) -> None:
    """Someone other than the requester wrote about the case: for the agent's eyes only."""
    with transaction.atomic():
        case = _locked(case)
        event = CaseEvent.objects.create(
            case=case,
            kind=CaseEvent.Kind.CUSTOMER_MESSAGE,
            public=False,
            at=clock.now(),
            actor=system_user(),
            author=one_line(parsed.from_name)[:200] or sender or "?",
            body=_limited(parsed.text),
            html=parsed.html or "",
            data={
                "via": Case.Channel.EMAIL,
                "from": sender,
                "subject": one_line(parsed.subject)[:300],
                "flag": "foreign_sender" if sender else "no_sender",
            },
            inbound=inbound,
        )
        _save_attachments(case, event, list(parsed.attachments), public=False)
        case.updated_at = event.at
        case.save(update_fields=["updated_at"])
        events.emit("case.foreign_message", id=case.pk, event_id=event.pk)


def _open_from_mail(
    inbound: InboundMessage, parsed: ParsedMessage, sender: str, follows: Case | None = None
) -> tuple[Case, str]:
    # The mail layer runs handlers in a savepoint of its own: no second one is needed here.
    with transaction.atomic(savepoint=False):
        case, key = open_case(**_mail_request(inbound, parsed, sender), follows=follows)
        if follows is not None:
            _note_follow_up(follows, case)
    return case, key


def _mail_request(inbound: InboundMessage, parsed: ParsedMessage, sender: str) -> dict[str, Any]:
    """``open_case``'s arguments for a message that opens a case."""
    language = parsed.language if parsed.language in ("en", "ko") else ""
    subject = one_line(parsed.subject)[:MAX_SUBJECT]
    body = _limited(parsed.text)
    if not subject and not body.strip():
        with translation.override(language or "en"):
            subject = _("(no subject)")
    return {
        "channel": Case.Channel.EMAIL,
        "subject": subject,
        "body": body,
        "requester_email": sender,
        "requester_name": one_line(parsed.from_name)[:MAX_NAME],
        "language": language,
        "html": parsed.html,
        "attachments": parsed.attachments,
        "inbound": inbound,
        # The mail layer keeps automated mail away from us; should one slip through, an
        # acknowledgement to an auto-responder could start a loop.
        "send_acknowledgement": not parsed.automated,
    }


def _note_follow_up(old: Case, new: Case) -> None:
    actor = system_user()
    now = clock.now()
    CaseEvent.objects.create(
        case=old,
        kind=CaseEvent.Kind.NOTE,
        public=False,
        at=now,
        actor=actor,
        body=_("The customer wrote again after this case was closed: %(number)s.")
        % {"number": new.tracking_number},
        data={"follow_up": new.tracking_number},
    )
    CaseEvent.objects.create(
        case=new,
        kind=CaseEvent.Kind.NOTE,
        public=False,
        at=now,
        actor=actor,
        body=_("Follow-up to the closed case %(number)s.") % {"number": old.tracking_number},
        data={"follows": old.tracking_number},
    )


def _limited(text: str) -> str:
    text = (text or "").strip()
    return text[:MAX_BODY]
