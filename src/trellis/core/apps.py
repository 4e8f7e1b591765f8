import gc

from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _seed_rights(sender, **kwargs) -> None:
    from .services import ensure_default_rights

    ensure_default_rights()


class CoreConfig(AppConfig):
    name = "trellis.core"
    label = "core"
    verbose_name = _("Core")

    def ready(self) -> None:
        # Roles and rights are reference data: every migrated database gets the defaults for
        # every registered object type, including types added by a later release.
        post_migrate.connect(_seed_rights, sender=self, dispatch_uid="trellis-seed-rights")
        from . import ratelimit  # noqa: F401  (registers its sweeper)

        # Trellis builds short-lived model instances in bursts: thousands in a sweep of due
        # timers, hundreds for a page. At CPython's default the cycle collector runs every 700
        # new objects and took 15% of such a burst's CPU; every 10,000 keeps it rare while
        # holding little garbage (measured in docs/performance.md, the time-rule sweep).
        gc.set_threshold(10_000, *gc.get_threshold()[1:])
