"""The JSON API: one NinjaAPI assembled from each app's ``api.py`` router."""

from ninja import NinjaAPI

api = NinjaAPI(
    title="Trellis API",
    version="1",
    urls_namespace="api",
    docs_url="/docs",
)
