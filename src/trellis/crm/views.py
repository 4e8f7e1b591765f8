"""The CRM's web pages: one generic set of views serves all seven record types.

Views translate HTTP into calls and back. Reads go through ``crm.queries`` and writes through
``crm.services``; domain errors become answers here: a hidden record is a 404 (never a 403 that
would confirm it exists), a missing right a 403, a stale edit a 409 showing the current values,
invalid input a 422 with the form and its errors. What differs between record types (form,
columns, fields, the partial beside the fields) is described once per type in ``PAGES``.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from trellis.core import errors, registry
from trellis.core.models import User
from trellis.core.records import InUse
from trellis.core.views import service_view
from trellis.core.visibility import can

from . import forms, queries, services
from .templatetags.crm import label, model_field

# The element a list page's filters refresh, and the search box's dropdown.
RESULTS_TARGET = "record-results"
SEARCH_DROPDOWN_TARGET = "search-dropdown"
# Matches a picker offers per search.
PICK_LIMIT = 20


# What differs between record types.


def _create_record(actor: User, form: forms.RecordForm) -> Any:
    return services.create(actor, form.object_type, form.service_data())


def _create_order(actor: User, form: forms.RecordForm) -> Any:
    return services.create_order(actor, form.service_data())


def _create_activity(actor: User, form: forms.RecordForm) -> Any:
    related_type, related_id = form.cleaned_data["regarding"]
    return services.create_activity(actor, related_type, related_id, form.service_data())


def _attach_regarding(user: User, activities: Iterable[Any]) -> None:
    """Set ``regarding`` on each activity: the record it is about, if the user may see it."""
    activities = list(activities)
    found = queries.regarding(user, activities)
    for activity in activities:
        activity.regarding = found.get(activity.pk)


def _account_extras(request: HttpRequest, account: Any) -> dict[str, Any]:
    return {"related": queries.related_summary(request.user, account)}


def _contact_extras(request: HttpRequest, contact: Any) -> dict[str, Any]:
    return {"accounts": queries.accounts_of(request.user, contact)}


def _order_extras(request: HttpRequest, order: Any) -> dict[str, Any]:
    lines = queries.order_lines(order)
    if can(request.user, "edit", "order"):
        return {"line_formset": forms.order_line_formset(request.user, order, lines)}
    return {"lines": lines}


@dataclass(frozen=True)
class RecordPages:
    """How the web UI shows one object type, and how its create form writes."""

    key: str
    slug: str
    form: type[forms.RecordForm]
    # List columns after the record's name, and the fields on its page.
    columns: tuple[str, ...]
    fields: tuple[str, ...]
    create: Callable[[User, forms.RecordForm], Any] = _create_record
    # Whether the list's search box can search this type (it needs a name or search text).
    searchable: bool = True
    # Adds what a page needs beyond the model's fields, for lists and the detail page.
    annotate: Callable[[User, Iterable[Any]], None] | None = None
    # The partial shown beside the fields, and the context it needs.
    detail_template: str = ""
    detail_extras: Callable[[HttpRequest, Any], dict[str, Any]] | None = None

    @property
    def label(self) -> str:
        return capfirst(registry.get(self.key).label)

    @property
    def noun(self) -> str:
        """The type's name inside a sentence: "New opportunity", not "New Opportunity"."""
        return registry.get(self.key).label

    @property
    def noun_plural(self) -> str:
        return registry.get(self.key).label_plural

    @property
    def label_plural(self) -> str:
        return capfirst(registry.get(self.key).label_plural)

    @property
    def names(self) -> dict[str, str]:
        """URL names of the type's pages, for ``{% url pages.names.edit record.pk %}``."""
        actions = ("list", "create", "validate", "detail", "edit", "delete", "log-activity")
        return {action.replace("-", "_"): f"crm:{self.key}-{action}" for action in actions}

    def url(self, action: str, *args: Any) -> str:
        return reverse(self.names[action], args=args)


