"""Pages of pipelines: alerts.

``pipelines:alert-rules`` shows a pipeline's alert rules to everyone who may see records of its
kind and lets admins change them (a row per kind of alert: active, threshold, who is told, the
digest). ``pipelines:alerts`` lists the alerts of the pipeline on records the user may see, open
ones by default, newest first, a page at a time, filtered by kind and owner.

Writes go through ``alerts.save_rules``: refused input shows the form again with each error
next to its field (422), a stale version keeps the admin's input with a notice (409).
"""

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from trellis.core import errors
from trellis.core.forms import ServiceForm
from trellis.core.models import User
from trellis.core.paging import paginate
from trellis.core.views import page_number, service_view
from trellis.core.visibility import is_admin

from . import alerts, subjects
from .models import AlertRule, Pipeline

STALE_NOTICE = gettext_lazy(
    "Someone else changed these alert rules after you opened them. Nothing was saved; your "
    "entries are kept below with the current versions: send them again if they still apply."
)


# Rules.


class RuleForm(ServiceForm):
    """One kind of alert of a pipeline, as a row of the rules page."""

    is_active = forms.BooleanField(label=gettext_lazy("Active"), required=False)
    threshold = forms.IntegerField(label=gettext_lazy("Threshold"))
    notify_owner = forms.BooleanField(label=gettext_lazy("Tell the owner"), required=False)
    notify_manager = forms.BooleanField(
        label=gettext_lazy("Tell the owner's manager"), required=False
    )
    email_digest = forms.BooleanField(label=gettext_lazy("In the e-mail digest"), required=False)
    version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, rule: AlertRule, *args: Any, **kwargs: Any) -> None:
        self.rule = rule
        self.spec = alerts.THRESHOLDS[rule.kind]
        kwargs.setdefault("prefix", rule.kind)
        kwargs.setdefault(
            "initial",
            {
                "is_active": rule.is_active,
                "threshold": rule.threshold,
                "notify_owner": rule.notify_owner,
                "notify_manager": rule.notify_manager,
                "email_digest": rule.email_digest,
                "version": rule.version or None,
            },
        )
        super().__init__(*args, **kwargs)
        self.fields["threshold"].widget.attrs.update(
            {"min": self.spec.minimum, "max": self.spec.maximum, "class": "threshold"}
        )
        self.fields["threshold"].label = _("Threshold for “%(kind)s” (%(unit)s)") % {
            "kind": self.label,
            "unit": self.unit,
        }

    @property
    def label(self) -> str:
        return str(AlertRule.Kind(self.rule.kind).label)

    @property
    def flags(self) -> list[Any]:
        """Who is told, and the digest: the row's checkboxes after the threshold."""
        return [self["notify_owner"], self["notify_manager"], self["email_digest"]]

    @property
    def unit(self) -> str:
        return str(alerts.UNITS[self.spec.unit])

    @property
    def help(self) -> str:
        return str(self.spec.help)

    def service_data(self) -> dict[str, Any]:
        data = {
            name: self.cleaned_data[name]
            for name in ("is_active", "threshold", "notify_owner", "notify_manager", "email_digest")
        }
        data["kind"] = self.rule.kind
        if self.rule.pk is not None:
            data["version"] = self.cleaned_data.get("version")
        return data


def _rule_forms(pipeline: Pipeline, data: Any = None) -> list[RuleForm]:
    return [RuleForm(rule, data) for rule in alerts.rules_for(pipeline)]


