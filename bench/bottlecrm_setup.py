"""Prepare a BottleCRM (``django-crm`` on PyPI) database for the comparison benchmark.

Runs inside BottleCRM's own virtualenv (Python 3.12), never Trellis's:

    DJANGO_SETTINGS_MODULE=crm.settings DBNAME=... bottlecrm-venv/bin/python bottlecrm_setup.py \
        --leads 1000000

What it does, learned from BottleCRM's source (site-packages/crm, common, leads):

- one org, one user, and an ADMIN profile in that org (an org admin sees every lead of the org,
  the cheapest visibility rule ``leads.access.visible_leads_qs`` has);
- leads up to ``--leads`` in that org, with ``Lead.objects.bulk_create`` in batches of 5,000
  (unique e-mails: BottleCRM allows one lead per e-mail address per org);
- prints a JSON line with a signed JWT access token whose ``org_id`` claim is what
  ``common.middleware.get_company.GetProfileAndOrg`` reads to set the org context (there is no
  org header any more: the org comes from the signed token), valid for one hour.
"""

import argparse
import json
import random
import sys
import time

import django

django.setup()

from common.models import Org, Profile, User  # noqa: E402
from common.serializer import OrgAwareRefreshToken  # noqa: E402
from django.db import transaction  # noqa: E402
from leads.models import Lead  # noqa: E402

EMAIL = "bench@bottlecrm-bench.example.com"
FIRST = ["Minji", "Jihoon", "Seoyeon", "Daniel", "Sarah", "Hyunwoo", "Yuna", "Junho", "Emily"]
LAST = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Smith", "Brown"]
COMPANIES = ["Hanbit Soft", "Nuri Tech", "Gaon Systems", "Mirae ICT", "Sejong Networks"]
STATUSES = ["assigned", "in process", "recycled", "closed"]
SOURCES = ["call", "email", "existing customer", "partner", "campaign", "other"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()

    org, _ = Org.objects.get_or_create(
        name="Trellis bench", defaults={"default_currency": "KRW", "default_country": "KR"}
    )
    user = User.objects.filter(email=EMAIL).first()
    if user is None:
        user = User.objects.create_user(email=EMAIL, password="bench-password-not-used")
    profile, _ = Profile.objects.get_or_create(
        user=user,
        org=org,
        defaults={
            "role": "ADMIN",
            "is_organization_admin": True,
            "has_sales_access": True,
            "has_marketing_access": True,
        },
    )

    existing = Lead.objects.filter(org=org).count()
    started = time.monotonic()
    rng = random.Random(existing)
    created = 0
    while existing + created < args.leads:
        size = min(args.batch_size, args.leads - existing - created)
        batch = []
        for i in range(size):
            n = existing + created + i
            first, last = rng.choice(FIRST), rng.choice(LAST)
            batch.append(
                Lead(
                    org=org,
                    title=f"Lead {n}",
                    first_name=first,
                    last_name=last,
                    email=f"{first}.{last}.{n}@lead-bench.example.com".lower(),
                    company_name=rng.choice(COMPANIES),
                    status=rng.choice(STATUSES),
                    source=rng.choice(SOURCES),
                    created_by=user,
                )
            )
        with transaction.atomic():
            Lead.objects.bulk_create(batch)
        created += size
        print(f"\rleads: {existing + created:,}/{args.leads:,}", end="", file=sys.stderr)
    if created:
        print(file=sys.stderr)
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE lead")
    token = OrgAwareRefreshToken.for_user_and_org(user, org, profile).access_token
    print(
        json.dumps(
            {
                "token": str(token),
                "org_id": str(org.id),
                "leads": existing + created,
                "created": created,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
