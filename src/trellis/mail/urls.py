"""Admins' mail pages: the quarantine and failed outgoing mail."""

from django.urls import path

from . import views

app_name = "mail"
urlpatterns = [
    path("quarantine/", views.quarantine, name="quarantine"),
    path("quarantine/<int:pk>/", views.inbound_detail, name="inbound-detail"),
    path("quarantine/<int:pk>/raw/", views.inbound_raw, name="inbound-raw"),
    path("quarantine/<int:pk>/rerun/", views.inbound_rerun, name="inbound-rerun"),
    path("quarantine/<int:pk>/dismiss/", views.inbound_dismiss, name="inbound-dismiss"),
    path("quarantine/<int:pk>/file/", views.inbound_file, name="inbound-file"),
    path("outgoing/", views.outgoing, name="outgoing"),
    path("outgoing/<int:pk>/retry/", views.outbound_retry, name="outbound-retry"),
]
