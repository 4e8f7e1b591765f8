"""``trellis manage demo_support``: a support desk to look at — cases in every state.

Written through the intake and the agent services, as customers and agents would: every case
has its tracking number, timeline, audit rows and the e-mails it would have sent (in the
outbox). Runs once: a database that already holds cases is left alone. Customers use ``.example``
addresses, which no relay delivers.
"""

import datetime as dt

from django.core.management.base import BaseCommand
from django.db import transaction

from trellis.core import clock
from trellis.core.models import Role, Team, User
from trellis.core.services import create_user, system_user
from trellis.crm import services as crm_services
from trellis.crm.models import Account, Product
from trellis.support import billing, contracts, intake, services
from trellis.support.models import AssignmentRule, Case, ReplyTemplate

PASSWORD = "trellis-demo"
TEAM = "Support"

AGENTS = [("jiwon", "서지원"), ("seoyeon", "최서연"), ("tom", "Tom Baker")]

TEMPLATES = [
    (
        "Looking into it",
        "en",
        "Thank you for reporting this. We are looking into it and will write again as soon as "
        "we know more.",
    ),
    (
        "Looking into it",
        "ko",
        "문의해 주셔서 감사합니다. 현재 확인 중이며, 내용이 확인되는 대로 다시 연락드리겠습니다.",
    ),
    (
        "Need more information",
        "en",
        "Could you tell us the steps that lead to the problem, and send a screenshot?",
    ),
    (
        "Need more information",
        "ko",
        "문제가 발생하는 순서와 화면 캡처를 보내주시면 빠르게 확인하겠습니다.",
    ),
]

# (customer name, e-mail, subject, message, channel, what the agents did)
CASES = [
    (
        "박서준",
        "seojun.park@hanbit-logistics.example",
        "송장 출력 시 오류가 발생합니다",
        "어제 업데이트 이후 송장을 출력하면 '알 수 없는 오류' 메시지가 나옵니다. "
        "확인 부탁드립니다.",
        "email",
        "defect-in-progress",
    ),
    (
        "Emily Clark",
        "emily@northwind.example",
        "Export to Excel would help",
        "Could the order list be exported to Excel? We copy it by hand every month.",
        "web",
        "feature",
    ),
    (
        "이하은",
        "haeun.lee@mail.example",
        "비밀번호 재설정 메일이 오지 않아요",
        "비밀번호 재설정을 눌렀는데 메일이 오지 않습니다.",
        "web",
        "waiting",
    ),
    (
        "James Lee",
        "james.lee@contoso.example",
        "Invoice shows the wrong VAT",
        "Our October invoice shows 0% VAT instead of 10%.",
        "email",
        "resolved",
    ),
    (
        "김도현",
        "dohyun@hanbit-logistics.example",
        "대시보드 사용 방법 문의",
        "대시보드에 새 위젯을 추가하는 방법을 알려주세요.",
        "phone",
        "queue",
    ),
    (
        "Sophie Martin",
        "sophie@fabrikam.example",
        "App crashes when I attach a PDF",
        "The app closes every time I attach a PDF larger than 5 MB.",
        "email",
        "queue",
    ),
    (
        "정민수",
        "minsu.jung@mail.example",
        "엑셀 내보내기 기능 요청",
        "주문 목록을 엑셀로 내보낼 수 있으면 좋겠습니다.",
        "email",
        "feature",
    ),
]


class Command(BaseCommand):
    help = "Create a demo support desk: agents, an assignment rule, reply templates and cases."

    def handle(self, *args, **options):
        if Case.objects.exists():
            self.stdout.write("Support demo: cases exist already; nothing to do.")
            return
        with transaction.atomic():
            agents = _ensure_agents()
            _ensure_configuration()
            # Before the cases, so that the intake links them to their accounts and contracts.
            made = _ensure_contracts(agents[0])
        for name, email, subject, body, channel, story in CASES:
            actor = agents[0] if channel == "phone" else None
            if channel == "phone":
                case = services.log_phone_call(
                    actor, requester_email=email, requester_name=name, subject=subject, body=body
                )
            else:
                case, _key = intake.open_case(
                    channel=channel,
                    subject=subject,
                    body=body,
                    requester_email=email,
                    requester_name=name,
                )
            _play(story, case, agents)
        _fees(agents)
        self.stdout.write(
            f"Support demo: {len(CASES)} cases, {len(agents)} agents, {made} support contracts."
        )


def _ensure_agents() -> list[User]:
    team, _ = Team.objects.get_or_create(name=TEAM)
    agents = []
    for username, full_name, *_rest in AGENTS:
        user = User.objects.filter(username=username).first()
        if user is None:
            first, _, last = full_name.partition(" ")
            # Korean names are written family name first: 서지원 is Seo (서) Jiwon (지원).
            if not last:
                last, first = full_name[:1], full_name[1:]
            user = create_user(
                username,
                PASSWORD,
                role=Role.SUPPORT,
                team=team,
                first_name=first,
                last_name=last,
                email=f"{username}@trellis.localhost",
            )
        agents.append(user)
    return agents


