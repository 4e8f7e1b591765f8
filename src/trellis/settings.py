"""Django settings for Trellis.

Everything that differs between a laptop and production comes from the environment:

- ``DATABASE_URL``: PostgreSQL in production; unset means SQLite under ``TRELLIS_VAR_DIR``.
- ``TRELLIS_SECRET_KEY``: set the same value on every web and worker machine; without it one
  is generated once and kept in ``var/secret_key``, which suits a single-machine install only.
- ``TRELLIS_DEBUG``, ``TRELLIS_ALLOWED_HOSTS``, ``TRELLIS_TIME_ZONE``.
- ``TRELLIS_BASE_URL``: the address customers and e-mail links use to reach this Trellis.
- ``TRELLIS_TRUSTED_PROXIES``: reverse proxies (comma-separated addresses or networks) whose
  ``X-Forwarded-For`` names the client that rate limits count.
- Mail: ``TRELLIS_MAIL_DOMAIN``, ``TRELLIS_SUPPORT_ADDRESS``, ``TRELLIS_SMTPD_HOST``,
  ``TRELLIS_SMTPD_PORT``, ``TRELLIS_SMTPD_TLS_CERT``, ``TRELLIS_SMTPD_TLS_KEY`` (the intake
  listener), ``TRELLIS_SMTP_URL`` (the relay for outgoing
  mail, ``smtp://user:password@host:port``; ``smtp+tls://`` for STARTTLS; unset means
  outgoing mail is written as files to ``var/outbox``), ``TRELLIS_IMAP_URL`` (a mailbox to
  poll for support mail, ``imaps://user:password@host:993/INBOX``).
"""

import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dj_database_url
from django.utils.translation import gettext_lazy as _

PACKAGE_DIR = Path(__file__).resolve().parent
VAR_DIR = Path(os.environ.get("TRELLIS_VAR_DIR", Path.cwd() / "var")).resolve()


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_bool("TRELLIS_DEBUG", False)


def _secret_key() -> str:
    """The secret key from the environment, or one kept in ``var/`` for the embedded setup."""
    key = os.environ.get("TRELLIS_SECRET_KEY")
    if key:
        return key
    key_file = VAR_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = os.environ.get("TRELLIS_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [
    origin for origin in os.environ.get("TRELLIS_CSRF_TRUSTED_ORIGINS", "").split(",") if origin
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    # Serves the API docs page's JavaScript from our own static files, not from a CDN.
    "ninja",
    "django_tasks",
    "django_tasks_db",
    "trellis.core",
    "trellis.mail",
    "trellis.crm",
    "trellis.support",
    # After the domain apps, so that record types are listed (e.g. in the rights of a role)
    # in the order people know them: the CRM's, then cases, then tasks.
    "trellis.process",
    "trellis.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "trellis.core.middleware.user_language",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "trellis.urls"
WSGI_APPLICATION = "trellis.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PACKAGE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if url:
        config = dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
        config.setdefault("TEST", {})
        if os.environ.get("TRELLIS_TEST_DATABASE"):
            config["TEST"]["NAME"] = os.environ["TRELLIS_TEST_DATABASE"]
        return config
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "trellis.sqlite3",
        # Keep connections open between requests: opening one costs more than a list page.
        "CONN_MAX_AGE": 600,
        # A file, not Django's in-memory default: concurrent writers in tests then wait for the
        # lock as they do in production instead of failing at once.
        "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        "OPTIONS": {
            # WAL lets readers go on while one writer writes; IMMEDIATE takes the write lock at
            # BEGIN so two writers queue instead of failing with "database is locked" mid-way.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
            ),
        },
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "core.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ko", _("Korean"))]
LOCALE_PATHS = [PACKAGE_DIR / "locale"]
TIME_ZONE = os.environ.get("TRELLIS_TIME_ZONE", "Asia/Seoul")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [PACKAGE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = VAR_DIR / "media"

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def _outgoing_mail() -> dict:
    """Django's e-mail settings from ``TRELLIS_SMTP_URL``; files under var/outbox without it."""
    url = os.environ.get("TRELLIS_SMTP_URL")
    if not url:
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": VAR_DIR / "outbox",
        }
    parsed = urlsplit(url)
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parsed.hostname or "127.0.0.1",
        "EMAIL_PORT": parsed.port or 25,
        "EMAIL_HOST_USER": unquote(parsed.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parsed.password or ""),
        "EMAIL_USE_TLS": parsed.scheme == "smtp+tls",
        "EMAIL_USE_SSL": parsed.scheme == "smtps",
        "EMAIL_TIMEOUT": 30,
    }


globals().update(_outgoing_mail())


