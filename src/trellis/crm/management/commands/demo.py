"""``trellis demo --scale N``: demo users and a realistic CRM dataset of N opportunities.

Small datasets (N <= 2,000 by default) are written through the services, as people would write
them, so every record has its audit row. Large ones are written in batches (5,000 rows, one
transaction each), streaming: memory holds a batch plus a few small arrays of ids, never the
whole dataset. On PostgreSQL a batch goes in with COPY (ids taken from the sequence first),
elsewhere with ``bulk_create``. The ``search_text`` of these rows is computed with
``search_key`` from the same fields as the services' ``_prepare_*`` functions, so the global
search finds demo data either way.
"""

import datetime as dt
import random
import sys
import time
from array import array
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.auth.hashers import make_password
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from faker import Faker
from tqdm import tqdm

from trellis.core import clock
from trellis.core.models import Role, Team, User
from trellis.core.money import MINOR_UNITS
from trellis.core.services import create_user, ensure_default_rights
from trellis.core.validators import search_key
from trellis.crm import services
from trellis.crm.models import (
    Account,
    Activity,
    Contact,
    Lead,
    Opportunity,
    Order,
    OrderLine,
    Product,
)
from trellis.process.pipelines import rollups
from trellis.process.pipelines.models import StageChange

from .. import demo_approvals, demo_automations
from .. import demo_data as D
from ..demo_stages import StageHistories

PASSWORD = "trellis-demo"
SERVICES_UP_TO = 2_000

TEAMS = ["서울 영업1팀", "서울 영업2팀", "부산 지사", "Support", "Marketing"]
SEOUL_1, SEOUL_2, BUSAN, SUPPORT, MARKETING = TEAMS

# username, full name, role, team, manager's username, e-mail local part
USERS = [
    ("admin", "관리자", Role.ADMIN, None, None),
    ("hyunwoo", "이현우", Role.MANAGER, SEOUL_1, None),
    ("jihoon", "박지훈", Role.MANAGER, SEOUL_2, "hyunwoo"),
    ("sujin", "정수진", Role.MANAGER, BUSAN, "hyunwoo"),
    ("minji", "김민지", Role.SALES, SEOUL_1, "hyunwoo"),
    ("daniel", "Daniel Cho", Role.SALES, SEOUL_1, "hyunwoo"),
    ("yuna", "한유나", Role.SALES, SEOUL_2, "jihoon"),
    ("junho", "오준호", Role.SALES, SEOUL_2, "jihoon"),
    ("dongwook", "강동욱", Role.SALES, BUSAN, "sujin"),
    ("eunji", "윤은지", Role.SALES, BUSAN, "sujin"),
    ("jiwon", "서지원", Role.SUPPORT, SUPPORT, None),
    ("hana", "송하나", Role.MARKETING, MARKETING, None),
    ("viewer", "임도윤", Role.READ_ONLY, None, None),
]

# The fields each searchable type's search_text is made of: the same arguments, in the same
# order, as crm.services._prepare_account / _contact / _lead / _opportunity.
SEARCH_FIELDS = {
    Account: ("name", "email", "phone"),
    Contact: ("name", "email", "phone", "mobile"),
    Lead: ("name", "company", "email", "phone"),
    Opportunity: ("name",),
}

# Row values the services do not take from callers; the generator sets them afterwards.
_SET_AFTERWARDS = ("created_at", "updated_at", "stage_id", "stage_entered_at", "probability")

SERVICE_TYPES = {
    Account: "account",
    Contact: "contact",
    Lead: "lead",
    Opportunity: "opportunity",
}


