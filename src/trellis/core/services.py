"""Writes to core data: users, teams, roles and their rights, API tokens."""

import copy
import time

from django.db import transaction
from django.utils.translation import gettext as _

from . import clock, registry
from .errors import NotFound, PermissionDenied
from .models import SYSTEM_USERNAME, ApiToken, Role, RoleRight, Team, User, hash_token
from .visibility import rights_of

DEFAULT_ROLES = {
    Role.ADMIN: "Administrator",
    Role.MANAGER: "Manager",
    Role.SALES: "Sales",
    Role.SUPPORT: "Support",
    Role.MARKETING: "Marketing",
    Role.READ_ONLY: "Read-only",
}


def ensure_default_rights() -> None:
    """Create the built-in roles, and the default rights of every registered object type.

    Rights an admin has changed are left alone: only missing rows are added.
    """
    with transaction.atomic():
        roles = {}
        for code, name in DEFAULT_ROLES.items():
            roles[code], _created = Role.objects.get_or_create(code=code, defaults={"name": name})
        existing = set(RoleRight.objects.values_list("role__code", "object_type"))
        missing = []
        for object_type in registry.all_types():
            for code, (scope, create, edit, delete) in object_type.default_rights.items():
                if (code, object_type.key) in existing or code not in roles:
                    continue
                missing.append(
                    RoleRight(
                        role=roles[code],
                        object_type=object_type.key,
                        scope=scope,
                        can_create=create,
                        can_edit=edit,
                        can_delete=delete,
                    )
                )
        RoleRight.objects.bulk_create(missing)


def system_user() -> User:
    """The actor of writes no person made: mail intake, the sweep, the customer portal.

    An administrator who cannot log in (no usable password), so its writes pass the same
    services and leave the same audit trail as anyone's. A superuser, so that checking its
    rights costs no query.
    """
    user = User.objects.filter(username=SYSTEM_USERNAME).first()
    if user is None:
        with transaction.atomic():
            user, _created = User.objects.get_or_create(
                username=SYSTEM_USERNAME,
                defaults={
                    "first_name": "Trellis",
                    "role": Role.objects.get(code=Role.ADMIN),
                    "is_superuser": True,
                },
            )
            if _created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
    return user


def create_user(
    username: str,
    password: str | None,
    *,
    role: str | None = None,
    team: Team | None = None,
    manager: User | None = None,
    **fields,
) -> User:
    with transaction.atomic():
        user = User(username=username, team=team, manager=manager, **fields)
        if role:
            user.role = Role.objects.get(code=role)
        user.set_password(password) if password else user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
    return user


def create_api_token(actor: User, name: str, user: User | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user`` (default: the actor). The raw key is returned only here."""
    user = user or actor
    if user.pk != actor.pk and not actor.is_superuser:
        raise PermissionDenied(_("Only an administrator may create tokens for someone else."))
    raw = ApiToken.new_raw_key()
    token = ApiToken.objects.create(user=user, name=name[:100], key_hash=hash_token(raw))
    return token, raw


def revoke_api_token(actor: User, token_id: int) -> None:
    tokens = ApiToken.objects.filter(pk=token_id, revoked_at__isnull=True)
    if not actor.is_superuser:
        tokens = tokens.filter(user=actor)
    if not tokens.update(revoked_at=clock.now()):
        raise NotFound(_("No such token."))
    forget_remembered_tokens()


# How stale ``last_used_at`` may get before a request writes it again: one write an hour per
# token instead of one per request.
_LAST_USED_RESOLUTION_SECONDS = 3600

# Who a token belongs to, remembered by each process for a few seconds, so that an API request
# spends no query on finding its caller (or the caller's rights). The price: a token revoked, or
# a user deactivated, in another process keeps working there for at most this long. Revoking in
# this process takes effect at once.
TOKEN_MEMORY_SECONDS = 10
_TOKEN_MEMORY_SIZE = 10_000
_remembered_tokens: dict[str, tuple[float, User]] = {}


def authenticate_token(raw: str) -> User | None:
    if not raw.startswith(ApiToken.PREFIX):
        return None
    key_hash = hash_token(raw)
    remembered = _remembered_tokens.get(key_hash)
    if remembered and remembered[0] > time.monotonic():
        # A copy, so that what one request caches on its user is not seen by another.
        return copy.copy(remembered[1])
    token = (
        ApiToken.objects.select_related("user", "user__role")
        .filter(key_hash=key_hash, revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = clock.now()
    last = token.last_used_at
    if last is None or (now - last).total_seconds() > _LAST_USED_RESOLUTION_SECONDS:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    user = token.user
    rights_of(user)  # loaded once, kept with the remembered user
    if len(_remembered_tokens) >= _TOKEN_MEMORY_SIZE:
        _remembered_tokens.clear()
    _remembered_tokens[key_hash] = (time.monotonic() + TOKEN_MEMORY_SECONDS, user)
    return copy.copy(user)


def forget_remembered_tokens() -> None:
    """Make every token be looked up again (after a change of rights or users)."""
    _remembered_tokens.clear()