def _imap_mailbox() -> dict | None:
    """The mailbox ``TRELLIS_IMAP_URL`` names for the intake to poll, or ``None``.

    ``imaps://user:pass@host:993/INBOX`` (TLS), ``imap+tls://...`` (STARTTLS on port 143),
    ``imap://...`` (no encryption: for a server on the same machine).
    """
    url = os.environ.get("TRELLIS_IMAP_URL")
    if not url:
        return None
    parsed = urlsplit(url)
    security = {"imaps": "ssl", "imap+tls": "starttls", "imap": "none"}.get(parsed.scheme)
    if security is None:
        raise ValueError("TRELLIS_IMAP_URL starts with imaps://, imap+tls:// or imap://")
    return {
        "HOST": parsed.hostname or "127.0.0.1",
        "PORT": parsed.port or (993 if security == "ssl" else 143),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "MAILBOX": unquote(parsed.path.lstrip("/")) or "INBOX",
        "SECURITY": security,
    }


MAIL_DOMAIN = os.environ.get("TRELLIS_MAIL_DOMAIN", "trellis.localhost")
DEFAULT_FROM_EMAIL = os.environ.get("TRELLIS_SUPPORT_ADDRESS", f"support@{MAIL_DOMAIN}")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG and _env_bool("TRELLIS_HTTPS", False):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("TRELLIS_LOG_LEVEL", "WARNING")},
}

# Trellis' own settings.
TRELLIS = {
    # Lists never return more than this many rows per page, in the UI and the API.
    "MAX_PAGE_SIZE": 100,
    "DEFAULT_PAGE_SIZE": 25,
    # The region a phone number without a country code belongs to.
    "DEFAULT_PHONE_REGION": os.environ.get("TRELLIS_PHONE_REGION", "KR"),
    "DEFAULT_CURRENCY": os.environ.get("TRELLIS_CURRENCY", "KRW"),
    # Seconds between two runs of the timer sweep in `trellis serve` and `trellis worker`.
    "SWEEP_INTERVAL": 30,
    # Reverse proxies (addresses or networks) whose X-Forwarded-For is believed, for the
    # client address that rate limits count by; none by default.
    "TRUSTED_PROXIES": [
        p for p in os.environ.get("TRELLIS_TRUSTED_PROXIES", "").split(",") if p.strip()
    ],
    # Where customers and e-mail links reach this Trellis (no trailing slash).
    "BASE_URL": os.environ.get("TRELLIS_BASE_URL", "http://127.0.0.1:8000").rstrip("/"),
    "MAIL": {
        # The one intake address; its local part names the support mailbox.
        "SUPPORT_ADDRESS": DEFAULT_FROM_EMAIL,
        # Replies to a record go to REPLY_LOCAL_PART+<signed token>@MAIL_DOMAIN.
        "REPLY_LOCAL_PART": "reply",
        "SMTPD_HOST": os.environ.get("TRELLIS_SMTPD_HOST", "127.0.0.1"),
        "SMTPD_PORT": int(os.environ.get("TRELLIS_SMTPD_PORT", 2525)),
        # With both, the listener offers STARTTLS (PEM files; re-read when they change).
        "SMTPD_TLS_CERT": os.environ.get("TRELLIS_SMTPD_TLS_CERT", ""),
        "SMTPD_TLS_KEY": os.environ.get("TRELLIS_SMTPD_TLS_KEY", ""),
        # A larger message is refused at SMTP (552) or, with OVERSIZE "truncate", stored cut
        # at the limit and flagged.
        "MAX_MESSAGE_BYTES": int(os.environ.get("TRELLIS_MAX_MESSAGE_BYTES", 25 * 1024 * 1024)),
        "OVERSIZE": os.environ.get("TRELLIS_MAIL_OVERSIZE", "refuse"),
        "MAX_ATTACHMENT_BYTES": 10 * 1024 * 1024,
        # Attachments kept but never offered for download with these endings.
        "FORBIDDEN_EXTENSIONS": [
            *(".exe", ".com", ".bat", ".cmd", ".scr", ".pif", ".msi", ".vbs", ".js"),
            *(".jse", ".wsf", ".ps1", ".jar", ".lnk", ".hta", ".cpl"),
        ],
        # Messages one sender may send in the window before the rest are kept but ignored.
        "SENDER_LIMIT": 20,
        "SENDER_WINDOW_SECONDS": 600,
        # Attempts to send one outgoing message before it is marked failed.
        "SEND_ATTEMPTS": 6,
        # A mailbox polled by the worker's sweep (TRELLIS_IMAP_URL); its mail is for
        # SUPPORT_ADDRESS.
        "IMAP": _imap_mailbox(),
    },
    "TASKS": {
        # The "due soon" reminder goes this many hours before a task's due time.
        "REMIND_BEFORE_HOURS": 24,
        # Days a link for an external participant works.
        "LINK_DAYS": 30,
        # The local hour from which daily digests of tasks go out.
        "DIGEST_HOUR": 8,
    },
}
