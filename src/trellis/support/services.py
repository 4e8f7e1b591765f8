"""Every write an agent makes to a support case. The agent UI and the API both come through here.

Each function takes the actor first and the case by id, and:

- finds the case through ``core.visibility`` (a case the actor may not see is ``NotFound``; one
  they see but may not change is ``PermissionDenied``) and locks its row for the transaction;
- checks the input (``ValidationFailed`` with field errors) and the case's state (``Conflict``),
  and with a ``version`` refuses a stale edit (``StaleVersion``), so bad input changes nothing;
- writes in one transaction, bumps the case's ``version``, records the audit row and emits
  ``case.<what>`` after commit;
- puts what happened on the case's timeline: public events for what the customer should see
  (status changes, replies, merges and splits) and internal ones for the rest (hand-offs,
  notes, classification), and e-mails the customer through ``notify``.

The customer's contact point is always the support address: a change of owner is an internal
event and sends nothing.
"""

import secrets
from collections.abc import Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils.translation import gettext as _

from trellis.core import audit, clock, events, numbering, records
from trellis.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from trellis.core.models import AuditEvent, Team, User, hash_token
from trellis.core.visibility import can, visible
from trellis.crm.models import Account, Contact, Product
from trellis.mail.models import InboundMessage, MessageLink

from . import billing, contracts, intake, notify, triage
from .models import Case, CaseAttachment, CaseEvent, Feature

Status = Case.Status
Kind = Case.Kind

MAX_REPLY = 50_000
MAX_NOTE = 20_000
MAX_SUBJECT = Case._meta.get_field("subject").max_length
MAX_FEATURE_TITLE = Feature._meta.get_field("title").max_length

# Where each status may go. A case never goes back to "new"; a closed one only reopens.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.NEW: frozenset(
        {
            Status.OPEN,
            Status.WAITING_ON_CUSTOMER,
            Status.IN_PROGRESS,
            Status.RESOLVED,
            Status.CLOSED,
        }
    ),
    Status.OPEN: frozenset(
        {Status.WAITING_ON_CUSTOMER, Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED}
    ),
    Status.WAITING_ON_CUSTOMER: frozenset(
        {Status.OPEN, Status.IN_PROGRESS, Status.RESOLVED, Status.CLOSED}
    ),
    Status.IN_PROGRESS: frozenset(
        {Status.OPEN, Status.WAITING_ON_CUSTOMER, Status.RESOLVED, Status.CLOSED}
    ),
    Status.RESOLVED: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset({Status.OPEN}),
}
# The classes an agent may give; "not classified" is only where a case starts.
KINDS = tuple(kind for kind in Kind.values if kind != Kind.UNCLASSIFIED)


def _describe(case: Case) -> str:
    return f"{case.tracking_number} {case.subject}"


# Plain edits of a case's own fields, with the generic record service.
CASE = records.RecordSpec(
    model=Case,
    fields=("subject", "priority", "product", "contact", "account"),
    describe=_describe,
)


def edit(actor: User, case_id: int, data: dict[str, Any], *, version: int | None) -> Case:
    """Change subject, priority, product, contact or account, if still at ``version``.

    What changed goes on the timeline as an internal entry; the customer is not told.
    """
    case_id = _int(case_id)
    with transaction.atomic():
        before = visible(actor, Case).filter(pk=case_id).first()
        case = records.update(actor, CASE, case_id, data, version)
        changes = {
            name: [_label(getattr(before, name)), _label(getattr(case, name))]
            for name in CASE.fields
            if getattr(before, name) != getattr(case, name)
        }
        if changes:
            _event(case, CaseEvent.Kind.EDITED, actor, data={"changes": changes})
        if changes.keys() & {"product", "contact", "account"}:
            contracts.link_case(case, actor)
    return case


def _label(value: Any) -> Any:
    """A value as the timeline shows it later, even after the related record is renamed."""
    return str(value) if isinstance(value, models.Model) else value


