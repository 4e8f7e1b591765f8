"""The pages of approvals, mounted at /approvals/: each area keeps its own list of paths."""

from . import views, views_definitions, views_links, views_reports

app_name = "approvals"

urlpatterns = [
    *views.urlpatterns,
    *views_definitions.urlpatterns,
    *views_reports.urlpatterns,
    *views_links.urlpatterns,
]
