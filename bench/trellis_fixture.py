"""What a benchmark needs from a Trellis database: a token and a few ids to filter by.

Run with Trellis's virtualenv and DATABASE_URL set; prints one JSON object.
"""

import json
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trellis.settings")
django.setup()

from trellis.core.models import User  # noqa: E402
from trellis.core.services import create_api_token  # noqa: E402
from trellis.crm.models import Account, Opportunity  # noqa: E402


def main() -> None:
    admin = User.objects.get(username="admin")
    minji = User.objects.get(username="minji")
    _token, raw = create_api_token(admin, "benchmark")
    _token, raw_minji = create_api_token(minji, "benchmark")
    newest = Opportunity.objects.order_by("-id").values("account_id", "owner_id").first()
    account = Account.objects.get(pk=newest["account_id"])
    print(
        json.dumps(
            {
                "token": raw,
                "token_minji": raw_minji,
                "minji_id": minji.pk,
                "account_id": account.pk,
                "account_name": account.name,
                "opportunities": Opportunity.objects.count(),
                "accounts": Account.objects.count(),
            }
        )
    )


if __name__ == "__main__":
    main()
