"""The Django admin for core data: users, teams, roles and their rights, API tokens, the audit log.

Users, teams and roles are configuration and are edited here. API tokens and the audit log are
only read here: a token is revoked, never edited, and the audit log is never changed at all.
"""

import json

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import registry, services
from .errors import NotFound
from .models import ApiToken, AuditEvent, Role, RoleRight, Team, User
from .services import DEFAULT_ROLES
from .visibility import subordinate_ids


class ManagerChoiceMixin:
    """Refuses a manager that would make the reporting line a loop."""

    def clean_manager(self):
        manager = self.cleaned_data.get("manager")
        user = self.instance
        if manager is None or user.pk is None:
            return manager
        if manager.pk == user.pk:
            raise forms.ValidationError(_("A user cannot be their own manager."))
        if manager.pk in subordinate_ids(user):
            raise forms.ValidationError(
                _("%(manager)s reports to %(user)s; choose someone outside that reporting line.")
                % {"manager": manager, "user": user}
            )
        return manager


def _language_field(**kwargs) -> forms.ChoiceField:
    return forms.ChoiceField(
        label=_("language"),
        choices=[("", _("Follow the browser")), *settings.LANGUAGES],
        required=False,
        **kwargs,
    )


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        (_("Personal info"), {"fields": ("first_name", "last_name", "email", "language")}),
        (_("Organisation and rights"), {"fields": ("team", "role", "manager")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Important dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "usable_password", "password1", "password2"),
            },
        ),
        (
            _("Organisation and rights"),
            {"classes": ("wide",), "fields": ("email", "team", "role", "manager")},
        ),
    )
    list_display = ("username", "first_name", "last_name", "team", "role", "manager", "is_active")
    list_filter = ("is_active", "role", "team", "is_staff", "is_superuser")
    list_select_related = ("team", "role", "manager")
    search_fields = ("username", "first_name", "last_name", "email")
    autocomplete_fields = ("manager",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        # The reporting-line check runs on the form the admin built for this user.
        return type(form.__name__, (ManagerChoiceMixin, form), {})

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "language":
            return _language_field(help_text=db_field.help_text)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "member_count")
    search_fields = ("name",)

    @admin.display(description=_("members"))
    def member_count(self, team: Team) -> int:
        return team.members.count()


class RoleRightForm(forms.ModelForm):
    class Meta:
        model = RoleRight
        fields = ("object_type", "scope", "can_create", "can_edit", "can_delete")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(t.key, t.label) for t in registry.all_types()]
        current = self.instance.object_type if self.instance.pk else ""
        if current and current not in dict(choices):
            # A type whose app is no longer installed: keep the row editable.
            choices.append((current, current))
        self.fields["object_type"] = forms.ChoiceField(
            label=_("object type"), choices=[("", "---------"), *choices]
        )


class RoleRightInline(admin.TabularInline):
    """One row per object type: which records the role sees, and what it may do with them."""

    model = RoleRight
    form = RoleRightForm
    extra = 0
    # A missing row means "no access", but the defaults of a built-in role are restored on the
    # next upgrade; to take a right away, set the visibility to "none" instead of deleting it.
    can_delete = False

    def get_extra(self, request, obj=None, **kwargs):
        return len(_missing_types(obj))


def _missing_types(role: Role | None) -> list[str]:
    have = set(role.rights.values_list("object_type", flat=True)) if role and role.pk else set()
    return [t.key for t in registry.all_types() if t.key not in have]


@admin.register(Role)
class RoleAdmin(admin.ModelAdmin):
    list_display = ("name", "code", "user_count")
    search_fields = ("name", "code")
    inlines = [RoleRightInline]

    @admin.display(description=_("users"))
    def user_count(self, role: Role) -> int:
        return role.users.count()

    def get_readonly_fields(self, request, obj=None):
        # Code finds the built-in roles by their code; renaming one would orphan it.
        return ("code", "rights_note") if obj else ("rights_note",)

    def get_fields(self, request, obj=None):
        return ("name", "code", "rights_note")

    @admin.display(description=_("rights"))
    def rights_note(self, role: Role) -> str:
        if role and role.code == Role.ADMIN:
            return _("Administrators may see and do everything; this role has no rows to edit.")
        return _(
            "Per object type: which records people with this role see (own, team, own and "
            "subordinates', all, none) and whether they may create, edit and delete them. "
            "A type without a row is not visible at all."
        )

    def get_inlines(self, request, obj):
        if obj is not None and obj.code == Role.ADMIN:
            return []
        return super().get_inlines(request, obj)

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, RoleRightInline):
            # The empty rows offered for types the role has no right on yet start at "none".
            kwargs["initial"] = [
                {"object_type": key, "scope": "none"} for key in _missing_types(obj)
            ]
        return kwargs

    def has_delete_permission(self, request, obj=None):
        # The built-in roles come back with their default rights on the next migrate.
        if obj is not None and obj.code in DEFAULT_ROLES:
            return False
        return super().has_delete_permission(request, obj)


class ReadOnly:
    """For model admins and inlines that show rows without letting anyone change them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):
    pass


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """Tokens are listed and revoked here; the key's hash is never shown."""

    list_display = ("name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("name", "user__username")
    fields = ("name", "user", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_revoke_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    @admin.action(description=_("Revoke the selected tokens"), permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = 0
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                services.revoke_api_token(request.user, token.pk)
            except NotFound:
                continue  # revoked meanwhile
            revoked += 1
        self.message_user(
            request,
            ngettext("%(n)d token revoked.", "%(n)d tokens revoked.", revoked) % {"n": revoked},
            messages.SUCCESS,
        )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The audit log. Filter one record's history with ``?content_type__id__exact=&object_id=``."""

    list_display = ("at", "action", "content_type", "object_id", "summary", "actor")
    list_filter = ("action", "content_type", "at")
    list_select_related = ("actor", "content_type")
    # A number finds the events of the records with that id; words search the summary (the
    # record's name at the time) and who made the change.
    search_fields = ("summary", "actor__username")
    fields = ("at", "action", "content_type", "object_id", "actor", "summary", "changes_table")
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description=_("changes"))
    def changes_table(self, event: AuditEvent) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(event.changes, ensure_ascii=False, indent=2, default=str)
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(object_id=int(term)), False
        return super().get_search_results(request, queryset, search_term)
