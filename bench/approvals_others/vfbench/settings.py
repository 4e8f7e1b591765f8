"""Settings of the viewflow side: PostgreSQL from ``DATABASE_URL``, no web server."""

import os
from urllib.parse import urlparse

_url = urlparse(os.environ["DATABASE_URL"])

SECRET_KEY = "approvals-bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Asia/Seoul"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "viewflow",
    "viewflow.workflow",
    "vfbench",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "postgres",
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": _url.port or 5432,
        # As Trellis: one connection kept for the whole run.
        "CONN_MAX_AGE": None,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
