"""The automation pages, mounted at /automations/."""

from django.urls import path

from . import views

app_name = "automations"

urlpatterns = [
    path("", views.rule_list, name="rule-list"),
    path("new/", views.rule_create, name="rule-create"),
    path("<int:pk>/", views.rule_detail, name="rule-detail"),
    path("<int:pk>/edit/", views.rule_edit, name="rule-edit"),
    path("<int:pk>/enable/", views.rule_enable, name="rule-enable"),
    path("<int:pk>/delete/", views.rule_delete, name="rule-delete"),
    path("dry-run/", views.dry_run, name="dry-run"),
    path("holds/", views.hold_list, name="hold-list"),
    path("holds/new/", views.hold_create, name="hold-create"),
    path("holds/<int:pk>/", views.hold_queue, name="hold-queue"),
    path("holds/<int:pk>/edit/", views.hold_edit, name="hold-edit"),
    path("holds/placements/<int:pk>/release/", views.hold_release, name="hold-release"),
]