def _ensure_configuration() -> None:
    team = Team.objects.get(name=TEAM)
    AssignmentRule.objects.get_or_create(
        name="Korean customers: round robin",
        defaults={"order": 10, "language": "ko", "method": "round_robin", "team": team},
    )
    AssignmentRule.objects.get_or_create(
        name="Everyone else: the support queue",
        defaults={"order": 100, "method": "queue", "team": team},
    )
    for name, language, body in TEMPLATES:
        ReplyTemplate.objects.get_or_create(name=name, language=language, defaults={"body": body})


def _play(story: str, case: Case, agents: list[User]) -> None:
    """What the agents did with the case."""
    if story == "queue":
        return
    case.refresh_from_db()
    agent = case.owner or agents[len(case.subject) % len(agents)]
    if case.owner_id is None:
        services.claim(agent, case.pk)
    if story == "defect-in-progress":
        services.classify(agent, case.pk, Case.Kind.DEFECT)
        services.add_note(agent, case.pk, "재현됨: 11월 업데이트의 PDF 모듈 문제로 보임.")
        services.reply(
            agent,
            case.pk,
            "불편을 드려 죄송합니다. 원인을 찾았으며 수정 작업을 진행하고 있습니다.",
            status=Case.Status.IN_PROGRESS,
        )
    elif story == "feature":
        services.classify(agent, case.pk, Case.Kind.FEATURE_REQUEST, feature_title="Excel export")
    elif story == "waiting":
        services.classify(agent, case.pk, Case.Kind.QUESTION)
        services.reply(
            agent,
            case.pk,
            "스팸 메일함을 확인해 주시겠어요? 그래도 없으면 알려주세요.",
            status=Case.Status.WAITING_ON_CUSTOMER,
        )
    elif story == "resolved":
        services.classify(agent, case.pk, Case.Kind.BILLING)
        services.reply(
            agent,
            case.pk,
            "We have corrected the VAT rate and sent a new invoice.",
            status=Case.Status.RESOLVED,
        )


# (account name, e-mail domain, contract name, products: "all" or how many, response hours,
#  fee basis, fee amount, currency, runs from / to in years from today)
CONTRACTS = [
    (
        "한빛물류",
        "hanbit-logistics.example",
        "2026 유지보수 계약",
        "all",
        4,
        "hourly",
        120_000,
        "KRW",
        0,
    ),
    ("Contoso Ltd", "contoso.example", "Standard support", 1, 24, "per_case", 150, "USD", 0),
    ("Northwind Traders", "northwind.example", "Support 2024", "all", None, "", None, "KRW", -2),
]


def _ensure_contracts(agent: User) -> int:
    """Accounts for some demo customers (by their e-mail domain), each with a contract: two
    running, one that ended."""
    system = system_user()
    today = clock.today()
    products = list(Product.objects.filter(is_active=True).order_by("id")[:3])
    made = 0
    for name, domain, title, covered, hours, basis, amount, currency, years in CONTRACTS:
        account = Account.objects.filter(email__iendswith="@" + domain).order_by("id").first()
        if account is None:
            account = crm_services.create(
                system,
                "account",
                {"name": name, "email": f"info@{domain}", "website": f"https://www.{domain}"},
                preset={"owner": system},
            )
        if covered != "all" and not products:
            covered = "all"
        start = dt.date(today.year + years, 1, 1)
        contracts.create_contract(
            agent,
            {
                "account_id": account.pk,
                "name": title,
                "start_date": start,
                "end_date": dt.date(start.year, 12, 31),
                "all_products": covered == "all",
                "products": [] if covered == "all" else [p.pk for p in products[:covered]],
                "response_hours": hours,
                "fee_basis": basis,
                "fee_amount": amount,
                "currency": currency,
            },
        )
        made += 1
    return made


def _fees(agents: list[User]) -> None:
    """A fee agreed and charged on the resolved case; one waiting for the customer's answer
    on a covered case (work outside the contract)."""
    resolved = Case.objects.filter(subject="Invoice shows the wrong VAT").first()
    if resolved is not None:
        agent = resolved.owner or agents[0]
        fee = billing.propose_fee(
            agent,
            resolved.pk,
            amount="150",
            currency="USD",
            description="Correcting and re-issuing the October invoices (1 hour).",
        )
        billing.answer_fee(resolved, fee.pk, agree=True)
    covered = Case.objects.filter(subject="송장 출력 시 오류가 발생합니다").first()
    if covered is not None:
        billing.propose_fee(
            covered.owner or agents[0],
            covered.pk,
            amount="240000",
            currency="KRW",
            description="현장 방문 점검 2시간 (계약 범위 외 작업)",
        )