# Finding and locking.


def _int(value: Any, field: str | None = None) -> int:
    """An id from a caller; a bad one is a field error, or (for the case itself) not found."""
    try:
        number = int(value)
        if number < 1:
            raise ValueError
        return number
    except (TypeError, ValueError):
        if field is None:
            raise NotFound(_("No such case.")) from None
        raise ValidationFailed({field: [_("Give the id of an existing record.")]}) from None


def _lock(actor: User, case_id: Any, version: int | None = None) -> Case:
    """The case, locked for this transaction, if the actor may see and change it."""
    case_id = _int(case_id)
    if version is not None:
        return records.lock_for_edit(actor, CASE, case_id, version)
    case = visible(actor, Case).select_for_update(of=("self",)).filter(pk=case_id).first()
    if case is None:
        raise NotFound(_("No such case."))
    if not can(actor, "edit", "case"):
        raise PermissionDenied(_("You may not change cases."))
    return case


def lock_case(actor: User, case_id: Any, version: int | None = None) -> Case:
    """The case, locked for a write by ``actor``: for the other modules that write to cases."""
    return _lock(actor, case_id, version)


def not_merged(case: Case) -> None:
    """``Conflict`` for a case that was merged into another."""
    _not_merged(case)


def _not_merged(case: Case) -> None:
    if case.merged_into_id is not None:
        into = Case.objects.filter(pk=case.merged_into_id).values_list("tracking_number").first()
        raise Conflict(
            _("This case was merged into %(number)s; work on that one.")
            % {"number": into[0] if into else "?"}
        )


# Writing.


def _save(case: Case, *fields: str) -> None:
    records.mark_changed(case)
    case.save(update_fields=[*dict.fromkeys(fields), "version", "updated_at"])


def _event(
    case: Case,
    kind: str,
    actor: User | None,
    *,
    public: bool = False,
    body: str = "",
    author: str = "",
    data: dict[str, Any] | None = None,
    at: Any = None,
) -> CaseEvent:
    return CaseEvent.objects.create(
        case=case,
        kind=kind,
        public=public,
        at=at or clock.now(),
        actor=actor,
        author=author,
        body=body,
        data=data or {},
    )


def _audit(actor: User, case: Case, changes: dict[str, list[Any]]) -> None:
    audit.record(actor, case, AuditEvent.Action.UPDATED, changes, _describe(case))


def _agent_name(actor: User) -> str:
    """What the customer may read of an agent: the first name only."""
    return actor.first_name.strip()


# Status.


def _checked_status(status: Any, errors: dict[str, list[str]]) -> str | None:
    if status not in Status.values:
        errors["status"] = [_("Unknown status.")]
        return None
    return status


def _check_transition(case: Case, new: str) -> None:
    if new not in TRANSITIONS[case.status]:
        raise ValidationFailed(
            {
                "status": [
                    _("A case that is %(old)s cannot become %(new)s.")
                    % {"old": Status(case.status).label, "new": Status(new).label}
                ]
            }
        )


def _apply_status(case: Case, new: str) -> str:
    """Set the status and the resolution time; returns the old status. Not saved here."""
    old = case.status
    case.status = new
    if new == Status.RESOLVED or (new == Status.CLOSED and case.resolved_at is None):
        # Closing without resolving still ends the work: resolution time counts to here.
        case.resolved_at = clock.now()
    elif new != Status.CLOSED:
        case.resolved_at = None
    return old


def _status_event(
    actor: User, case: Case, old: str, new: str, *, tell_customer: bool = True
) -> CaseEvent:
    event = _event(case, CaseEvent.Kind.STATUS, actor, public=True, data={"from": old, "to": new})
    if tell_customer:
        notify.status_changed(case, old, new)
    return event


