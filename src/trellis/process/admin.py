"""Task threads in the Django admin: task types are configured here, tasks are only read.

Tasks change only through ``process.services`` (rights, version check, history, audit, e-mail),
so the admin lists them read-only, as far as the signed-in user may see them. Links for
external participants are listed with their uses; their tokens are never stored.
"""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from trellis.core.admin import ReadOnly, ReadOnlyAdmin

from . import queries
from .models import ExternalLink, ExternalLinkUse, Task, TaskEvent, TaskType


@admin.register(TaskType)
class TaskTypeAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "name_ko", "requires_next_step", "is_active")
    list_editable = ("requires_next_step", "is_active")
    list_filter = ("requires_next_step", "is_active")
    search_fields = ("code", "name", "name_ko")
    fields = ("code", "name", "name_ko", "requires_next_step", "is_active")


class TaskEventInline(ReadOnly, admin.TabularInline):
    model = TaskEvent
    fields = ("at", "kind", "actor", "external_email", "public", "body")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    list_display = (
        "title",
        "status",
        "assignee",
        "due_at",
        "priority",
        "thread",
        "created_at",
    )
    list_filter = ("status", "assignee_kind", "priority", "task_type", "team")
    list_select_related = ("owner", "team", "thread")
    list_per_page = 50
    show_full_result_count = False
    search_fields = ("title", "external_email")
    inlines = [TaskEventInline]

    def get_queryset(self, request):
        return queries.visible_tasks(request.user).select_related(*self.list_select_related)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Task._meta.concrete_fields if field.name != "id"]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    @admin.display(description=_("assignee"))
    def assignee(self, task: Task) -> str:
        return queries.holder(task).name


class ExternalLinkUseInline(ReadOnly, admin.TabularInline):
    model = ExternalLinkUse
    fields = ("at", "action", "outcome", "ip")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(ExternalLink)
class ExternalLinkAdmin(ReadOnlyAdmin):
    list_display = ("email", "task", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("task",)
    search_fields = ("email",)
    fields = (
        "task",
        "email",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "revoked_by",
        "last_used_at",
    )
    readonly_fields = fields
    inlines = [ExternalLinkUseInline]

    def get_queryset(self, request):
        tasks = queries.visible_tasks(request.user).values("pk")
        return super().get_queryset(request).filter(task__in=tasks)
