"""The writes every CRM record shares: create, update with a version check, delete.

Domain services describe a model once with a ``RecordSpec`` and call these functions; each one
checks the actor's rights, validates, writes in one transaction, records the audit event and
emits the domain event on commit.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError
from django.utils.translation import gettext as _

from . import audit, clock, events, registry
from .errors import NotFound, PermissionDenied, ServiceError, StaleVersion, ValidationFailed
from .models import AuditEvent, OwnedRecord, Team, User
from .visibility import can, visible


class InUse(ServiceError):
    status = 409
    title = "In use"


class RecordLocked(InUse, ValidationFailed):
    """A write a guard refuses while the record is locked. Forms show ``detail`` as their
    error; a refused deletion is reported like one of a record still in use."""

    status = 409
    title = "Locked"

    def __init__(self, detail: str) -> None:
        ValidationFailed.__init__(self, {"__all__": [detail]}, detail)


# Called inside the writing transaction with the record as written and the names of the fields
# that changed, or before a deletion with ``None``. A guard raises a ServiceError to refuse the
# write, which rolls the transaction back; it may also write what follows from the change.
# Apps register theirs from ``AppConfig.ready`` (approvals lock a record while a request is
# pending, and reopen approval when an approved record's material field changes).
WriteGuard = Callable[[User, models.Model, frozenset[str] | None], None]
# A guard's form for many records at once (``update_many``): one look-up for all of them.
BatchWriteGuard = Callable[[User, list[tuple[models.Model, frozenset[str]]]], None]
_write_guards: list[WriteGuard] = []
_batch_guards: dict[WriteGuard, BatchWriteGuard] = {}


def register_write_guard(guard: WriteGuard, *, many: BatchWriteGuard | None = None) -> None:
    if guard not in _write_guards:
        _write_guards.append(guard)
    if many is not None:
        _batch_guards[guard] = many


def check_write(actor: User, instance: models.Model, changed: Iterable[str] | None) -> None:
    """Ask every registered guard whether ``actor`` may write this change. Services that
    change a record without ``update`` or ``delete`` call it themselves, inside their
    transaction, after writing."""
    fields = None if changed is None else frozenset(changed)
    for guard in _write_guards:
        guard(actor, instance, fields)


def check_writes(actor: User, changes: list[tuple[models.Model, frozenset[str]]]) -> None:
    """``check_write`` for many changed records, through each guard's batch form if it has
    one."""
    for guard in _write_guards:
        many = _batch_guards.get(guard)
        if many is not None:
            many(actor, changes)
            continue
        for instance, changed in changes:
            guard(actor, instance, changed)


@dataclass(frozen=True)
class RecordSpec:
    model: type[OwnedRecord]
    # Fields a caller may set. Foreign keys may be given as ``name`` or ``name_id``.
    fields: tuple[str, ...]
    m2m: tuple[str, ...] = ()
    # Normalises and checks the instance before it is saved; raises django ValidationError.
    prepare: Callable[[OwnedRecord], None] | None = None
    # Says in a few words what a record is, for the audit summary.
    describe: Callable[[OwnedRecord], str] = str
    audited: tuple[str, ...] = field(default=())

    @property
    def object_type(self) -> str:
        return registry.for_model(self.model).key

    @property
    def audit_fields(self) -> list[str]:
        return list(self.audited or (*self.fields, *self.m2m))


def create(
    actor: User,
    spec: RecordSpec,
    data: Mapping[str, Any],
    preset: Mapping[str, Any] | None = None,
) -> OwnedRecord:
    """Create a record from caller ``data``; ``preset`` holds values the service decided."""
    if not can(actor, "create", spec.object_type):
        raise PermissionDenied(_("You may not create this kind of record."))
    with transaction.atomic():
        instance = spec.model(**(preset or {}))
        m2m_values, input_errors = _assign(actor, spec, instance, data)
        if instance.owner_id is None:
            instance.owner = actor
        if instance.team_id is None and "team" not in data and "team_id" not in data:
            instance.team_id = instance.owner.team_id
        _validate(spec, instance, data, input_errors)
        instance.created_at = instance.updated_at = clock.now()
        _save(instance)
        for name, values in m2m_values.items():
            if values:  # a new record has no links to replace
                getattr(instance, name).add(*values)
        # Links are what was just added: no need to read them back.
        links = {name: _pks(m2m_values.get(name, ())) for name in spec.m2m}
        fields = [name for name in spec.audit_fields if name not in links]
        created = {**audit.snapshot(instance, fields), **links}
        audit.record(
            actor,
            instance,
            AuditEvent.Action.CREATED,
            {name: created[name] for name in spec.audit_fields if created[name]},
            spec.describe(instance),
        )
        events.emit(f"{spec.object_type}.created", id=instance.pk, actor_id=actor.pk)
    return instance


def update(
    actor: User,
    spec: RecordSpec,
    pk: int,
    data: Mapping[str, Any],
    version: int | None,
) -> OwnedRecord:
    """Apply ``data`` if the record is still at ``version``; otherwise raise ``StaleVersion``."""
    with transaction.atomic():
        instance = lock_for_edit(actor, spec, pk, version)
        before = audit.snapshot(instance, spec.audit_fields)
        m2m_values, input_errors = _assign(actor, spec, instance, data)
        for name in m2m_values:
            m2m_values[name] += _hidden_links(actor, instance, name)
        _validate(spec, instance, data, input_errors)
        after_fields = {k: v for k, v in audit.snapshot(instance, spec.audit_fields).items()}
        for name, values in m2m_values.items():
            after_fields[name] = _pks(values)
        changes = audit.diff(before, after_fields)
        if not changes:
            return instance
        mark_changed(instance)
        _save(instance)
        for name, values in m2m_values.items():
            getattr(instance, name).set(values)
        check_write(actor, instance, changes)
        audit.record(actor, instance, AuditEvent.Action.UPDATED, changes, spec.describe(instance))
        _emit_updated(actor, spec, instance, changes)
    return instance


def _emit_updated(
    actor: User, spec: RecordSpec, instance: OwnedRecord, changes: dict[str, list[Any]]
) -> None:
    """``<type>.updated``, with what changed and what it held before (rules compare them)."""
    events.emit(
        f"{spec.object_type}.updated",
        id=instance.pk,
        actor_id=actor.pk,
        changed=sorted(changes),
        before={name: old for name, (old, _new) in changes.items()},
    )


def update_many(
    actor: User,
    spec: RecordSpec,
    items: Sequence[tuple[int, Mapping[str, Any], int | None]],
) -> list[OwnedRecord]:
    """``update`` for many records of one type, ``(pk, data, version)`` each, in one
    transaction with each table written once: for work that changes many records at once
    (the time-rule sweep). Refused as a whole when one item is refused; links (``m2m``) are
    changed through ``update`` only."""
    if not can(actor, "edit", spec.object_type):
        raise PermissionDenied(_("You may not edit this record."))
    if any(name in spec.m2m for _pk, data, _version in items for name in data):
        raise ValueError("links are changed one record at a time: use update()")
    # Read with what the audit labels, so that no row needs a look-up of its own.
    fields = [name for name in spec.audit_fields if name not in spec.m2m]
    related = [name for name in fields if spec.model._meta.get_field(name).is_relation]
    now = clock.now()
    with transaction.atomic():
        locked = {
            record.pk: record
            for record in visible(actor, spec.model)
            .select_related(*related)
            .select_for_update(of=("self",))
            .filter(pk__in=[pk for pk, _data, _version in items])
            .order_by("pk")  # in one order: two calls on the same records do not deadlock
        }
        written: list[tuple[OwnedRecord, dict[str, list[Any]]]] = []
        for pk, data, version in items:
            instance = locked.get(pk)
            if instance is None:
                raise NotFound(_("No such record."))
            if version is not None and instance.version != version:
                raise StaleVersion(instance)
            before = audit.snapshot(instance, fields)
            _links, input_errors = _assign(actor, spec, instance, data)
            _validate(spec, instance, data, input_errors)
            changes = audit.diff(before, audit.snapshot(instance, fields))
            if changes:
                mark_changed(instance)
                instance.updated_at = now
                written.append((instance, changes))
        if not written:
            return list(locked.values())
        try:
            with transaction.atomic():
                _write_changed(spec.model, written, now)
        except IntegrityError as exc:
            raise ValidationFailed(
                {"__all__": [_("This record conflicts with an existing one.")]}
            ) from exc
        check_writes(actor, [(instance, frozenset(changes)) for instance, changes in written])
        AuditEvent.objects.bulk_create(
            audit.entry(
                actor, instance, AuditEvent.Action.UPDATED, changes, spec.describe(instance)
            )
            for instance, changes in written
        )
        for instance, changes in written:
            _emit_updated(actor, spec, instance, changes)
    return [locked[pk] for pk, _data, _version in items]


def _write_changed(
    model: type[OwnedRecord],
    written: list[tuple[OwnedRecord, dict[str, list[Any]]]],
    now: dt.datetime,
) -> None:
    """Save what ``update_many`` changed: one UPDATE per set of new values, which a batch
    from one rule mostly shares (an UPDATE of a value per row by ``CASE`` costs many times
    more to build and to run)."""
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    alone: list[tuple[tuple[tuple[str, Any], ...], list[int]]] = []
    for instance, changes in written:
        values = tuple(
            (attname, getattr(instance, attname))
            for attname in sorted(model._meta.get_field(name).attname for name in changes)
        )
        try:
            groups.setdefault(values, []).append(instance.pk)
        except TypeError:  # a value that cannot be a key (a JSON value) is written alone
            alone.append((values, [instance.pk]))
    for values, pks in [*groups.items(), *alone]:
        model._default_manager.filter(pk__in=pks).update(
            **dict(values), version=models.F("version") + 1, updated_at=now
        )


def delete(actor: User, spec: RecordSpec, pk: int, version: int | None = None) -> None:
    with transaction.atomic():
        instance = _locked(actor, spec, pk)
        if not can(actor, "delete", spec.object_type):
            raise PermissionDenied(_("You may not delete this record."))
        if version is not None and instance.version != version:
            raise StaleVersion(instance)
        check_write(actor, instance, None)
        values = audit.snapshot(instance, spec.audit_fields)
        description = spec.describe(instance)
        try:
            with transaction.atomic():
                instance.delete()
        except ProtectedError as exc:
            kinds = sorted({str(o._meta.verbose_name_plural) for o in exc.protected_objects})
            raise InUse(
                _("Other records still refer to this one: %(kinds)s.") % {"kinds": ", ".join(kinds)}
            ) from exc
        instance.pk = pk
        audit.record(
            actor,
            instance,
            AuditEvent.Action.DELETED,
            {k: v for k, v in values.items() if v},
            description,
        )
        events.emit(f"{spec.object_type}.deleted", id=pk, actor_id=actor.pk)


def lock_for_edit(actor: User, spec: RecordSpec, pk: int, version: int | None) -> OwnedRecord:
    """The record, locked for this transaction, if the actor may edit it and it is still at
    ``version``. Every edit of a record, whatever it changes, starts here."""
    instance = _locked(actor, spec, pk)
    if not can(actor, "edit", spec.object_type):
        raise PermissionDenied(_("You may not edit this record."))
    if version is None:
        raise ValidationFailed({"version": [_("Send the version you edited.")]})
    if instance.version != version:
        raise StaleVersion(instance)
    return instance


def mark_changed(instance: OwnedRecord) -> None:
    """A new version: a client still holding the old one will get 409."""
    instance.version += 1
    instance.updated_at = clock.now()


def _locked(actor: User, spec: RecordSpec, pk: int) -> OwnedRecord:
    instance = visible(actor, spec.model).select_for_update(of=("self",)).filter(pk=pk).first()
    if instance is None:
        raise NotFound(_("No such record."))
    return instance


def _assign(
    actor: User, spec: RecordSpec, instance: OwnedRecord, data: Mapping[str, Any]
) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    """Set the given fields on ``instance``.

    Returns the many-to-many values to set after saving, and the errors met on the way (unknown
    fields, related records that do not exist), which ``_validate`` reports with the rest.
    """
    errors: dict[str, list[str]] = {}
    m2m_values: dict[str, list[Any]] = {}
    for key, value in data.items():
        name = key[:-3] if key.endswith("_id") and key[:-3] in spec.fields else key
        if name in spec.m2m:
            try:
                m2m_values[name] = _related_many(actor, spec.model, name, value)
            except ValidationError as exc:
                errors[key] = exc.messages
            continue
        if name not in spec.fields:
            errors[key] = [_("Unknown field.")]
            continue
        model_field = spec.model._meta.get_field(name)
        if model_field.is_relation:
            try:
                setattr(instance, name, _related_one(actor, model_field, value))
            except ValidationError as exc:
                errors[key] = exc.messages
        else:
            setattr(instance, name, "" if value is None and _is_text(model_field) else value)
    return m2m_values, errors


def _is_text(model_field: models.Field) -> bool:
    return isinstance(model_field, models.CharField | models.TextField) and not model_field.null


def _related_one(actor: User, model_field: models.Field, value: Any) -> models.Model | None:
    """The related object for a foreign key value, looked up through the actor's visibility."""
    if value in (None, ""):
        if model_field.null:
            return None
        raise ValidationError(_("This field is required."))
    target = model_field.related_model
    if isinstance(value, target):
        value = value.pk
    try:
        pk = int(value)
    except (TypeError, ValueError):
        raise ValidationError(_("Give the id of an existing record.")) from None
    if target is User:
        found = User.objects.filter(pk=pk, is_active=True).first()
    elif target is Team:
        found = Team.objects.filter(pk=pk).first()
    else:
        found = visible(actor, target).filter(pk=pk).first()
    if found is None:
        raise ValidationError(_("No such record: %(id)s.") % {"id": pk})
    return found