def set_status(actor: User, case_id: int, status: str, *, version: int | None = None) -> Case:
    """Move a case to ``status`` along ``TRANSITIONS``; the customer sees and is told of it.

    Resolving sets ``resolved_at``; reopening clears it. The same status again changes nothing.
    """
    with transaction.atomic():
        case = _lock(actor, case_id, version)
        errors: dict[str, list[str]] = {}
        status = _checked_status(status, errors)
        if errors:
            raise ValidationFailed(errors)
        if status == case.status:
            return case
        _not_merged(case)
        _check_transition(case, status)
        old = _apply_status(case, status)
        _save(case, "status", "resolved_at")
        _status_event(actor, case, old, status)
        billing.charge_resolved(actor, case)
        _audit(actor, case, {"status": [old, status]})
        events.emit("case.status_changed", id=case.pk, actor_id=actor.pk, old=old, new=status)
    return case


# Ownership.


def _assigned_event(
    actor: User | None,
    case: Case,
    *,
    previous_owner_id: int | None,
    via: str,
    note: str = "",
    at: Any = None,
) -> CaseEvent:
    return _event(
        case,
        CaseEvent.Kind.ASSIGNED,
        actor,
        public=False,
        body=note,
        at=at,
        data={
            "owner": case.owner_id,
            "owner_name": str(case.owner) if case.owner_id else "",
            "team": case.team_id,
            "team_name": str(case.team) if case.team_id else "",
            "previous_owner": previous_owner_id,
            "via": via,
        },
    )


def _taken_by(case_id: int) -> str:
    owner = Case.objects.filter(pk=case_id).select_related("owner").first()
    name = str(owner.owner) if owner is not None and owner.owner_id else "?"
    return _("%(name)s has already taken this case.") % {"name": name}


def _take(actor: User, case: Case) -> None:
    """Make ``actor`` the owner of the unowned ``case``; ``Conflict`` if someone was faster.

    The row is locked already; the ``owner IS NULL`` condition makes sure of it even so: of
    two agents taking the same case at once, exactly one gets it.
    """
    if not Case.objects.filter(pk=case.pk, owner__isnull=True).update(owner=actor):
        raise Conflict(_taken_by(case.pk))
    case.owner = actor
    if case.team_id is None and actor.team_id is not None:
        case.team_id = actor.team_id


def claim(actor: User, case_id: int) -> Case:
    """Take a case from the queue. Exactly one agent gets it; the other gets ``Conflict``.

    A new case becomes open, which the customer sees as "assigned to the support team" (no
    agent is named). Claiming one's own case again changes nothing.
    """
    with transaction.atomic():
        case = _lock(actor, case_id)
        if case.owner_id == actor.pk:
            return case
        _not_merged(case)
        if case.owner_id is not None:
            raise Conflict(_taken_by(case.pk))
        if case.status == Status.CLOSED:
            raise Conflict(_("This case is closed."))
        team_before = case.team_id
        _take(actor, case)
        old = _apply_status(case, Status.OPEN) if case.status == Status.NEW else None
        _save(case, "owner", "team", "status", "resolved_at")
        _assigned_event(actor, case, previous_owner_id=None, via="claim")
        changes: dict[str, list[Any]] = {"owner": [None, actor.pk]}
        if case.team_id != team_before:
            changes["team"] = [team_before, case.team_id]
        if old is not None:
            _status_event(actor, case, old, case.status)
            changes["status"] = [old, case.status]
        _audit(actor, case, changes)
        events.emit("case.claimed", id=case.pk, actor_id=actor.pk, owner_id=actor.pk)
    return case


