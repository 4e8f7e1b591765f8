"""Pages of pipelines: board."""

urlpatterns: list = []
