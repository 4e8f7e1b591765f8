"""Approvals for the demo: two processes and a dozen requests in every state, so the inbox, the
record pages and the approvals report have something to show.

"Large deal" runs on opportunities of 100,000,000 won or more (the sales manager, then finance)
and "Large order" on orders of 30,000,000 won or more (the sales manager). The requests are made
through the approval services, as people would make them, one story at a time: each step
happens now, then everything the story wrote so far is moved back by the time until its next
step, so the story ends where it should lie in the past (the services record what happens now,
and ``time_machine`` is a test tool). A database that already holds approval requests is left
alone, and so are scales written in bulk.
"""

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.db import models, transaction
from django.db.models import F

from trellis.core import clock
from trellis.core.models import AuditEvent, User
from trellis.crm.models import Opportunity, Order
from trellis.process.approvals import services
from trellis.process.approvals.models import (
    ApprovalAssignment,
    ApprovalEvent,
    ApprovalProcess,
    ApprovalRequest,
    ApprovalStepRun,
    Delegation,
    ExceptionRequest,
)
from trellis.process.models import Notification

LARGE_DEAL = 100_000_000
LARGE_ORDER = 30_000_000

# The time columns of what a story writes, moved back together.
_MOVED: dict[type[models.Model], tuple[str, ...]] = {
    ApprovalRequest: ("submitted_at", "finished_at"),
    ApprovalStepRun: (
        "started_at",
        "finished_at",
        "remind_at",
        "due_at",
        "reminded_at",
        "escalated_at",
        "timer_at",
    ),
    ApprovalAssignment: ("created_at", "decided_at", "due_at", "told_at"),
    ApprovalEvent: ("at",),
    ExceptionRequest: ("requested_at", "decided_at", "unlocked_until"),
    AuditEvent: ("at",),
    Notification: ("created_at",),
}


class _Story:
    """What happens to one request, ``days`` ago: ``at(hours)`` before each later step (hours
    after the submission), ``end()`` once it is told."""

    def __init__(self, days: float) -> None:
        self.ago = dt.timedelta(days=days)
        self.now = dt.timedelta(0)
        self.marks = {
            model: model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            for model in _MOVED
        }

    def at(self, hours: float) -> None:
        later = dt.timedelta(hours=hours)
        self._back(later - self.now)
        self.now = later

    def end(self) -> None:
        self._back(self.ago - self.now)

    def _back(self, delta: dt.timedelta) -> None:
        for model, names in _MOVED.items():
            model.objects.filter(pk__gt=self.marks[model]).update(
                **{name: F(name) - delta for name in names}
            )


def create(users: dict[str, User]) -> int:
    """The demo processes and, on a database with none yet, their requests; how many."""
    if ApprovalRequest.objects.exists() or not {"admin", "hyunwoo", "jihoon"} <= users.keys():
        return 0
    with transaction.atomic():
        deal, order = _processes(users)
        _Stories(users, deal, order).tell()
    return ApprovalRequest.objects.count()


def _processes(users: dict[str, User]) -> tuple[ApprovalProcess, ApprovalProcess]:
    admin, finance = users["admin"], users["hyunwoo"]
    manager = {"kind": "manager"}
    definitions = [
        {
            "object_type": "opportunity",
            "code": "large-deal",
            "name": "Large deal",
            "name_ko": "대형 영업기회 결재",
            "entry_condition": f"amount >= {LARGE_DEAL:.1f} && currency == 'KRW'",
            "steps": [
                {
                    "name": "Sales manager",
                    "approvers": [manager],
                    "timeout_hours": 8,
                    "remind_before_hours": 2,
                    "escalation": "manager",
                },
                {
                    "name": "Finance",
                    "approvers": [{"kind": "user", "user_id": finance.pk}],
                    "timeout_hours": 16,
                },
            ],
            "material_fields": ["amount", "currency", "expected_close_date"],
        },
        {
            "object_type": "order",
            "code": "large-order",
            "name": "Large order",
            "name_ko": "대량 주문 결재",
            "entry_condition": f"total >= {LARGE_ORDER:.1f}",
            "steps": [{"name": "Sales manager", "approvers": [manager], "timeout_hours": 16}],
        },
    ]
    made = []
    for data, alert in zip(definitions, (15, 20), strict=True):
        process = ApprovalProcess.objects.filter(code=data["code"]).first()
        if process is None:
            process = services.save_process(admin, data)
            services.set_exception_alert(admin, process.pk, alert)
        made.append(process)
    return made[0], made[1]