PAGES = {
    pages.key: pages
    for pages in [
        RecordPages(
            key="account",
            slug="accounts",
            form=forms.AccountForm,
            columns=("industry", "phone", "email", "owner", "updated_at"),
            fields=(
                "business_registration_number",
                "industry",
                "website",
                "email",
                "phone",
                "address",
                "country",
                "owner",
                "team",
                "description",
            ),
            detail_template="crm/detail/account.html",
            detail_extras=_account_extras,
        ),
        RecordPages(
            key="contact",
            slug="contacts",
            form=forms.ContactForm,
            columns=("title", "email", "phone", "mobile", "owner"),
            fields=("title", "email", "phone", "mobile", "owner", "team", "notes"),
            detail_template="crm/detail/contact.html",
            detail_extras=_contact_extras,
        ),
        RecordPages(
            key="lead",
            slug="leads",
            form=forms.LeadForm,
            columns=("company", "stage", "status", "source", "email", "owner"),
            fields=("company", "status", "source", "email", "phone", "owner", "team", "notes"),
        ),
        RecordPages(
            key="opportunity",
            slug="opportunities",
            form=forms.OpportunityForm,
            columns=("account", "amount", "stage", "probability", "expected_close_date", "owner"),
            fields=(
                "account",
                "contact",
                "amount",
                "probability",
                "expected_close_date",
                "status",
                "owner",
                "team",
                "description",
            ),
        ),
        RecordPages(
            key="product",
            slug="products",
            form=forms.ProductForm,
            columns=("sku", "unit_price", "is_active"),
            fields=("sku", "unit_price", "is_active", "owner", "description"),
        ),
        RecordPages(
            key="order",
            slug="orders",
            form=forms.OrderForm,
            columns=("account", "status", "order_date", "total", "owner"),
            fields=("account", "opportunity", "status", "order_date", "total", "owner", "notes"),
            create=_create_order,
            searchable=False,
            detail_template="crm/detail/order.html",
            detail_extras=_order_extras,
        ),
        RecordPages(
            key="activity",
            slug="activities",
            form=forms.ActivityForm,
            columns=("kind", "regarding", "occurred_at", "is_voc", "owner"),
            fields=("kind", "regarding", "occurred_at", "is_voc", "owner", "body"),
            create=_create_activity,
            searchable=False,
            annotate=_attach_regarding,
        ),
    ]
}


# Shared by every view.


def _require(user: User, action: str, object_type: str) -> None:
    if not can(user, action, object_type):
        raise PermissionDenied(_("You may not do this with this kind of record."))


def _rights(user: User, object_type: str) -> dict[str, bool]:
    return {action: can(user, action, object_type) for action in ("create", "edit", "delete")}