def assign(
    actor: User,
    case_id: int,
    *,
    user_id: int | None = None,
    team_id: int | None = None,
    note: str = "",
    version: int | None = None,
) -> Case:
    """Hand a case to an agent (``user_id``) or to a team's queue (``team_id`` alone).

    Given a user, the team is ``team_id`` if given, else the user's team. The hand-off ``note``
    is internal. The customer sees no change of contact: a reassignment is an internal event
    and sends nothing. Only the first assignment of a new case shows them, as "assigned to the
    support team".
    """
    note = (note or "").strip()
    with transaction.atomic():
        case = _lock(actor, case_id, version)
        errors: dict[str, list[str]] = {}
        user = team = None
        if user_id in (None, "") and team_id in (None, ""):
            errors["user_id"] = [_("Choose an agent or a team.")]
        if user_id not in (None, ""):
            user = User.objects.filter(pk=_int(user_id, "user_id"), is_active=True).first()
            if user is None:
                errors["user_id"] = [_("No such user.")]
            elif not can(user, "edit", "case"):
                errors["user_id"] = [_("%(name)s may not work on cases.") % {"name": user}]
        if team_id not in (None, ""):
            team = Team.objects.filter(pk=_int(team_id, "team_id")).first()
            if team is None:
                errors["team_id"] = [_("No such team.")]
        if len(note) > MAX_NOTE:
            errors["note"] = [_("At most %(n)d characters.") % {"n": MAX_NOTE}]
        if errors:
            raise ValidationFailed(errors)
        _not_merged(case)
        if team is not None:
            new_team_id = team.pk
        elif user is not None and user.team_id is not None:
            new_team_id = user.team_id
        else:
            new_team_id = case.team_id
        new_owner_id = user.pk if user is not None else None
        if (case.owner_id, case.team_id) == (new_owner_id, new_team_id) and not note:
            return case
        before = {"owner": case.owner_id, "team": case.team_id}
        case.owner = user
        case.team_id = new_team_id
        old = None
        if user is not None and case.status == Status.NEW:
            old = _apply_status(case, Status.OPEN)
        _save(case, "owner", "team", "status", "resolved_at")
        _assigned_event(actor, case, previous_owner_id=before["owner"], via="assign", note=note)
        changes = audit.diff(before, {"owner": case.owner_id, "team": case.team_id})
        if old is not None:
            _status_event(actor, case, old, case.status)
            changes["status"] = [old, case.status]
        _audit(actor, case, changes)
        events.emit(
            "case.assigned",
            id=case.pk,
            actor_id=actor.pk,
            owner_id=case.owner_id,
            team_id=case.team_id,
            via="assign",
        )
    return case


# Triage.


def _feature_for(
    actor: User, case: Case, feature_id: Any, title: str, errors: dict[str, list[str]]
) -> Feature | None:
    """The feature asked for: by id, or found (any letter case) or created by title."""
    if feature_id not in (None, ""):
        feature = Feature.objects.filter(pk=_int(feature_id, "feature_id")).first()
        if feature is None:
            errors["feature_id"] = [_("No such feature.")]
        return feature
    title = " ".join((title or "").split())
    if not title:
        errors["feature_title"] = [_("Name the feature the customer asks for.")]
        return None
    if len(title) > MAX_FEATURE_TITLE:
        errors["feature_title"] = [_("At most %(n)d characters.") % {"n": MAX_FEATURE_TITLE}]
        return None
    feature = Feature.objects.filter(title__iexact=title).order_by("pk").first()
    if feature is not None:
        return feature
    try:
        with transaction.atomic():
            feature = Feature.objects.create(title=title, product=case.product)
    except IntegrityError:
        # Created by someone else between our look-up and our insert.
        return Feature.objects.get(title=title)
    audit.record(actor, feature, AuditEvent.Action.CREATED, {"title": title}, title)
    return feature


