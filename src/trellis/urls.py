from django.contrib import admin
from django.urls import include, path

from trellis.api.api import api

urlpatterns = [
    path("", include("trellis.core.urls")),
    path("crm/", include("trellis.crm.urls")),
    path("cases/", include("trellis.support.urls")),
    path("help/", include("trellis.support.portal_urls")),
    path("", include("trellis.process.urls")),
    path("pipelines/", include("trellis.process.pipelines.urls")),
    path("approvals/", include("trellis.process.approvals.urls")),
    path("automations/", include("trellis.process.automations.urls")),
    path("mail/", include("trellis.mail.urls")),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
]