def _page_number(request: HttpRequest) -> int:
    value = request.GET.get("page", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


# Lists.


@service_view
@require_GET
def record_list(request: HttpRequest, object_type: str) -> HttpResponse:
    pages = PAGES[object_type]
    user = request.user
    _require(user, "view", object_type)
    orderings = queries.LISTS[object_type].orderings
    filters = forms.filter_form(object_type, user, request.GET)
    q = request.GET.get("q", "").strip() if pages.searchable else ""
    ordering = request.GET.get("o", "")
    if ordering.removeprefix("-") not in orderings:
        ordering = ""
    page = queries.page(
        user,
        object_type,
        q=q,
        filters=filters.values(),
        ordering=ordering,
        number=_page_number(request),
    )
    if pages.annotate:
        pages.annotate(user, page.items)
    first_column = "name" if "name" in orderings else ""
    context = {
        "pages": pages,
        "page": page,
        "q": q,
        "filters": filters,
        "columns": [
            _column(pages, name, ordering, orderings) for name in (first_column, *pages.columns)
        ],
        "rights": _rights(user, object_type),
        "results_target": RESULTS_TARGET,
    }
    # htmx refreshes only the results as people type or filter; everything else gets the page.
    partial = request.htmx.target == RESULTS_TARGET and not request.htmx.history_restore_request
    template = "crm/_record_results.html" if partial else "crm/record_list.html"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


def _column(
    pages: RecordPages, name: str, ordering: str, orderings: tuple[str, ...]
) -> dict[str, Any]:
    """A list column: its label, and the ordering a click on its heading asks for."""
    model = registry.get(pages.key).model
    field = model_field(model, name)
    column: dict[str, Any] = {
        "name": name,
        "label": label(model, name) if name else pages.label,
        "numeric": isinstance(field, models.DecimalField | models.IntegerField),
        "sort": None,
        "sorted": None,
    }
    if name in orderings:
        column["sorted"] = {name: "asc", f"-{name}": "desc"}.get(ordering)
        column["sort"] = f"-{name}" if ordering == name else name
    return column


# One record.


@service_view
@require_GET
def record_detail(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    record = queries.get(request.user, object_type, pk)
    return render(request, "crm/record_detail.html", _detail_context(request, object_type, record))


def _detail_context(
    request: HttpRequest, object_type: str, record: Any, **overrides: Any
) -> dict[str, Any]:
    pages = PAGES[object_type]
    user = request.user
    if pages.annotate:
        pages.annotate(user, [record])
    context: dict[str, Any] = {
        "pages": pages,
        "record": record,
        "rights": _rights(user, object_type),
        "timeline": _timeline(user, record),
    }
    if object_type != "activity" and can(user, "create", "activity"):
        context["activity_form"] = forms.LogActivityForm(user=user)
    if pages.detail_extras:
        context.update(pages.detail_extras(request, record))
    context.update(overrides)
    return context


def _timeline(user: User, record: Any) -> dict[str, Any]:
    """The record's timeline, with names for the related ids its audit entries hold."""
    entries = queries.timeline(user, record)
    names = {}
    for field in record._meta.many_to_many:
        ids = {
            pk
            for entry in entries
            if entry.kind == "audit"
            for pk in _flat_ids(entry.item.changes.get(field.name))
        }
        if ids:
            names[field.name] = queries.labels(user, field.related_model, ids)
    return {"entries": entries, "names": names}


def _flat_ids(value: Any) -> Iterable[int]:
    if isinstance(value, list):
        for item in value:
            yield from _flat_ids(item)
    elif isinstance(value, int):
        yield value


# Writes.


@service_view
def record_create(request: HttpRequest, object_type: str) -> HttpResponse:
    pages = PAGES[object_type]
    user = request.user
    _require(user, "create", object_type)
    if request.method != "POST":
        form = pages.form(user=user, initial=_prefill(request, pages.form))
        return _form_page(request, pages, form)
    form = pages.form(request.POST, user=user)
    if form.is_valid():
        try:
            record = pages.create(user, form)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(
                request,
                _("%(type)s “%(name)s” was created.") % {"type": pages.label, "name": record},
            )
            return redirect(pages.url("detail", record.pk))
    return _form_page(request, pages, form)


def _prefill(request: HttpRequest, form_class: type[forms.RecordForm]) -> dict[str, Any]:
    """Initial values from the query string, e.g. ``?account=12`` from an account's page."""
    initial: dict[str, Any] = {}
    for name, field in form_class.base_fields.items():
        if name in request.GET:
            multiple = field.widget.allow_multiple_selected
            initial[name] = request.GET.getlist(name) if multiple else request.GET[name]
    return initial


@service_view
def record_edit(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    pages = PAGES[object_type]
    user = request.user
    record = queries.get(user, object_type, pk)
    _require(user, "edit", object_type)
    title = str(record)
    if request.method != "POST":
        return _form_page(request, pages, pages.form(instance=record, user=user), title=title)
    form = pages.form(request.POST, instance=record, user=user)
    if form.is_valid():
        try:
            saved = services.update(
                user, object_type, pk, form.service_data(), form.cleaned_data["version"]
            )
        except errors.StaleVersion as exc:
            return _conflict_page(request, pages, form, exc.current)
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(
                request, _("%(type)s “%(name)s” was saved.") % {"type": pages.label, "name": saved}
            )
            return redirect(pages.url("detail", pk))
    return _form_page(request, pages, form, title=title)


def _conflict_page(
    request: HttpRequest, pages: RecordPages, mine: forms.RecordForm, current: Any
) -> HttpResponse:
    """The form again with the record's current values and version; the user's changes below."""
    your_changes = [
        (name, mine.cleaned_data[name]) for name in mine.service_data() if name != "version"
    ]
    form = pages.form(instance=current, user=request.user)
    return _form_page(
        request, pages, form, title=str(current), conflict=True, your_changes=your_changes
    )


def _form_page(
    request: HttpRequest, pages: RecordPages, form: forms.RecordForm, **context: Any
) -> HttpResponse:
    conflict = context.get("conflict", False)
    status = 409 if conflict else 422 if form.errors else 200
    context = {
        "pages": pages,
        "form": form,
        "record": form.instance if form.editing else None,
        **context,
    }
    return render(request, "crm/record_form.html", context, status=status)


@service_view
def record_delete(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    pages = PAGES[object_type]
    user = request.user
    record = queries.get(user, object_type, pk)
    _require(user, "delete", object_type)
    form = forms.VersionForm(request.POST or None, initial={"version": record.version})
    if request.method == "POST" and form.is_valid():
        try:
            services.delete(user, object_type, pk, form.cleaned_data["version"])
        except errors.StaleVersion:
            messages.error(
                request,
                _(
                    "Someone else changed this record after you opened it. Nothing was "
                    "deleted; review the current values first."
                ),
            )
            return redirect(pages.url("detail", pk))
        except InUse as exc:
            messages.error(request, exc.detail)
            return redirect(pages.url("detail", pk))
        messages.success(
            request, _("%(type)s “%(name)s” was deleted.") % {"type": pages.label, "name": record}
        )
        return redirect(pages.url("list"))
    return render(
        request, "crm/record_confirm_delete.html", {"pages": pages, "record": record, "form": form}
    )


@service_view
@require_POST
def record_validate(request: HttpRequest, object_type: str) -> HttpResponse:
    """The errors of one field, for inline validation when a field loses focus.

    Runs the same form checks as a submit, and writes nothing.
    """
    pages = PAGES[object_type]
    user = request.user
    _require(user, "view", object_type)
    pk = request.POST.get("_pk", "")
    instance = queries.get(user, object_type, int(pk)) if pk.isdigit() else None
    form = pages.form(request.POST, instance=instance, user=user)
    form.is_valid()
    name = request.POST.get("_field", "")
    field_errors = form.errors.get(name) if name in form.fields else None
    return render(request, "includes/field_errors.html", {"errors": field_errors})


@service_view
@require_POST
def activity_log(request: HttpRequest, object_type: str, pk: int) -> HttpResponse:
    """Log a call, meeting, e-mail or note on a record's page."""
    user = request.user
    record = queries.get(user, object_type, pk)
    form = forms.LogActivityForm(request.POST, user=user)
    if form.is_valid():
        try:
            services.create_activity(user, object_type, pk, form.service_data())
        except errors.ValidationFailed as exc:
            form.add_service_errors(exc.errors)
        else:
            messages.success(request, _("The activity was logged."))
            return redirect(PAGES[object_type].url("detail", pk) + "#timeline")
    context = _detail_context(request, object_type, record, activity_form=form)
    return render(request, "crm/record_detail.html", context, status=422)


@service_view
@require_POST
def order_lines(request: HttpRequest, pk: int) -> HttpResponse:
    """Replace an order's lines (product, quantity, unit price, discount) in one change."""
    user = request.user
    order = queries.get(user, "order", pk)
    _require(user, "edit", "order")
    formset = forms.order_line_formset(user, order, queries.order_lines(order), request.POST)
    version = forms.VersionForm(request.POST)
    if formset.is_valid() and version.is_valid():
        try:
            services.set_order_lines(
                user, pk, formset.service_lines(), version.cleaned_data["version"]
            )
        except errors.StaleVersion as exc:
            messages.warning(
                request,
                _(
                    "Someone else changed this order while you were editing its lines. Here "
                    "are the current lines; yours were not saved."
                ),
            )
            context = _detail_context(request, "order", exc.current)
            return render(request, "crm/record_detail.html", context, status=409)
        except errors.ValidationFailed as exc:
            formset.add_service_errors(exc.errors)
        else:
            messages.success(request, _("The order lines were saved."))
            return redirect(PAGES["order"].url("detail", pk))
    context = _detail_context(request, "order", order, line_formset=formset)
    return render(request, "crm/record_detail.html", context, status=422)


# Search.


@service_view
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """Accounts, contacts, leads and opportunities by name, e-mail or phone.

    The top bar's box asks for the dropdown as people type; Enter opens the full page.
    """
    q = request.GET.get("q", "").strip()
    dropdown = request.htmx.target == SEARCH_DROPDOWN_TARGET
    results = queries.global_search(request.user, q, per_type=5 if dropdown else 25)
    groups = [(PAGES[key], found) for key, found in results.items()]
    template = "crm/_search_dropdown.html" if dropdown else "crm/search.html"
    response = render(request, template, {"q": q, "groups": groups})
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


@service_view
@require_GET
def pick(request: HttpRequest, object_type: str) -> HttpResponse:
    """Options for a record picker: the records chosen so far, then those matching ``q``."""
    if object_type not in PAGES:
        raise Http404
    user = request.user
    _require(user, "view", object_type)
    field = request.GET.get("field", "")
    chosen_ids = [int(v) for v in request.GET.getlist(field) if v.isdigit()]
    q = request.GET.get("q", "").strip()
    chosen = list(queries.records(user, object_type).filter(pk__in=chosen_ids))
    found = list(queries.records(user, object_type, q=q).exclude(pk__in=chosen_ids)[:PICK_LIMIT])
    options = [(r.pk, str(r), True) for r in chosen] + [(r.pk, str(r), False) for r in found]
    single = request.GET.get("multiple") != "1"
    if single and q and found and not chosen:
        # Typing a name in a single picker chooses the best match, as a combo box would.
        options[0] = (options[0][0], options[0][1], True)
    blank = single and request.GET.get("blank") == "1"
    return render(request, "crm/_picker_options.html", {"groups": [("", options)], "blank": blank})


@service_view
@require_GET
def pick_regarding(request: HttpRequest) -> HttpResponse:
    """Options for the record an activity is about: matches of every searchable type."""
    user = request.user
    q = request.GET.get("q", "").strip()
    chosen_value = request.GET.get(request.GET.get("field", ""), "")
    groups = []
    chosen = forms.parse_regarding(chosen_value)
    if chosen:
        try:
            record = queries.get(user, *chosen)
        except errors.NotFound:
            pass
        else:
            groups.append(("", [(chosen_value, f"{PAGES[chosen[0]].label}: {record}", True)]))
    first = not chosen
    for key, found in queries.global_search(user, q, per_type=10).items():
        options = []
        for record in found:
            options.append((forms.regarding_value(record), str(record), first))
            first = False
        groups.append((PAGES[key].label_plural, options))
    return render(request, "crm/_picker_options.html", {"groups": groups, "blank": True})
