"""Pages of pipelines: alerts."""

urlpatterns: list = []
