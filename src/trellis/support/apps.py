from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# Role code -> (scope, create, edit, delete) for cases on a fresh install.
DEFAULT_RIGHTS = {
    "manager": ("all", True, True, True),
    "sales": ("all", False, False, False),
    "support": ("all", True, True, False),
    "marketing": ("none", False, False, False),
    "readonly": ("all", False, False, False),
}
# Support contracts are seen by whoever sees their account (see ``contracts``); these rights
# say who may write them.
CONTRACT_RIGHTS = {
    "manager": ("all", True, True, True),
    "sales": ("all", False, False, False),
    "support": ("all", True, True, False),
    "marketing": ("all", False, False, False),
    "readonly": ("all", False, False, False),
}
# Charges of support fees: "edit" is marking them billed (finance; managers by default).
CHARGE_RIGHTS = {
    "manager": ("all", False, True, False),
    "sales": ("none", False, False, False),
    "support": ("all", False, False, False),
    "marketing": ("none", False, False, False),
    "readonly": ("all", False, False, False),
}


class SupportConfig(AppConfig):
    name = "trellis.support"
    label = "support"
    verbose_name = _("Support")

    def ready(self) -> None:
        from django.conf import settings

        from trellis.core import registry
        from trellis.mail import inbound, routing

        from . import intake, models, notices

        registry.register(
            registry.ObjectType(
                key="case",
                model=models.Case,
                default_rights=DEFAULT_RIGHTS,
                detail_url_name="support:case-detail",
            )
        )
        registry.register(
            registry.ObjectType(
                key="support_contract",
                model=models.SupportContract,
                default_rights=CONTRACT_RIGHTS,
                detail_url_name="support:contract-detail",
            )
        )
        registry.register(
            registry.ObjectType(
                key="support_charge", model=models.Charge, default_rights=CHARGE_RIGHTS
            )
        )
        routing.register_mailbox(
            settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"],
            intake.handle_mail,
            many=intake.handle_mails,
        )
        routing.register_reply_handler(models.Case, intake.handle_reply)
        inbound.register_reference_resolver(intake.resolve_reference)
        notices.subscribe()
