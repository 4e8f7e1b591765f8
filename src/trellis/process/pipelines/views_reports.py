"""Pages of pipelines: reports."""

urlpatterns: list = []
