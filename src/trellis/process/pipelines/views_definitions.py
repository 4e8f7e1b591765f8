"""Pages of pipelines: definitions."""

urlpatterns: list = []
