import pytest

from trellis.core.models import Role

from . import factories


@pytest.fixture(autouse=True)
def _reference_data(request):
    """Tests with real transactions run on a database that an earlier one flushed: put the
    built-in roles and rights back (the default pipelines they must make themselves)."""
    marker = request.node.get_closest_marker("django_db")
    if "transactional_db" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        from django.contrib.contenttypes.models import ContentType

        from trellis.core.services import ensure_default_rights

        request.getfixturevalue("transactional_db")
        ContentType.objects.clear_cache()
        ensure_default_rights()


@pytest.fixture
def team(db):
    return factories.TeamFactory(name="Seoul sales")


@pytest.fixture
def admin(db, team):
    return factories.user(Role.ADMIN, username="admin", team=team)


@pytest.fixture
def manager(db, team):
    return factories.user(Role.MANAGER, username="manager", team=team)


@pytest.fixture
def sales(db, team, manager):
    return factories.user(Role.SALES, username="sales", team=team, manager=manager)


@pytest.fixture
def other_sales(db, team, manager):
    """A colleague in the same team, reporting to the same manager."""
    return factories.user(Role.SALES, username="colleague", team=team, manager=manager)


@pytest.fixture
def outsider(db):
    """A sales user in another team with another manager."""
    return factories.user(Role.SALES, username="outsider", team=factories.TeamFactory(name="Busan"))


def pytest_configure(config):
    from django.conf import settings

    # Test users need no strong hashes; the default costs a third of a second per user.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def smtp_sink(settings):
    """A real SMTP server on 127.0.0.1 that Django's outgoing mail goes to; tasks run at once.

    See tests/mailsink.py for how tests send and wait for mail.
    """
    from .mailsink import SmtpSink

    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = sink.host
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    yield sink
    sink.stop()


@pytest.fixture
def intake_server(transactional_db):
    """Trellis' own SMTP intake listener on 127.0.0.1 and a free port (``.port``).

    Its threads use the test database through their own connections: mark the test
    ``@pytest.mark.django_db(transaction=True)``.
    """
    from trellis.mail.smtpd import IntakeServer

    server = IntakeServer("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()