class Command(BaseCommand):
    help = "Create demo users and a realistic CRM dataset: --scale N opportunities."

    def add_arguments(self, parser):
        parser.add_argument("--scale", type=int, default=200, help="opportunities to create")
        parser.add_argument("--seed", type=int, default=1, help="same seed, same data")
        parser.add_argument(
            "--method",
            choices=["auto", "services", "bulk"],
            default="auto",
            help=f"auto: through the services up to {SERVICES_UP_TO:,} opportunities, else bulk",
        )
        parser.add_argument("--batch-size", type=int, default=5_000)
        parser.add_argument(
            "--append",
            action="store_true",
            help="add records even when the database already holds opportunities",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.add_argument(
            "--moves-per-deal",
            type=float,
            default=0,
            help="stage changes per deal to aim at on average (default: a natural walk, ~4)",
        )
        parser.add_argument(
            "--no-copy",
            action="store_true",
            help="on PostgreSQL, insert with bulk_create instead of COPY (slower)",
        )

    def handle(self, *args, scale: int, seed: int, method: str, batch_size: int, **options):
        if scale < 0:
            raise CommandError("--scale must be 0 or more.")
        started = time.monotonic()
        ensure_default_rights()
        users, created_users = _ensure_users()
        products = _ensure_products(users["admin"])
        counts: Counter = Counter()
        if Opportunity.objects.exists() and not options["append"]:
            self.stdout.write(
                "The database already holds CRM records: demo users and products checked, "
                "no records added (use --append to add more)."
            )
        elif scale:
            if method == "auto":
                method = "services" if scale <= SERVICES_UP_TO else "bulk"
            generator = _Generator(
                users=users,
                products=products,
                seed=seed,
                bulk=method == "bulk",
                batch_size=max(100, batch_size),
                progress=not options["no_progress"] and options["verbosity"] > 0,
                copy=not options["no_copy"],
                moves_per_deal=options["moves_per_deal"],
            )
            generator.run(scale)
            counts = generator.counts
            method = "bulk, COPY" if generator.copy else method
        elapsed = time.monotonic() - started
        if options["verbosity"] > 0:
            self._summary(counts, created_users, elapsed, method, scale)

    def _summary(self, counts, created_users, elapsed, method, scale) -> None:
        out = self.stdout
        if counts:
            out.write(f"Demo data: {scale:,} opportunities ({method}) in {elapsed:.1f} s")
            for label, count in counts.items():
                out.write(f"  {label:<15} {count:>10,}")
        out.write(
            f"Demo users ({len(created_users)} new, {len(USERS) - len(created_users)} kept), "
            f'password "{PASSWORD}":'
        )
        for username, name, role, team, _manager in USERS:
            out.write(f"  {username:<10} {role:<10} {team or '-':<8}\t{name}")


def _ensure_users() -> tuple[dict[str, User], list[str]]:
    """Teams and demo users; existing ones are kept as they are."""
    teams = {name: Team.objects.get_or_create(name=name)[0] for name in TEAMS}
    users: dict[str, User] = {}
    created = []
    password_hash = None
    for username, name, role, team, manager in USERS:
        existing = User.objects.filter(username=username).first()
        if existing:
            users[username] = existing
            continue
        user = create_user(
            username,
            None,
            role=role,
            team=teams[team] if team else None,
            manager=users[manager] if manager else None,
            first_name=name,
            email=f"{username}@trellis-demo.example.com",
            is_staff=role == Role.ADMIN,
            is_superuser=role == Role.ADMIN,
            language="ko" if name[0] >= "가" else "en",
        )
        # One password hash for all: hashing is slow on purpose, and they share the password.
        password_hash = password_hash or make_password(PASSWORD)
        user.password = password_hash
        user.save(update_fields=["password"])
        users[username] = user
        created.append(username)
    return users, created


def _ensure_products(admin: User) -> list[Product]:
    existing = {p.sku: p for p in Product.objects.filter(sku__in=[p[1] for p in D.PRODUCTS])}
    products = []
    for name, sku, price, currency in D.PRODUCTS:
        product = existing.get(sku)
        if product is None:
            product = services.create(
                admin,
                "product",
                {"name": name, "sku": sku, "unit_price": Decimal(price), "currency": currency},
            )
        products.append(product)
    return products


class _Generator:
    """Writes the dataset type by type, one batch at a time."""

    def __init__(
        self, *, users, products, seed, bulk, batch_size, progress, copy=True, moves_per_deal=0
    ):
        self.rng = random.Random(seed)
        self.faker = Faker("ko_KR")
        self.faker.seed_instance(seed)
        self.bulk = bulk
        # PostgreSQL takes big batches fastest through COPY; --no-copy measures bulk_create.
        self.copy = bulk and copy and connection.vendor == "postgresql"
        self.batch_size = batch_size
        self.progress = progress
        self.counts: Counter = Counter()
        self.users = users
        self.by_id = {u.pk: u for u in users.values()}
        self.sellers = [u for u in users.values() if u.role and u.role.code == Role.SALES]
        self.managers = [u for u in users.values() if u.role and u.role.code == Role.MANAGER]
        self.busan = [u for u in self.sellers + self.managers if u.team and u.team.name == BUSAN]
        self.team_members: dict[int, list[User]] = {}
        for user in self.sellers + self.managers:
            self.team_members.setdefault(user.team_id, []).append(user)
        self.products = {
            currency: [p for p in products if p.currency == currency] for currency in ("KRW", "USD")
        }
        self.now = clock.now()
        self.today = clock.today()
        self.stages = StageHistories(self.rng, moves_per_deal)
        self.content_types = {
            model: ContentType.objects.get_for_model(model).pk
            for model in (Account, Lead, Opportunity)
        }
        # Per account, in creation order: id, owner id, name, e-mail domain, first contact id.
        self.account_ids = array("q")
        self.account_owner = array("q")
        self.account_names: list[str] = []
        self.account_domains: list[str] = []

    # -- the phases

    def run(self, scale: int) -> None:
        self._accounts(max(1, scale // 5))
        self._contacts()
        self._leads(scale // 2)
        self._opportunities(scale)
        if not self.bulk:
            self.counts["approval requests"] = demo_approvals.create(self.users)
            self.counts["automation rules"] = demo_automations.create(self.users)
        # The stage changes were written as rows; the reports read them summed per day.
        started = time.monotonic()
        self.counts["stage changes summed"] = rollups.rebuild()
        if self.progress:
            sys.stderr.write(f"pipeline rollups: {time.monotonic() - started:.1f} s\n")
        if self.bulk and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                for model in (
                    Account,
                    Contact,
                    Lead,
                    Opportunity,
                    Order,
                    OrderLine,
                    Activity,
                    StageChange,
                ):
                    cursor.execute(f"ANALYZE {model._meta.db_table}")

    def _accounts(self, total: int) -> None:
        with self._bar("accounts", total) as bar:
            for start in range(0, total, self.batch_size):
                rows = [self._account_row() for _ in range(min(self.batch_size, total - start))]
                self.account_domains.extend(row.pop("domain") for row in rows)
                with transaction.atomic():
                    ids = self._write(Account, rows)
                    self._activities(Account, ids, rows, share=0.1)
                for pk, row in zip(ids, rows, strict=True):
                    self.account_ids.append(pk)
                    self.account_owner.append(row["owner_id"])
                    self.account_names.append(row["name"])
                bar.update(len(rows))

    def _contacts(self) -> None:
        total = len(self.account_ids)
        self.account_first_contact = array("q", [0]) * total
        with self._bar("contacts", total, unit="accounts") as bar:
            for start in range(0, total, self.batch_size):
                end = min(total, start + self.batch_size)
                rows, positions = [], []
                for index in range(start, end):
                    for _ in range(2 if self.rng.random() < 0.5 else 1):
                        rows.append(self._contact_row(index))
                        positions.append(index)
                with transaction.atomic():
                    ids = self._write(Contact, rows)
                for pk, index in zip(ids, positions, strict=True):
                    if not self.account_first_contact[index]:
                        self.account_first_contact[index] = pk
                bar.update(end - start)

    def _leads(self, total: int) -> None:
        with self._bar("leads", total) as bar:
            for start in range(0, total, self.batch_size):
                rows = [self._lead_row() for _ in range(min(self.batch_size, total - start))]
                paths = [self.stages.lead(row) for row in rows]
                with transaction.atomic():
                    ids = self._write(Lead, rows)
                    self._stage_changes(Lead, ids, rows, paths)
                    self._activities(Lead, ids, rows, share=0.1)
                bar.update(len(rows))

    def _opportunities(self, total: int) -> None:
        with self._bar("opportunities", total) as bar:
            for start in range(0, total, self.batch_size):
                rows = [self._opportunity_row() for _ in range(min(self.batch_size, total - start))]
                paths = [self.stages.deal(row, self.now) for row in rows]
                with transaction.atomic():
                    ids = self._write(Opportunity, rows)
                    self._stage_changes(Opportunity, ids, rows, paths)
                    self._orders(ids, rows)
                    self._activities(Opportunity, ids, rows, share=0.15)
                bar.update(len(rows))

    # -- one row of each kind

    def _owner_for_account(self, area: str) -> User:
        if area == "051" and self.rng.random() < 0.8:
            return self.rng.choice(self.busan)
        if self.rng.random() < 0.1:
            return self.rng.choice(self.managers)
        return self.rng.choice(self.sellers)

    def _stamps(self, before: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
        latest = min(before or self.now, self.now)
        created = latest - dt.timedelta(seconds=self.rng.randint(3600, 400 * 86400))
        updated = created + (latest - created) * self.rng.random()
        return created, updated

    def _account_row(self) -> dict[str, Any]:
        company = D.company(self.rng, self.faker)
        owner = self._owner_for_account(company["area"])
        created, updated = self._stamps()
        return {
            "name": company["name"],
            "business_registration_number": company["business_registration_number"],
            "industry": company["industry"],
            "website": company["website"],
            "email": company["email"],
            "phone": company["phone"],
            "address": company["address"],
            "country": "KR",
            "domain": company["domain"],
            "owner_id": owner.pk,
            "team_id": owner.team_id,
            "created_at": created,
            "updated_at": updated,
        }

    def _contact_row(self, account_index: int) -> dict[str, Any]:
        rng = self.rng
        korean = rng.random() < 0.85
        name, local = D.korean_person(rng) if korean else D.english_person(rng)
        owner = self.by_id[self.account_owner[account_index]]
        created, updated = self._stamps()
        return {
            "name": name,
            "title": D.title(rng, korean),
            # At the account's own domain, so a company's people look like its people.
            "email": f"{local}@{self.account_domains[account_index]}",
            "phone": D.landline(rng, "02") if rng.random() < 0.6 else "",
            "mobile": D.mobile(rng) if rng.random() < 0.8 else "",
            "owner_id": owner.pk,
            "team_id": owner.team_id,
            "created_at": created,
            "updated_at": updated,
            "accounts": [self.account_ids[account_index]],
        }

    def _lead_row(self) -> dict[str, Any]:
        rng = self.rng
        name, local = D.person(rng)
        company = D.company(rng, self.faker)
        owner = self.users["hana"] if rng.random() < 0.15 else rng.choice(self.sellers)
        created, updated = self._stamps()
        return {
            "name": name,
            "company": company["name"],
            "email": f"{local}@{company['domain']}" if rng.random() < 0.9 else "",
            "phone": D.mobile(rng) if rng.random() < 0.7 else company["phone"],
            "source": D.weighted(rng, D.LEAD_SOURCES),
            "status": D.weighted(rng, D.LEAD_STATUSES),
            "notes": "",
            "owner_id": owner.pk,
            "team_id": owner.team_id,
            "created_at": created,
            "updated_at": updated,
        }

    def _opportunity_row(self) -> dict[str, Any]:
        rng = self.rng
        index = rng.randrange(len(self.account_ids))
        account_owner = self.by_id[self.account_owner[index]]
        if rng.random() < 0.75:
            owner = account_owner
        else:
            owner = rng.choice(self.team_members.get(account_owner.team_id, [account_owner]))
        close = self.today + dt.timedelta(days=rng.randint(-182, 273))
        if close < self.today:
            status = D.weighted(rng, [("won", 40), ("lost", 35), ("open", 25)])
        else:
            status = D.weighted(rng, [("open", 92), ("won", 5), ("lost", 3)])
        if status == "open":
            probability = rng.choice([10, 10, 20, 30, 40, 50, 60, 70, 80, 90])
        else:
            probability = 100 if status == "won" else 0
        usd = rng.random() < 0.08
        close_at = dt.datetime.combine(close, dt.time(18), tzinfo=self.now.tzinfo)
        created, updated = self._stamps(before=close_at - dt.timedelta(days=7))
        contact = self.account_first_contact[index] if rng.random() < 0.8 else 0
        return {
            "name": D.deal_name(rng, self.account_names[index]),
            "account_id": self.account_ids[index],
            "contact_id": contact or None,
            "amount": D.usd_amount(rng) if usd else D.krw_amount(rng),
            "currency": "USD" if usd else "KRW",
            "expected_close_date": close,
            "probability": probability,
            "status": status,
            "description": "",
            "owner_id": owner.pk,
            "team_id": owner.team_id,
            "created_at": created,
            "updated_at": updated,
        }

    def _orders(self, ids: list[int], rows: list[dict[str, Any]]) -> None:
        rng = self.rng
        orders, all_lines = [], []
        for pk, row in zip(ids, rows, strict=True):
            if row["status"] != "won" or rng.random() > 0.35:
                continue
            currency = row["currency"]
            order_date = min(row["expected_close_date"], self.today)
            fulfilled = order_date < self.today - dt.timedelta(days=30)
            lines = []
            for product in rng.sample(self.products[currency], rng.randint(1, 3)):
                big = product.unit_price >= 5_000_000
                lines.append(
                    {
                        "product_id": product.pk,
                        "quantity": rng.randint(1, 3) if big else rng.randint(1, 50),
                        "unit_price": product.unit_price,
                        "discount_pct": Decimal(rng.choice([0, 0, 0, 5, 10, 15])),
                    }
                )
            orders.append(
                {
                    "account_id": row["account_id"],
                    "opportunity_id": pk,
                    "status": "fulfilled" if fulfilled else "placed",
                    "currency": currency,
                    "order_date": order_date,
                    "owner_id": row["owner_id"],
                    "team_id": row["team_id"],
                }
            )
            all_lines.append(lines)
        if not orders:
            return
        if not self.bulk:
            for data, lines in zip(orders, all_lines, strict=True):
                services.create_order(self.by_id[data["owner_id"]], data, lines)
            self.counts["order lines"] += sum(len(lines) for lines in all_lines)
        else:
            for data, lines in zip(orders, all_lines, strict=True):
                created = dt.datetime.combine(data["order_date"], dt.time(10), self.now.tzinfo)
                data.update(
                    total=_total(lines, data["currency"]), created_at=created, updated_at=created
                )
            order_ids = self._insert(Order, orders)
            self._insert(
                OrderLine,
                [
                    {"order_id": order_id, **line}
                    for order_id, lines in zip(order_ids, all_lines, strict=True)
                    for line in lines
                ],
                ids=False,
            )
            self.counts["order lines"] += sum(len(lines) for lines in all_lines)
        self.counts["orders"] += len(orders)

    def _activities(self, model, ids: list[int], rows: list[dict[str, Any]], share: float):
        rng = self.rng
        items = []
        for pk, row in zip(ids, rows, strict=True):
            if rng.random() >= share:
                continue
            for _ in range(rng.randint(1, 3)):
                kind = D.weighted(rng, [("call", 35), ("meeting", 20), ("email", 25), ("note", 20)])
                voc = kind == "note" and rng.random() < 0.35
                if voc:
                    subject, body = rng.choice(D.VOC_NOTES)
                else:
                    subject = rng.choice(
                        {
                            "call": D.CALL_SUBJECTS,
                            "meeting": D.MEETING_SUBJECTS,
                            "email": D.EMAIL_SUBJECTS,
                            "note": D.NOTE_SUBJECTS,
                        }[kind]
                    )
                    body = ""
                start = row["created_at"]
                items.append(
                    {
                        "kind": kind,
                        "subject": subject,
                        "body": body,
                        "occurred_at": start + (self.now - start) * rng.random(),
                        "is_voc": voc,
                        "owner_id": row["owner_id"],
                        "team_id": row["team_id"],
                        "object_id": pk,
                    }
                )
        if not items:
            return
        if self.bulk:
            content_type = self.content_types[model]
            for item in items:
                item.update(
                    content_type_id=content_type,
                    created_at=item["occurred_at"],
                    updated_at=item["occurred_at"],
                )
            self._insert(Activity, items, ids=False)
        else:
            related_type = SERVICE_TYPES[model]
            for item in items:
                related_id = item.pop("object_id")
                actor = self.by_id[item["owner_id"]]
                services.create_activity(actor, related_type, related_id, item)
        self.counts["activities"] += len(items)

    # -- writing

    def _write(self, model, rows: list[dict[str, Any]]) -> list[int]:
        """Save rows of a searchable type; return their ids in order."""
        label = str(model._meta.verbose_name_plural)
        self.counts[label] += len(rows)
        if not self.bulk:
            ids = []
            object_type = SERVICE_TYPES[model]
            for row in rows:
                data = {k: v for k, v in row.items() if k not in _SET_AFTERWARDS}
                actor = self.by_id[row["owner_id"]]
                ids.append(services.create(actor, object_type, data).pk)
            if model is Contact:
                self.counts["contact links"] += len(rows)
            return ids
        fields = SEARCH_FIELDS[model]
        links = []
        for row in rows:
            links.append(row.pop("accounts", None))
            row["search_text"] = search_key(*(row[f] for f in fields))
        ids = self._insert(model, rows)
        if model is Contact:
            self._insert(
                Contact.accounts.through,
                [
                    {"contact_id": contact_id, "account_id": account_id}
                    for contact_id, accounts in zip(ids, links, strict=True)
                    for account_id in accounts
                ],
                ids=False,
            )
            self.counts["contact links"] += len(ids)
        return ids

    def _stage_changes(self, model, ids: list[int], rows: list[dict[str, Any]], paths) -> None:
        """Each record's past moves. Records made through the services entered their pipeline
        today; they are put where their history ends instead."""
        content_type = self.content_types[model]
        changes = [
            change
            for pk, row, path in zip(ids, rows, paths, strict=True)
            if path is not None
            for change in StageHistories.rows(path, content_type, pk, row)
        ]
        if not self.bulk:
            StageChange.objects.filter(content_type_id=content_type, object_id__in=ids).delete()
            for pk, row in zip(ids, rows, strict=True):
                model.objects.filter(pk=pk).update(
                    **{k: row[k] for k in _SET_AFTERWARDS if k in row and k != "updated_at"}
                )
        self._insert(StageChange, changes, ids=False)
        self.counts["stage changes"] += len(changes)

    def _insert(self, model, rows: list[dict[str, Any]], ids: bool = True) -> list[int]:
        """Insert rows (dicts of column values; missing ones get the field default).

        PostgreSQL: one COPY per call, with ids taken from the table's sequence beforehand, so
        rows never become model instances. Elsewhere: ``bulk_create``. Returns the ids in order
        (an empty list when ``ids`` is false).
        """
        if not rows:
            return []
        if not self.copy:
            instances = [model(**row) for row in rows]
            model.objects.bulk_create(instances, batch_size=self.batch_size)
            return [instance.pk for instance in instances] if ids else []
        table = model._meta.db_table
        given = rows[0].keys()
        fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        defaults = {f.attname: f.get_default() for f in fields if f.attname not in given}
        columns = [f.attname for f in fields]
        with connection.cursor() as cursor:
            new_ids: list[int] = []
            if ids:
                cursor.execute(
                    "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                    [table, len(rows)],
                )
                new_ids = [row[0] for row in cursor.fetchall()]
            names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
            if ids:
                names = "id, " + names
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for index, row in enumerate(rows):
                    values = [row[c] if c in row else defaults[c] for c in columns]
                    copy.write_row([new_ids[index], *values] if ids else values)
        return new_ids

    def _bar(self, label: str, total: int, unit: str = "rows") -> tqdm:
        return tqdm(
            total=total,
            desc=f"{label:<14}",
            unit=f" {unit}",
            unit_scale=True,
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
            mininterval=0.5,
        )


def _total(lines: list[dict[str, Any]], currency: str) -> Decimal:
    """An order's total exactly as ``crm.services._replace_lines`` computes it."""
    total = sum(
        (
            line["quantity"] * line["unit_price"] * (Decimal(100) - line["discount_pct"]) / 100
            for line in lines
        ),
        Decimal(0),
    )
    return total.quantize(Decimal(1).scaleb(-MINOR_UNITS[currency]), rounding=ROUND_HALF_UP)
