"""The pages of pipelines, mounted at /pipelines/: each area keeps its own list of paths."""

from . import views_alerts, views_board, views_definitions, views_reports

app_name = "pipelines"

urlpatterns = [
    *views_definitions.urlpatterns,
    *views_board.urlpatterns,
    *views_reports.urlpatterns,
    *views_alerts.urlpatterns,
]
