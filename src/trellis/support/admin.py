"""The support desk in the Django admin: its configuration is edited here, cases are only read.

Assignment rules, reply templates and the product-feedback list's features are configuration,
edited here like teams and roles. Cases change only through ``support.services`` (rights,
version check, timeline, audit, e-mail to the customer), so the admin shows them read-only, as
far as the signed-in user may see them, and links to the agent's case page. A case's access key
hash is never shown.
"""

from django import forms
from django.conf import settings
from django.contrib import admin
from django.db.models import Count
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

from trellis.core.admin import ReadOnly, ReadOnlyAdmin
from trellis.core.visibility import visible

from .models import AssignmentRule, Case, CaseEvent, Feature, ReplyTemplate

_LANGUAGES = [("", _("Any language")), *settings.LANGUAGES]


class AssignmentRuleForm(forms.ModelForm):
    class Meta:
        model = AssignmentRule
        fields = (
            "name",
            "order",
            "is_active",
            "product",
            "account",
            "language",
            "skill_tags",
            "method",
            "team",
            "user",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["language"] = forms.ChoiceField(
            label=_("customer language"), choices=_LANGUAGES, required=False
        )

    def clean(self):
        cleaned = super().clean()
        method = cleaned.get("method")
        if method == AssignmentRule.Method.USER and not cleaned.get("user"):
            self.add_error("user", _("Choose the user this rule hands cases to."))
        if method in (
            AssignmentRule.Method.ROUND_ROBIN,
            AssignmentRule.Method.LEAST_OPEN,
            AssignmentRule.Method.QUEUE,
        ) and not cleaned.get("team"):
            self.add_error("team", _("Choose the team whose agents or queue get the cases."))
        return cleaned


@admin.register(AssignmentRule)
class AssignmentRuleAdmin(admin.ModelAdmin):
    """Tried by order on each new case; the first whose conditions all hold picks the owner."""

    form = AssignmentRuleForm
    list_display = ("name", "order", "is_active", "method", "team", "user", "conditions")
    list_editable = ("order", "is_active")
    list_filter = ("is_active", "method", "team")
    list_select_related = ("team", "user", "product", "account")
    search_fields = ("name", "skill_tags")
    ordering = ("order", "id")
    raw_id_fields = ("product", "account")
    autocomplete_fields = ("user",)
    readonly_fields = ("last_assigned",)
    fieldsets = (
        (None, {"fields": ("name", "order", "is_active")}),
        (
            _("Conditions (empty ones match every case)"),
            {"fields": ("product", "account", "language", "skill_tags")},
        ),
        (_("Who gets the case"), {"fields": ("method", "team", "user", "last_assigned")}),
    )

    @admin.display(description=_("conditions"))
    def conditions(self, rule: AssignmentRule) -> str:
        parts = [
            str(value)
            for value in (rule.product, rule.account, rule.language, rule.skill_tags)
            if value
        ]
        return " · ".join(parts) or str(_("every case"))


@admin.register(ReplyTemplate)
class ReplyTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "language")
    list_filter = ("language",)
    search_fields = ("name", "body")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "language":
            return forms.ChoiceField(label=_("language"), choices=settings.LANGUAGES)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    """The product-feedback list. Cases are linked to a feature by classifying them."""

    list_display = ("title", "status", "product", "case_count", "created_at")
    list_filter = ("status",)
    list_select_related = ("product",)
    search_fields = ("title", "description")
    raw_id_fields = ("product",)
    fields = ("title", "description", "status", "product", "created_at", "case_count")
    readonly_fields = ("created_at", "case_count")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(case_total=Count("cases"))

    @admin.display(description=_("cases"), ordering="case_total")
    def case_count(self, feature: Feature) -> int:
        total = getattr(feature, "case_total", None)
        return feature.cases.count() if total is None else total


class CaseEventInline(ReadOnly, admin.TabularInline):
    model = CaseEvent
    fields = ("at", "kind", "public", "actor", "author", "body")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(Case)
class CaseAdmin(ReadOnlyAdmin):
    list_display = (
        "tracking_number",
        "subject",
        "status",
        "kind",
        "owner",
        "team",
        "requester_email",
        "created_at",
    )
    list_filter = ("status", "kind", "channel", "team")
    list_select_related = ("owner", "team")
    list_per_page = 50
    show_full_result_count = False
    search_fields = ("tracking_number", "subject", "requester_email")
    inlines = [CaseEventInline]

    def get_queryset(self, request):
        return visible(request.user, Case).select_related(*self.list_select_related)

    def get_readonly_fields(self, request, obj=None):
        hidden = {"id", "access_key_hash"}
        return [f.name for f in Case._meta.concrete_fields if f.name not in hidden]

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    def view_on_site(self, case: Case):
        """The case page in the agent UI, where cases are worked on."""
        try:
            return reverse("support:case-detail", kwargs={"pk": case.pk})
        except NoReverseMatch:
            return None
