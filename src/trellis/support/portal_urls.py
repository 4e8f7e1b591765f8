"""The customer portal under /help/: no login; see ``portal`` and ``access``."""

from django.urls import path

from . import portal, portal_fees

app_name = "portal"
urlpatterns = [
    path("", portal.index, name="index"),
    path("new/", portal.new_case, name="new"),
    path("new/sent/", portal.case_sent, name="sent"),
    path("c/<str:tracking>/", portal.case_page, name="case"),
    path(
        "c/<str:tracking>/files/<int:attachment_id>/",
        portal.case_attachment,
        name="case-attachment",
    ),
    path("c/<str:tracking>/fees/<int:fee_id>/", portal_fees.case_answer, name="case-fee"),
    path("c/<str:tracking>/<str:key>/", portal.status, name="status"),
    path("c/<str:tracking>/<str:key>/fees/<int:fee_id>/", portal_fees.answer, name="fee"),
    path(
        "c/<str:tracking>/<str:key>/files/<int:attachment_id>/",
        portal.attachment,
        name="attachment",
    ),
]