def classify(
    actor: User,
    case_id: int,
    kind: str,
    *,
    feature_title: str = "",
    feature_id: int | None = None,
) -> Case:
    """Give a case its class (``KINDS``). A feature request needs the feature it asks for.

    A feature request leaves the defect queue, is counted on the product-feedback list under
    its ``Feature`` (``feature_id``, or found or created by ``feature_title``), and the
    customer is told so by e-mail and on the status page. Other classes are internal.
    """
    with transaction.atomic():
        case = _lock(actor, case_id)
        errors: dict[str, list[str]] = {}
        feature = None
        if kind not in KINDS:
            errors["kind"] = [_("Unknown class.")]
        elif kind == Kind.FEATURE_REQUEST:
            feature = _feature_for(actor, case, feature_id, feature_title, errors)
        if errors:
            raise ValidationFailed(errors)
        _not_merged(case)
        new_feature_id = feature.pk if feature is not None else None
        if case.kind == kind and case.feature_id == new_feature_id:
            return case
        before = {"kind": case.kind, "feature": case.feature_id}
        logged = kind == Kind.FEATURE_REQUEST and case.kind != Kind.FEATURE_REQUEST
        case.kind = kind
        case.feature = feature
        _save(case, "kind", "feature")
        _event(
            case,
            CaseEvent.Kind.CLASSIFIED,
            actor,
            public=logged,
            data={
                "from": before["kind"],
                "to": kind,
                "feature": new_feature_id,
                "feature_title": feature.title if feature is not None else "",
            },
        )
        if logged:
            notify.feature_logged(case)
        _audit(actor, case, audit.diff(before, {"kind": kind, "feature": new_feature_id}))
        events.emit(
            "case.classified", id=case.pk, actor_id=actor.pk, kind=kind, feature_id=new_feature_id
        )
    return case


# Conversation.


