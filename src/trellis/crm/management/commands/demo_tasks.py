"""``trellis manage demo_tasks``: task threads to look at, on the demo opportunities.

Written through the task services, as people would: a thread handed from a salesperson to her
manager and on to a partner outside the company, one waiting in a team's queue, one overdue, one
finished. Runs after ``demo``; a database that already holds tasks is left alone. Partners use
``.example`` addresses, which no relay delivers.
"""

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db import transaction

from trellis.core import clock
from trellis.core.models import User
from trellis.crm.models import Opportunity
from trellis.process import services
from trellis.process.models import Task, TaskType

TYPES = [
    ("quote", "Prepare a quote", "견적서 작성", True),
    ("call", "Call the customer", "고객 통화", False),
]


class Command(BaseCommand):
    help = "Create demo task threads on the demo opportunities (once)."

    def handle(self, *args, **options):
        if Task.objects.exists():
            self.stdout.write("Tasks exist already; no demo tasks added.")
            return
        users = {u.username: u for u in User.objects.filter(username__in=["minji", "hyunwoo"])}
        deals = list(Opportunity.objects.filter(owner__username="minji").order_by("id")[:3])
        if len(users) < 2 or len(deals) < 3:
            self.stdout.write("Run `trellis demo` first: no demo users or opportunities.")
            return
        with transaction.atomic():
            self._create(users["minji"], users["hyunwoo"], deals)
        self.stdout.write(f"Demo tasks: {Task.objects.count()} in {len(deals) + 1} threads.")

    def _create(self, minji: User, hyunwoo: User, deals: list[Opportunity]) -> None:
        types = {
            code: TaskType.objects.get_or_create(
                code=code, defaults={"name": en, "name_ko": ko, "requires_next_step": required}
            )[0]
            for code, en, ko, required in TYPES
        }
        now = clock.now()
        first, second, third = deals

        # Handed on twice: minji -> her manager -> a partner outside the company.
        quote = services.create_task(
            minji,
            {
                "record_type": "opportunity",
                "record_id": first.pk,
                "title": "견적서 초안 작성",
                "task_type_id": types["quote"].pk,
                "user_id": minji.pk,
                "due_at": now + timedelta(days=2),
                "priority": "high",
            },
        )
        services.complete(
            minji,
            quote.pk,
            next_step={
                "title": "할인율 승인 검토",
                "description": "15% 할인 요청, 마진 확인 부탁드립니다.",
                "user_id": hyunwoo.pk,
                "due_at": now + timedelta(days=3),
            },
        )
        review = Task.objects.get(handed_from=quote)
        services.complete(
            hyunwoo,
            review.pk,
            next_step={
                "title": "납품 일정 확인",
                "external_email": "kim.partner@hanbit-logistics.example",
                "external_name": "김파트너",
                "language": "ko",
                "due_at": now + timedelta(days=5),
            },
        )

        # Waiting in the team's queue for someone to claim it.
        services.create_task(
            hyunwoo,
            {
                "record_type": "opportunity",
                "record_id": second.pk,
                "title": "Call back about the renewal terms",
                "task_type_id": types["call"].pk,
                "team_id": minji.team_id,
                "due_at": now + timedelta(hours=6),
            },
        )

        # Overdue. The services refuse a due time in the past, so the demo sets it as if a day
        # had gone by since the task was given.
        overdue = services.create_task(
            minji,
            {
                "record_type": "opportunity",
                "record_id": third.pk,
                "title": "고객사 방문 일정 잡기",
                "user_id": minji.pk,
                "due_at": now + timedelta(hours=1),
            },
        )
        Task.objects.filter(pk=overdue.pk).update(due_at=now - timedelta(days=1))

        # Finished: a thread about no record in particular.
        done = services.create_task(
            minji,
            {"title": "Update the price list for 2027", "user_id": minji.pk},
        )
        services.complete(minji, done.pk, thread_finished=True)