class _Stories:
    def __init__(self, users: dict[str, User], deal: ApprovalProcess, order: ApprovalProcess):
        self.users = users
        self.deal = deal
        self.order = order
        self.taken: set[tuple[str, int]] = set()

    def _record(self, model: type, prefer: Callable[[User], bool]) -> Any:
        """A record owned by a seller, not submitted yet, that meets the process's entry
        condition; sellers for whom ``prefer`` holds first."""
        if model is Opportunity:
            found = Opportunity.objects.filter(
                status="open", currency="KRW", amount__gte=LARGE_DEAL
            )
        else:
            found = Order.objects.filter(currency="KRW", total__gte=LARGE_ORDER)
        key = model._meta.model_name
        candidates = [
            r
            for r in found.filter(owner__role__code="sales", owner__manager__isnull=False)
            .select_related("owner__manager")
            .order_by("pk")
            if (key, r.pk) not in self.taken
        ]
        candidates.sort(key=lambda r: not prefer(r.owner))
        if not candidates:
            return None
        self.taken.add((key, candidates[0].pk))
        return candidates[0]

    def _submit(self, process: ApprovalProcess, record: Any, comment: str = "") -> ApprovalRequest:
        return services.submit(
            record.owner,
            process.object_type,
            record.pk,
            process_id=process.pk,
            comment=comment,
        )

    def tell(self) -> None:
        not_hyunwoo = self._managed_by_other_than("hyunwoo")
        for story, prefer in (
            (self._approved, not_hyunwoo),
            (self._escalated, self._managed_by("jihoon")),
            (self._rejected, not_hyunwoo),
            (self._recalled, not_hyunwoo),
            (self._override_refused, not_hyunwoo),
            (self._unlocked, not_hyunwoo),
            (self._delegated, self._managed_by("sujin")),
            (self._order_approved, not_hyunwoo),
            (self._order_overdue, not_hyunwoo),
            (self._waiting, not_hyunwoo),
        ):
            story(prefer)

    @staticmethod
    def _managed_by(username: str) -> Callable[[User], bool]:
        return lambda user: user.manager.username == username

    @staticmethod
    def _managed_by_other_than(username: str) -> Callable[[User], bool]:
        return lambda user: user.manager.username != username

    def _approver(self, request: ApprovalRequest) -> User:
        """Whoever was last asked to decide the request's current step."""
        return (
            ApprovalAssignment.objects.filter(request=request, status="pending")
            .select_related("user")
            .latest("pk")
            .user
        )

    def _decide(self, request: ApprovalRequest, *, comment: str = "") -> None:
        services.approve(self._approver(request), request.pk, comment=comment)

    # The stories, oldest first.

    def _approved(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=40)
        request = self._submit(self.deal, record, "연간 계약 갱신 건입니다.")
        story.at(3)
        self._decide(request, comment="좋습니다.")
        story.at(22)
        self._decide(request)
        story.end()

    def _escalated(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=33)
        request = self._submit(self.deal, record)
        run = ApprovalStepRun.objects.get(request=request)
        late = (run.due_at - run.started_at).total_seconds() / 3600 + 1
        # The manager never answered: past the due time, the sweep escalates.
        story.at(late)
        services.fire_due_timers()
        story.at(late + 2)
        self._decide(request, comment="Approved on escalation.")
        story.at(late + 20)
        self._decide(request)
        story.end()

    def _rejected(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=25)
        request = self._submit(self.deal, record)
        story.at(2)
        self._decide(request)
        story.at(28)
        why = "마진이 너무 낮습니다. 조건을 다시 협의해 주세요."
        services.reject(self._approver(request), request.pk, comment=why)
        story.end()

    def _recalled(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=18)
        request = self._submit(self.deal, record)
        story.at(5)
        services.recall(record.owner, request.pk, comment="The customer asked for a new quote.")
        story.end()

    def _override_refused(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=12)
        request = self._submit(self.deal, record)
        story.at(1)
        self._decide(request)
        story.at(3)
        asked = services.request_exception(
            record.owner,
            request.pk,
            "override",
            "고객이 이번 주 안에 계약을 원합니다. 재무 검토 없이 진행하게 해 주세요.",
        )
        story.at(6)
        services.decide_exception(
            self.users["admin"],
            asked.pk,
            grant=False,
            note="A deal of this size always goes through finance.",
        )
        story.at(34)
        self._decide(request)
        story.end()

    def _unlocked(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=8)
        request = self._submit(self.deal, record)
        story.at(1)
        asked = services.request_exception(
            record.owner, request.pk, "unlock", "예상 마감일을 잘못 입력했습니다."
        )
        story.at(2)
        services.decide_exception(self.users["admin"], asked.pk, grant=True)
        story.at(6)
        self._decide(request)
        story.at(12)
        self._decide(request)
        story.end()

    def _delegated(self, prefer: Callable[[User], bool]) -> None:
        """The seller's manager is away; the delegate decides for her."""
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        away, delegate = record.owner.manager, self.users["jihoon"]
        if away.pk != delegate.pk and not Delegation.objects.filter(user=away).exists():
            now = clock.now()
            services.set_delegation(
                away, delegate.pk, now - dt.timedelta(days=6), now + dt.timedelta(days=2)
            )
        story = _Story(days=5)
        request = self._submit(self.deal, record)
        story.at(2)
        self._decide(request, comment="대리 결재합니다.")
        story.at(7)
        self._decide(request)
        story.end()

    def _order_approved(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Order, prefer)
        if record is None:
            return
        story = _Story(days=20)
        request = self._submit(self.order, record)
        story.at(6)
        self._decide(request)
        story.end()

    def _order_overdue(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Order, prefer)
        if record is None:
            return
        story = _Story(days=0)
        request = self._submit(self.order, record, "납기 일정이 촉박합니다.")
        run = ApprovalStepRun.objects.get(request=request)
        # Submitted a day more than its timeout ago: it waits past its due time.
        story.ago = run.due_at - run.started_at + dt.timedelta(days=1)
        story.end()

    def _waiting(self, prefer: Callable[[User], bool]) -> None:
        record = self._record(Opportunity, prefer)
        if record is None:
            return
        story = _Story(days=1 / 24)
        self._submit(self.deal, record, "신규 고객, 첫 대형 계약입니다.")
        story.end()