@service_view
@require_http_methods(["GET", "POST"])
def alert_rules(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    pipeline = alerts.viewable_pipeline(user, pk)
    admin = is_admin(user)
    status = 200
    notice = ""
    if request.method == "POST":
        if not admin:
            raise PermissionDenied(_("Only administrators define alert rules."))
        rule_forms = _rule_forms(pipeline, request.POST)
        if all(form.is_valid() for form in rule_forms):
            try:
                alerts.save_rules(user, pipeline.pk, [f.service_data() for f in rule_forms])
            except errors.ValidationFailed as exc:
                _spread_errors(rule_forms, exc.errors)
                status = 422
            except errors.StaleVersion:
                rule_forms = _rebased(pipeline, request.POST)
                notice = str(STALE_NOTICE)
                status = 409
            else:
                messages.success(request, _("The alert rules were saved."))
                return redirect("pipelines:alert-rules", pk=pipeline.pk)
        else:
            status = 422
    else:
        rule_forms = _rule_forms(pipeline)
    context = {
        "pipeline": pipeline,
        "rule_forms": rule_forms,
        "is_admin": admin,
        "notice": notice,
    }
    return render(request, "pipelines/alert_rules.html", context, status=status)


def _spread_errors(rule_forms: list[RuleForm], found: dict[str, list[str]]) -> None:
    """The service's errors, keyed ``rules.<n>.<field>``, onto the rows they are about."""
    for key, messages_ in found.items():
        parts = key.split(".", 2)
        if len(parts) == 3 and parts[0] == "rules" and parts[1].isdigit():
            index = int(parts[1])
            if index < len(rule_forms):
                rule_forms[index].add_service_errors({parts[2]: messages_})
                continue
        rule_forms[0].add_error(None, "; ".join(str(m) for m in messages_))


def _rebased(pipeline: Pipeline, data: Any) -> list[RuleForm]:
    """The admin's input on top of the rules as they are now: resending it saves it."""
    data = data.copy()
    for rule in alerts.rules_for(pipeline):
        data[f"{rule.kind}-version"] = str(rule.version) if rule.pk else ""
    rule_forms = _rule_forms(pipeline, data)
    for form in rule_forms:
        form.is_valid()
    return rule_forms


# Alerts.


class AlertFilters(forms.Form):
    kind = forms.ChoiceField(label=gettext_lazy("Kind"), required=False)
    owner = forms.ChoiceField(label=gettext_lazy("Owner"), required=False)
    state = forms.ChoiceField(
        label=gettext_lazy("Show"),
        required=False,
        choices=[
            ("open", gettext_lazy("Open alerts")),
            ("cleared", gettext_lazy("Cleared alerts")),
            ("all", gettext_lazy("All alerts")),
        ],
    )

    def __init__(self, user: User, pipeline: Pipeline, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kinds = alerts.kinds_for(subjects.get(pipeline.object_type))
        self.fields["kind"].choices = [("", _("Every kind"))] + [
            (kind, capfirst(AlertRule.Kind(kind).label)) for kind in kinds
        ]
        owner_ids = (
            alerts.visible_alerts(user, pipeline)
            .filter(cleared_at__isnull=True, owner__isnull=False)
            .order_by()
            .values("owner_id")
        )
        owners = User.objects.filter(pk__in=owner_ids).order_by("first_name", "username")
        self.fields["owner"].choices = [
            ("", _("Anyone")),
            ("me", _("Me")),
            *[(str(person.pk), str(person)) for person in owners if person.pk != user.pk],
        ]

    def values(self, user: User) -> dict[str, Any]:
        owner = self.cleaned_data.get("owner") or ""
        return {
            "kind": self.cleaned_data.get("kind") or "",
            "owner_id": user.pk if owner == "me" else (int(owner) if owner else None),
            "state": self.cleaned_data.get("state") or "open",
        }


@service_view
@require_GET
def alert_list(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    pipeline = alerts.viewable_pipeline(user, pk)
    filters = AlertFilters(user, pipeline, request.GET)
    status = 200
    if filters.is_valid():
        values = filters.values(user)
        found = alerts.alert_list(user, pipeline, **values)
        page = paginate(found, page_number(request), None)
        rows = alerts.rows(page.items)
    else:
        values = {"state": "open"}
        page = paginate(alerts.alert_list(user, pipeline).none(), 1, None)
        rows = []
        status = 422
    context = {
        "pipeline": pipeline,
        "filters": filters,
        "page": page,
        "rows": rows,
        "state": values["state"],
        "filtered": any(request.GET.get(name) for name in ("kind", "owner", "state")),
    }
    return render(request, "pipelines/alerts.html", context, status=status)


urlpatterns = [
    path("<int:pk>/alerts/", alert_list, name="alerts"),
    path("<int:pk>/alerts/rules/", alert_rules, name="alert-rules"),
]
