"""The agent's support pages, under /cases/."""

from django.urls import path

from . import billing_views, views

app_name = "support"

urlpatterns = [
    path("", views.case_list, name="case-list"),
    path("new-call/", views.log_call, name="log-call"),
    path("features/", views.feature_list, name="feature-list"),
    path("contracts/", billing_views.contract_list, name="contract-list"),
    path("contracts/new/", billing_views.contract_new, name="contract-new"),
    path("contracts/<int:pk>/", billing_views.contract_detail, name="contract-detail"),
    path("billing/", billing_views.billing_list, name="billing"),
    path("billing/bill/", billing_views.billing_mark, name="billing-mark"),
    path("<int:pk>/", views.case_detail, name="case-detail"),
    path("<int:pk>/claim/", views.case_claim, name="case-claim"),
    path("<int:pk>/assign/", views.case_assign, name="case-assign"),
    path("<int:pk>/status/", views.case_status, name="case-status"),
    path("<int:pk>/details/", views.case_details, name="case-details"),
    path("<int:pk>/classify/", views.case_classify, name="case-classify"),
    path("<int:pk>/reply/", views.case_reply, name="case-reply"),
    path("<int:pk>/notes/", views.case_note, name="case-note"),
    path("<int:pk>/merge/", views.case_merge, name="case-merge"),
    path("<int:pk>/split/", views.case_split, name="case-split"),
    path("<int:pk>/fees/", billing_views.case_fee, name="case-fee"),
    path("<int:pk>/fees/<int:fee_id>/waive/", billing_views.case_fee_waive, name="case-fee-waive"),
    path(
        "<int:pk>/attachments/<int:attachment_id>/",
        views.case_attachment,
        name="case-attachment",
    ),
]
