"""CRM records in the Django admin: to look at, never to change.

Every write to a CRM record goes through ``crm.services`` (rights, validation, version check,
audit row, events); the admin would bypass all of that, so it shows records read-only and the
web UI at ``/crm/`` is where people edit them. The rows listed are those the signed-in user may
see (``core.visibility.visible``), as everywhere else.
"""

from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.contenttypes.models import ContentType
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from trellis.core import registry
from trellis.core.admin import ReadOnly, ReadOnlyAdmin
from trellis.core.visibility import visible

from .models import Account, Activity, Contact, Lead, Opportunity, Order, OrderLine, Product


class RecordAdmin(ReadOnlyAdmin):
    list_select_related = ("owner", "team")
    list_per_page = 50
    show_full_result_count = False

    def get_queryset(self, request):
        return visible(request.user, self.model).select_related(*self.list_select_related)

    def get_readonly_fields(self, request, obj=None):
        hidden = {"id", "search_text"}
        fields = [f.name for f in self.model._meta.concrete_fields if f.name not in hidden]
        return [*fields, "history"]

    @admin.display(description=_("history"))
    def history(self, record) -> str:
        content_type = ContentType.objects.get_for_model(type(record))
        query = urlencode({"content_type__id__exact": content_type.pk, "object_id": record.pk})
        url = reverse("admin:core_auditevent_changelist")
        return format_html('<a href="{}?{}">{}</a>', url, query, _("Changes to this record"))

    def view_on_site(self, record):
        """The record's page in the web UI, where it can be edited."""
        name = registry.for_model(type(record)).detail_url_name
        try:
            return reverse(name, kwargs={"pk": record.pk})
        except NoReverseMatch:
            return None


@admin.register(Account)
class AccountAdmin(RecordAdmin):
    list_display = ("name", "business_registration_number", "industry", "owner", "team")
    list_filter = ("industry", "country", "team")
    search_fields = ("search_text", "business_registration_number")


@admin.register(Contact)
class ContactAdmin(RecordAdmin):
    list_display = ("name", "title", "email", "phone", "owner", "team")
    list_filter = ("team",)
    search_fields = ("search_text",)

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "accounts"]


@admin.register(Lead)
class LeadAdmin(RecordAdmin):
    list_display = ("name", "company", "status", "source", "owner", "team")
    list_filter = ("status", "source", "team")
    search_fields = ("search_text",)


@admin.register(Opportunity)
class OpportunityAdmin(RecordAdmin):
    list_display = ("name", "account", "amount", "currency", "status", "expected_close_date")
    list_filter = ("status", "currency", "team")
    list_select_related = ("owner", "team", "account")
    search_fields = ("search_text",)


@admin.register(Product)
class ProductAdmin(RecordAdmin):
    list_display = ("name", "sku", "unit_price", "currency", "is_active")
    list_filter = ("is_active", "currency")
    search_fields = ("name", "sku")


class OrderLineInline(ReadOnly, admin.TabularInline):
    model = OrderLine
    fields = ("product", "quantity", "unit_price", "discount_pct")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Order)
class OrderAdmin(RecordAdmin):
    list_display = ("__str__", "account", "status", "order_date", "total", "currency", "owner")
    list_filter = ("status", "currency", "team")
    list_select_related = ("owner", "team", "account")
    # A number finds the order with that number; words search the account's name.
    search_fields = ("account__name",)
    inlines = [OrderLineInline]

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        return super().get_search_results(request, queryset, search_term)


@admin.register(Activity)
class ActivityAdmin(RecordAdmin):
    list_display = ("subject", "kind", "occurred_at", "content_type", "object_id", "is_voc")
    list_filter = ("kind", "is_voc", "content_type")
    list_select_related = ("owner", "team", "content_type")
    search_fields = ("subject",)
