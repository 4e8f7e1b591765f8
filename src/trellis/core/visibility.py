"""One function decides which records a user may see: ``visible(user, Model)``.

Every list, search, detail page, API response and export starts from it. A record outside the
result is answered with 404, so a user cannot learn that it exists.
"""

from typing import TypeVar

from django.db import models
from django.db.models import Q

from . import registry
from .models import SYSTEM_USERNAME, Role, RoleRight, Scope, User

M = TypeVar("M", bound=models.Model)

ALL_RIGHTS = ("all", True, True, True)


def rights_of(user: User) -> dict[str, tuple[str, bool, bool, bool]]:
    """Object type -> (scope, create, edit, delete), loaded once per user object."""
    cached = getattr(user, "_trellis_rights", None)
    if cached is not None:
        return cached
    if not user.is_authenticated or not user.is_active:
        rights: dict = {}
    elif user.is_superuser:
        rights = _everything()
    elif user.role_id is None:
        rights = {}
    else:
        # The role's code and its rights in one query (a role may have no rights rows).
        rows = Role.objects.filter(pk=user.role_id).values_list(
            "code",
            "rights__object_type",
            "rights__scope",
            "rights__can_create",
            "rights__can_edit",
            "rights__can_delete",
        )
        rights = {}
        for code, object_type, *granted in rows:
            if code == Role.ADMIN:
                rights = _everything()
                break
            if object_type is not None:
                rights[object_type] = tuple(granted)
    user._trellis_rights = rights
    return rights


def _everything() -> dict[str, tuple[str, bool, bool, bool]]:
    return {t.key: ALL_RIGHTS for t in registry.all_types()}


def right(user: User, object_type: str) -> tuple[str, bool, bool, bool]:
    return rights_of(user).get(object_type, (Scope.NONE, False, False, False))


def subordinate_ids(user: User) -> set[int]:
    """The user and everyone who reports to them, at any depth."""
    cached = getattr(user, "_trellis_subordinates", None)
    if cached is not None:
        return cached
    found = {user.pk}
    frontier = {user.pk}
    while frontier:
        frontier = set(
            User.objects.filter(manager_id__in=frontier)
            .exclude(pk__in=found)
            .values_list("pk", flat=True)
        )
        found |= frontier
    user._trellis_subordinates = found
    return found


def scope_filter(user: User, scope: str) -> Q | None:
    """The filter for a scope; ``None`` means every row."""
    if scope == Scope.ALL:
        return None
    if scope == Scope.OWN:
        return Q(owner_id=user.pk)
    if scope == Scope.TEAM:
        if user.team_id is None:
            return Q(owner_id=user.pk)
        return Q(team_id=user.team_id) | Q(owner_id=user.pk)
    if scope == Scope.SUBORDINATES:
        return Q(owner_id__in=subordinate_ids(user))
    return Q(pk__in=[])


def visible(user: User, model: type[M]) -> models.QuerySet[M]:
    object_type = registry.for_model(model)
    scope = right(user, object_type.key)[0]
    queryset = model._default_manager.all()
    if scope == Scope.NONE:
        return queryset.none()
    condition = scope_filter(user, scope)
    return queryset if condition is None else queryset.filter(condition)


def is_admin(user: User | None) -> bool:
    """Superusers and users with the administrator role: they run configuration and mail."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or (user.role_id is not None and user.role.code == Role.ADMIN)


def users_who_may(action: str, object_type: str) -> models.QuerySet[User]:
    """Active people (not the system user) whose role lets them ``action`` this object type,
    e.g. the agents a case can be handed to."""
    granted = RoleRight.objects.filter(object_type=object_type, **{f"can_{action}": True})
    return (
        User.objects.filter(is_active=True)
        .filter(
            Q(is_superuser=True)
            | Q(role__code=Role.ADMIN)
            | Q(role_id__in=granted.values("role_id"))
        )
        .exclude(username=SYSTEM_USERNAME)
    )


def can(user: User, action: str, object_type: str) -> bool:
    """May the user ``create``, ``edit``, ``delete`` or ``view`` records of this type at all."""
    scope, create, edit, delete = right(user, object_type)
    return {
        "view": scope != Scope.NONE,
        "create": create,
        "edit": edit,
        "delete": delete,
    }[action]