def _related_many(actor: User, model: type[models.Model], name: str, values: Any) -> list:
    if values is None:
        return []
    if not isinstance(values, Iterable) or isinstance(values, str | bytes):
        raise ValidationError(_("Give a list of ids."))
    target = model._meta.get_field(name).related_model
    ids = {v.pk if isinstance(v, models.Model) else v for v in values}
    try:
        ids = {int(v) for v in ids}
    except (TypeError, ValueError):
        raise ValidationError(_("Give a list of ids.")) from None
    found = list(visible(actor, target).filter(pk__in=ids))
    missing = ids - {o.pk for o in found}
    if missing:
        raise ValidationError(
            _("No such record: %(ids)s.") % {"ids": ", ".join(map(str, sorted(missing)))}
        )
    return found


def _hidden_links(actor: User, instance: OwnedRecord, name: str) -> list[models.Model]:
    """Linked records the actor cannot see. A list of links sent by someone who cannot see all
    of them replaces only the ones they see; the others stay linked."""
    target = instance._meta.get_field(name).related_model
    return list(getattr(instance, name).exclude(pk__in=visible(actor, target).values("pk")))


def _validate(
    spec: RecordSpec,
    instance: OwnedRecord,
    data: Mapping[str, Any],
    input_errors: dict[str, list[str]],
) -> None:
    """Run the model's field checks and the spec's own; report errors under the caller's keys."""
    key_for = {(k[:-3] if k.endswith("_id") else k): k for k in data}
    errors = dict(input_errors)
    if spec.prepare:
        try:
            spec.prepare(instance)
        except ValidationError as exc:
            for name, messages in _message_dict(exc).items():
                errors.setdefault(name, []).extend(messages)
    # Foreign keys were resolved through visibility already; skip Django's second look-up.
    # One left out and still empty is checked here: if it is required, that is a field error.
    exclude = [
        f.name
        for f in spec.model._meta.concrete_fields
        if f.is_relation and (f.name in key_for or getattr(instance, f.attname) is not None)
    ] + list(errors)
    try:
        instance.full_clean(exclude=exclude, validate_constraints=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationFailed({key_for.get(name, name): msgs for name, msgs in errors.items()})


def _message_dict(exc: ValidationError) -> dict[str, list[str]]:
    return exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}


def _pks(values: Iterable[Any]) -> list[Any]:
    return sorted(v.pk if isinstance(v, models.Model) else v for v in values)


def _save(instance: OwnedRecord) -> None:
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        # A unique value taken by a concurrent writer between our check and our insert.
        raise ValidationFailed(
            {"__all__": [_("This record conflicts with an existing one.")]}
        ) from exc