def _checked_text(value: Any, field: str, limit: int, empty: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise ValidationFailed({field: [empty]})
    if len(text) > limit:
        raise ValidationFailed({field: [_("At most %(n)d characters.") % {"n": limit}]})
    return text


def reply(actor: User, case_id: int, body: str, *, status: str | None = None) -> CaseEvent:
    """A public reply, e-mailed to the customer (``notify.agent_reply``) with the thread quoted.

    The first reply sets ``first_response_at``. An unowned case becomes the replying agent's;
    a new one becomes open. ``status`` moves the case in the same step (e.g. waiting on the
    customer): the status event is public, and the reply e-mail is the only e-mail sent (the
    case already has its new status when ``notify.agent_reply`` runs).
    """
    with transaction.atomic():
        case = _lock(actor, case_id)
        errors: dict[str, list[str]] = {}
        status = _checked_status(status, errors) if status not in (None, "") else None
        try:
            body = _checked_text(body, "body", MAX_REPLY, _("Write a reply."))
        except ValidationFailed as failure:
            errors.update(failure.errors)
        if errors:
            raise ValidationFailed(errors)
        _not_merged(case)
        if case.status == Status.CLOSED and status != Status.OPEN:
            # The customer's answer to a closed case would open a new one; reopen it first.
            raise Conflict(_("This case is closed. Reopen it to reply."))
        target = status or (Status.OPEN if case.status == Status.NEW else None)
        if target == case.status:
            target = None
        if target is not None:
            _check_transition(case, target)
        before = {"owner": case.owner_id, "team": case.team_id, "status": case.status}
        took = case.owner_id is None
        if took:
            _take(actor, case)
        fields = ["owner", "team"]
        now = clock.now()
        if case.first_response_at is None:
            case.first_response_at = now
            fields.append("first_response_at")
        old = _apply_status(case, target) if target is not None else None
        _save(case, *fields, "status", "resolved_at")
        if took:
            _assigned_event(actor, case, previous_owner_id=None, via="reply", at=now)
        event = _event(
            case,
            CaseEvent.Kind.REPLY,
            actor,
            public=True,
            body=body,
            author=_agent_name(actor),
            at=now,
        )
        if old is not None:
            _status_event(actor, case, old, case.status, tell_customer=False)
            billing.charge_resolved(actor, case)
        notify.agent_reply(case, event)
        changes = audit.diff(
            before, {"owner": case.owner_id, "team": case.team_id, "status": case.status}
        )
        changes["reply"] = [None, event.pk]
        _audit(actor, case, changes)
        events.emit("case.replied", id=case.pk, actor_id=actor.pk, event_id=event.pk)
    return event


def add_note(actor: User, case_id: int, body: str) -> CaseEvent:
    """An internal note on the timeline; the customer never sees it. The version stays."""
    with transaction.atomic():
        case = _lock(actor, case_id)
        body = _checked_text(body, "body", MAX_NOTE, _("Write a note."))
        event = _event(case, CaseEvent.Kind.NOTE, actor, body=body, author=str(actor))
        _audit(actor, case, {"note": [None, event.pk]})
        events.emit("case.noted", id=case.pk, actor_id=actor.pk, event_id=event.pk)
    return event


def log_phone_call(
    actor: User,
    *,
    requester_email: str,
    requester_name: str = "",
    subject: str,
    body: str,
    contact_id: int | None = None,
    product_id: int | None = None,
) -> Case:
    """A case from a customer's phone call, opened through the intake like any other.

    With ``contact_id`` the case is that contact's, and their e-mail and name fill in what is
    not given. The case's timeline gets an internal "phone call" event naming who took it.
    """
    if not can(actor, "create", "case"):
        raise PermissionDenied(_("You may not create cases."))
    errors: dict[str, list[str]] = {}
    contact = product = None
    if contact_id not in (None, ""):
        contact = visible(actor, Contact).filter(pk=_int(contact_id, "contact_id")).first()
        if contact is None:
            errors["contact_id"] = [_("No such record: %(id)s.") % {"id": contact_id}]
    if product_id not in (None, ""):
        product = visible(actor, Product).filter(pk=_int(product_id, "product_id")).first()
        if product is None:
            errors["product_id"] = [_("No such record: %(id)s.") % {"id": product_id}]
    if errors:
        raise ValidationFailed(errors)
    if contact is not None:
        requester_email = requester_email or contact.email
        requester_name = requester_name or contact.name
    with transaction.atomic():
        try:
            case, _key = intake.open_case(
                channel=Case.Channel.PHONE,
                subject=subject,
                body=body,
                requester_email=requester_email,
                requester_name=requester_name,
                product=product,
                actor=actor,
            )
        except ValidationFailed as failure:
            failure.errors = {
                ("product_id" if k == "product" else k): v for k, v in failure.errors.items()
            }
            raise
        if contact is not None and case.contact_id != contact.pk:
            case.contact = contact
            account = visible(actor, Account).filter(contacts=contact).order_by("pk").first()
            fields = ["contact"]
            if account is not None and case.account_id is None:
                case.account = account
                fields.append("account")
            case.save(update_fields=fields)
            contracts.link_case(case, actor)
        _event(
            case,
            CaseEvent.Kind.PHONE_CALL,
            actor,
            author=str(actor),
            data={"contact": case.contact_id, "taken_by": actor.pk},
        )
        events.emit("case.phone_call_logged", id=case.pk, actor_id=actor.pk)
    return case


# Merging and splitting.


def _same_customer(a: Case, b: Case) -> bool:
    if a.contact_id is not None and a.contact_id == b.contact_id:
        return True
    return a.requester_email.casefold() == b.requester_email.casefold()


def merge(actor: User, source_id: int, target_id: int) -> Case:
    """Merge a duplicate (``source``) into ``target``, from the same customer; returns target.

    Both histories are kept: the source's events are copied into the target's timeline (at
    their own times, marked with the source's tracking number), and the source keeps its own.
    The source is closed with ``merged_into`` set, so later mail to its number lands in the
    target; cases merged into the source before now point at the target. Both timelines get a
    public "merged" event; no e-mail is sent.
    """
    source_id = _int(source_id)
    target_id = _int(target_id, "target_id")
    with transaction.atomic():
        # Both rows locked in id order, so two merges of the same pair cannot deadlock.
        locked = {
            case.pk: case
            for case in visible(actor, Case)
            .select_for_update(of=("self",))
            .filter(pk__in={source_id, target_id})
            .order_by("pk")
        }
        source = locked.get(source_id)
        if source is None:
            raise NotFound(_("No such case."))
        if not can(actor, "edit", "case"):
            raise PermissionDenied(_("You may not change cases."))
        target = locked.get(target_id)
        if target_id == source_id:
            raise ValidationFailed({"target_id": [_("A case cannot be merged into itself.")]})
        if target is None:
            raise ValidationFailed({"target_id": [_("No such case.")]})
        _not_merged(source)
        if target.merged_into_id is not None:
            raise ValidationFailed(
                {"target_id": [_("That case was itself merged; merge into the one it went to.")]}
            )
        if not _same_customer(source, target):
            raise ValidationFailed(
                {"target_id": [_("Only cases from the same customer can be merged.")]}
            )
        copied = _copy_history(source, target)
        old_status = source.status
        source.merged_into = target
        _apply_status(source, Status.CLOSED)
        _save(source, "merged_into", "status", "resolved_at")
        billing.charge_resolved(actor, source)
        Case.objects.filter(merged_into=source).update(merged_into=target)
        _event(
            source,
            CaseEvent.Kind.MERGED,
            actor,
            public=True,
            data={"into": target.tracking_number, "into_id": target.pk, "from": old_status},
        )
        _save(target)
        _event(
            target,
            CaseEvent.Kind.MERGED,
            actor,
            public=True,
            data={"merged": source.tracking_number, "merged_id": source.pk, "events": copied},
        )
        _audit(
            actor,
            source,
            {"merged_into": [None, target.pk], "status": [old_status, Status.CLOSED]},
        )
        _audit(actor, target, {"merged": [None, source.pk]})
        events.emit("case.merged", id=source.pk, actor_id=actor.pk, into_id=target.pk)
    return target


_SOURCE_ONLY_KINDS = frozenset({CaseEvent.Kind.STATUS, CaseEvent.Kind.RECEIVED})


def _copy_history(source: Case, target: Case) -> int:
    """Copy the source's events and their attachments into the target; returns how many."""
    originals = list(CaseEvent.objects.filter(case=source).order_by("at", "id"))
    copies = [
        CaseEvent(
            case=target,
            kind=event.kind,
            # The customer keeps seeing the messages of both cases, but not the duplicate's
            # status changes: on the kept case's page they would contradict its own status.
            public=event.public and event.kind not in _SOURCE_ONLY_KINDS,
            at=event.at,
            actor_id=event.actor_id,
            author=event.author,
            body=event.body,
            html=event.html,
            data={**event.data, "merged_from": source.tracking_number, "copy_of": event.pk},
            inbound_id=event.inbound_id,
            outbound_id=event.outbound_id,
        )
        for event in originals
    ]
    CaseEvent.objects.bulk_create(copies)
    copy_of = {original.pk: copy.pk for original, copy in zip(originals, copies, strict=True)}
    # One at a time: attachments can be megabytes each.
    for attachment in CaseAttachment.objects.filter(case=source).order_by("id").iterator(1):
        attachment.pk = None
        attachment.case = target
        attachment.event_id = copy_of.get(attachment.event_id)
        attachment.save(force_insert=True)
    return len(copies)


def split(actor: User, case_id: int, event_ids: Iterable[int], *, subject: str) -> Case:
    """Move some of the customer's messages into a new case of their own; returns it.

    The new case has a new tracking number, the same customer, owner and team, and
    ``split_from`` the old case; the chosen messages (with their attachments) move to it, and
    replies to them follow. Both timelines say so in a public event. The customer gets the
    new case's acknowledgement with its own access key.
    """
    with transaction.atomic():
        source = _lock(actor, case_id)
        if not can(actor, "create", "case"):
            raise PermissionDenied(_("You may not create cases."))
        errors: dict[str, list[str]] = {}
        subject = " ".join((subject or "").split()) if isinstance(subject, str) else ""
        if not subject:
            errors["subject"] = [_("Give the new case a subject.")]
        elif len(subject) > MAX_SUBJECT:
            errors["subject"] = [_("At most %(n)d characters.") % {"n": MAX_SUBJECT}]
        try:
            ids = {_int(value, "event_ids") for value in event_ids}
        except TypeError:
            ids = set()
        except ValidationFailed as failure:
            errors.update(failure.errors)
            ids = set()
        if not ids and "event_ids" not in errors:
            errors["event_ids"] = [_("Choose the customer's messages to move.")]
        chosen = list(
            CaseEvent.objects.filter(
                case=source, pk__in=ids, kind=CaseEvent.Kind.CUSTOMER_MESSAGE
            ).order_by("at", "id")
        )
        if ids and len(chosen) != len(ids):
            errors["event_ids"] = [_("Choose only messages from the customer on this case.")]
        if errors:
            raise ValidationFailed(errors)
        _not_merged(source)
        case, access_key = _split_case(actor, source, chosen, subject)
        _event(
            source,
            CaseEvent.Kind.SPLIT,
            actor,
            public=True,
            data={"into": case.tracking_number, "into_id": case.pk, "events": sorted(ids)},
        )
        _save(source)
        _audit(actor, source, {"split_into": [None, case.pk]})
        events.emit("case.split", id=source.pk, actor_id=actor.pk, new_id=case.pk)
        events.emit("case.created", id=case.pk, actor_id=actor.pk, channel=case.channel)
        intake.acknowledge(case, access_key)
    return case


def _split_case(
    actor: User, source: Case, chosen: list[CaseEvent], subject: str
) -> tuple[Case, str]:
    """The new case with the chosen events, and its access key."""
    access_key = secrets.token_urlsafe(24)
    now = clock.now()
    description = chosen[0].body
    case = Case.objects.create(
        tracking_number=numbering.next_number("CS"),
        access_key_hash=hash_token(access_key),
        subject=subject,
        description=description,
        status=Status.OPEN if source.owner_id else Status.NEW,
        suggested_kind=triage.suggest_kind(subject, description) or "",
        channel=source.channel,
        priority=source.priority,
        owner_id=source.owner_id,
        team_id=source.team_id,
        contact_id=source.contact_id,
        account_id=source.account_id,
        product_id=source.product_id,
        requester_email=source.requester_email,
        requester_name=source.requester_name,
        language=source.language,
        split_from=source,
        created_at=now,
        updated_at=now,
    )
    contracts.link_case(case, actor)
    ids = [event.pk for event in chosen]
    CaseEvent.objects.filter(pk__in=ids).update(case=case)
    CaseAttachment.objects.filter(event_id__in=ids).update(case=case)
    # Replies to the moved messages belong with them.
    inbound_ids = [event.inbound_id for event in chosen if event.inbound_id]
    if inbound_ids:
        content_type = ContentType.objects.get_for_model(Case)
        message_ids = list(
            InboundMessage.objects.filter(pk__in=inbound_ids)
            .exclude(message_id="")
            .values_list("message_id", flat=True)
        )
        MessageLink.objects.filter(
            message_id__in=message_ids, content_type=content_type, object_id=source.pk
        ).update(object_id=case.pk)
        InboundMessage.objects.filter(
            pk__in=inbound_ids, content_type=content_type, object_id=source.pk
        ).update(object_id=case.pk)
    _event(
        case,
        CaseEvent.Kind.SPLIT,
        actor,
        public=True,
        data={"from_case": source.tracking_number, "from_id": source.pk, "events": ids},
    )
    audit.record(
        actor,
        case,
        AuditEvent.Action.CREATED,
        {"tracking_number": case.tracking_number, "subject": subject, "split_from": source.pk},
        _describe(case),
    )
    return case, access_key
