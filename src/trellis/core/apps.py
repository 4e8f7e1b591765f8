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
