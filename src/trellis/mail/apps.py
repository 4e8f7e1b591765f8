from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MailConfig(AppConfig):
    name = "trellis.mail"
    label = "mail"
    verbose_name = _("Mail")

    def ready(self) -> None:
        from . import imap, inbound, outbound  # noqa: F401  (register their sweepers)
