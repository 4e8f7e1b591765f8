import pytest

from trellis.core.models import Role

from . import factories


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
