"""Values that look like a Korean B2B sales team's data, for ``trellis demo``.

Everything here is a pure function of a ``random.Random``, so a seed gives the same data again.
Generated values are already in the stored form the services produce: phone numbers in E.164
(``+82212345678``), business registration numbers as ``123-45-67890`` with a valid check digit,
e-mail domains in lower case.
"""

import random
import re
from decimal import Decimal

# Surnames with their usual romanisation, weighted roughly by how common they are.
SURNAMES = [
    ("김", "kim", 21),
    ("이", "lee", 15),
    ("박", "park", 8),
    ("최", "choi", 5),
    ("정", "jung", 5),
    ("강", "kang", 2),
    ("조", "cho", 2),
    ("윤", "yoon", 2),
    ("장", "jang", 2),
    ("임", "lim", 2),
    ("한", "han", 1),
    ("오", "oh", 1),
    ("서", "seo", 1),
    ("신", "shin", 1),
    ("권", "kwon", 1),
    ("황", "hwang", 1),
    ("안", "ahn", 1),
    ("송", "song", 1),
    ("전", "jeon", 1),
    ("홍", "hong", 1),
]
_SURNAME_WEIGHTS = [w for _s, _r, w in SURNAMES]

GIVEN_SYLLABLES = [
    ("민", "min"),
    ("지", "ji"),
    ("서", "seo"),
    ("준", "jun"),
    ("현", "hyun"),
    ("우", "woo"),
    ("수", "su"),
    ("영", "young"),
    ("은", "eun"),
    ("하", "ha"),
    ("윤", "yun"),
    ("도", "do"),
    ("예", "ye"),
    ("진", "jin"),
    ("성", "sung"),
    ("태", "tae"),
    ("혜", "hye"),
    ("재", "jae"),
    ("소", "so"),
    ("유", "yu"),
    ("나", "na"),
    ("연", "yeon"),
    ("호", "ho"),
    ("원", "won"),
    ("희", "hee"),
    ("경", "kyung"),
    ("동", "dong"),
    ("상", "sang"),
]

ENGLISH_FIRST = [
    "James",
    "Emily",
    "Daniel",
    "Sarah",
    "Michael",
    "Olivia",
    "David",
    "Sophia",
    "Chris",
    "Grace",
    "Ryan",
    "Hannah",
    "Kevin",
    "Julia",
    "Brian",
    "Laura",
]
ENGLISH_LAST = [
    "Smith",
    "Johnson",
    "Brown",
    "Miller",
    "Wilson",
    "Taylor",
    "Anderson",
    "Thomas",
    "Moore",
    "Martin",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
]

# Company name parts: Korean root + business word, each with a romanised form for the domain.
COMPANY_ROOTS = [
    ("한빛", "hanbit"),
    ("누리", "nuri"),
    ("가온", "gaon"),
    ("미래", "mirae"),
    ("세종", "sejong"),
    ("태양", "taeyang"),
    ("하늘", "haneul"),
    ("바다", "bada"),
    ("푸른", "pureun"),
    ("새빛", "saebit"),
    ("다온", "daon"),
    ("우리", "woori"),
    ("대한", "daehan"),
    ("동방", "dongbang"),
    ("제일", "jeil"),
    ("한결", "hangyeol"),
    ("아름", "areum"),
    ("초록", "chorok"),
    ("별빛", "byeolbit"),
    ("온누리", "onnuri"),
    ("해오름", "haeoreum"),
    ("그린", "green"),
    ("스마트", "smart"),
    ("코리아", "korea"),
    ("대성", "daesung"),
    ("삼정", "samjung"),
    ("청솔", "cheongsol"),
    ("한마음", "hanmaeum"),
    ("에이스", "ace"),
    ("로뎀", "rodem"),
]
COMPANY_WORDS = [
    ("소프트", "soft", "IT 서비스"),
    ("테크", "tech", "IT 서비스"),
    ("시스템", "system", "IT 서비스"),
    ("정보통신", "ict", "통신"),
    ("네트웍스", "networks", "통신"),
    ("전자", "elec", "전자·반도체"),
    ("반도체", "semi", "전자·반도체"),
    ("물산", "trading", "도소매"),
    ("유통", "dist", "도소매"),
    ("산업", "industry", "제조"),
    ("정밀", "precision", "제조"),
    ("화학", "chem", "제조"),
    ("바이오", "bio", "제약·바이오"),
    ("제약", "pharm", "제약·바이오"),
    ("건설", "const", "건설"),
    ("푸드", "food", "식품"),
    ("로지스", "logis", "물류"),
    ("에너지", "energy", "에너지"),
    ("모빌리티", "mobility", "자동차"),
    ("헬스케어", "health", "의료"),
    ("디자인", "design", "서비스"),
    ("랩스", "labs", "IT 서비스"),
    ("솔루션", "solutions", "IT 서비스"),
    ("금융서비스", "finance", "금융"),
]
LEGAL_FORMS = ["(주)", "(주)", "주식회사 ", "", "(유)"]

ENGLISH_COMPANY_SUFFIX = ["Korea Ltd.", "Korea", "Inc.", "Co., Ltd.", "Asia Pacific", "Group"]
ENGLISH_INDUSTRIES = ["Software", "Manufacturing", "Logistics", "Retail", "Finance", "Healthcare"]

SEOUL_DISTRICTS = ["강남구", "서초구", "송파구", "마포구", "영등포구", "중구", "종로구", "금천구"]
STREETS = ["테헤란로", "강남대로", "을지로", "세종대로", "올림픽로", "디지털로", "여의대로"]
CITIES = [
    ("서울특별시", "02", 50),
    ("경기도 성남시 분당구", "031", 15),
    ("인천광역시 연수구", "032", 5),
    ("부산광역시 해운대구", "051", 12),
    ("대구광역시 수성구", "053", 5),
    ("대전광역시 유성구", "042", 5),
    ("광주광역시 서구", "062", 4),
    ("울산광역시 남구", "052", 4),
]
_CITY_WEIGHTS = [w for _c, _a, w in CITIES]

TITLES_KO = ["대표이사", "이사", "부장", "차장", "과장", "팀장", "대리", "구매담당", "IT 팀장"]
TITLES_EN = ["CTO", "Head of IT", "Procurement Manager", "Operations Director", "CFO"]

DEAL_TOPICS = [
    "ERP 도입",
    "CRM 구축",
    "그룹웨어 라이선스",
    "보안 솔루션 도입",
    "클라우드 전환",
    "서버 교체",
    "유지보수 계약 갱신",
    "데이터 분석 플랫폼",
    "MES 고도화",
    "콜센터 시스템",
    "Cloud migration",
    "License renewal",
    "Support contract",
    "Network upgrade",
    "Data platform rollout",
]
DEAL_KINDS = ["", " 1차", " 2차", " 확장", " (신규)", " (갱신)"]

# Name, SKU, unit price, currency.
PRODUCTS = [
    ("트렐리스 CRM 스탠다드 (사용자/년)", "TRL-CRM-STD", 480_000, "KRW"),
    ("트렐리스 CRM 엔터프라이즈 (사용자/년)", "TRL-CRM-ENT", 960_000, "KRW"),
    ("그룹웨어 라이선스 (사용자/년)", "SW-GW-001", 120_000, "KRW"),
    ("전자결재 모듈", "SW-EAP-002", 15_000_000, "KRW"),
    ("ERP 재무회계 모듈", "SW-ERP-FI", 45_000_000, "KRW"),
    ("ERP 구매·재고 모듈", "SW-ERP-MM", 38_000_000, "KRW"),
    ("MES 라이선스", "SW-MES-100", 80_000_000, "KRW"),
    ("백신·EDR 보안 (단말/년)", "SEC-EDR-01", 45_000, "KRW"),
    ("웹 방화벽 어플라이언스", "SEC-WAF-200", 32_000_000, "KRW"),
    ("DB 암호화 솔루션", "SEC-DBE-300", 25_000_000, "KRW"),
    ("랙 서버 2U (Xeon, 256GB)", "HW-SRV-2U", 14_500_000, "KRW"),
    ("스토리지 NAS 48TB", "HW-NAS-48", 21_000_000, "KRW"),
    ("L3 스위치 48포트", "HW-SW-L3-48", 6_800_000, "KRW"),
    ("무선 AP (Wi-Fi 6)", "HW-AP-W6", 420_000, "KRW"),
    ("노트북 업무용 14형", "HW-NB-14", 1_650_000, "KRW"),
    ("UPS 10kVA", "HW-UPS-10K", 7_900_000, "KRW"),
    ("구축 컨설팅 (M/D)", "SV-CONS-MD", 900_000, "KRW"),
    ("개발 용역 (M/M)", "SV-DEV-MM", 12_000_000, "KRW"),
    ("연간 유지보수 (라이선스 금액의 15%)", "SV-MA-15", 6_000_000, "KRW"),
    ("현장 교육 (1일)", "SV-TRN-DAY", 1_200_000, "KRW"),
    ("데이터 이관 서비스", "SV-MIG-001", 8_500_000, "KRW"),
    ("클라우드 VM (vCPU 8, 월)", "CL-VM-8", 380_000, "KRW"),
    ("클라우드 오브젝트 스토리지 (TB/월)", "CL-OBJ-TB", 35_000, "KRW"),
    ("Managed Kubernetes (cluster/month)", "CL-K8S-M", 1_100_000, "KRW"),
    ("Analytics Platform Pro (annual)", "SW-ANL-PRO", 24_000_000, "KRW"),
    ("Premium Support 24x7 (annual)", "SV-SUP-247", 18_000_000, "KRW"),
    ("Enterprise License Add-on (USD)", "INTL-ENT-ADD", Decimal("12500.00"), "USD"),
    ("Cloud Backup 10TB (USD/month)", "INTL-BKP-10T", Decimal("899.99"), "USD"),
    ("Security Audit Service (USD)", "INTL-SEC-AUD", Decimal("7450.50"), "USD"),
    ("Training Voucher (USD)", "INTL-TRN-VCH", Decimal("350.00"), "USD"),
]

CALL_SUBJECTS = ["요구사항 확인 통화", "견적 관련 문의 통화", "Follow-up call", "담당자 인사 통화"]
MEETING_SUBJECTS = ["제품 데모 미팅", "현장 방문 미팅", "PoC 결과 리뷰", "Kick-off meeting"]
EMAIL_SUBJECTS = ["견적서 송부", "제안서 전달", "계약서 초안 검토 요청", "Proposal sent"]
NOTE_SUBJECTS = ["미팅 메모", "내부 메모", "Account notes"]
VOC_NOTES = [
    ("고객 의견: 모바일 앱이 느림", "현장 영업사원들이 모바일에서 목록 로딩이 느리다고 함."),
    ("고객 의견: 엑셀 내보내기 필요", "월말 보고용으로 엑셀 내보내기 기능을 강하게 요청."),
    ("고객 의견: 가격 부담", "경쟁사 대비 라이선스 단가가 높다는 의견. 다년 계약 할인 문의."),
    ("VOC: SSO integration", "Customer needs SAML SSO with their Azure AD before rollout."),
    ("고객 의견: 기술지원 만족", "장애 대응이 빨라서 만족한다는 피드백."),
]

LEAD_SOURCES = [
    ("web", 30),
    ("referral", 15),
    ("event", 15),
    ("cold_call", 10),
    ("partner", 15),
    ("advertising", 10),
    ("other", 5),
]
LEAD_STATUSES = [
    ("new", 35),
    ("contacted", 25),
    ("qualified", 15),
    ("unqualified", 15),
    ("converted", 10),
]


def weighted(rng: random.Random, pairs: list[tuple[str, int]]) -> str:
    return rng.choices([v for v, _w in pairs], [w for _v, w in pairs])[0]


def korean_person(rng: random.Random) -> tuple[str, str]:
    """A Korean name and a romanised e-mail local part, e.g. ("김민지", "minji.kim")."""
    surname, roman, _w = rng.choices(SURNAMES, _SURNAME_WEIGHTS)[0]
    (s1, r1), (s2, r2) = rng.choice(GIVEN_SYLLABLES), rng.choice(GIVEN_SYLLABLES)
    return f"{surname}{s1}{s2}", f"{r1}{r2}.{roman}"


def english_person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(ENGLISH_FIRST), rng.choice(ENGLISH_LAST)
    return f"{first} {last}", f"{first}.{last}".lower()


def person(rng: random.Random) -> tuple[str, str]:
    return korean_person(rng) if rng.random() < 0.85 else english_person(rng)


def brn(rng: random.Random) -> str:
    """A Korean business registration number with a correct check digit (see core.validators)."""
    digits = [*map(int, f"{rng.randint(101, 899):03d}{rng.randint(1, 88):02d}")]
    digits += [rng.randint(0, 9) for _ in range(4)]
    weights = (1, 3, 7, 1, 3, 7, 1, 3, 5)
    total = sum(d * w for d, w in zip(digits, weights, strict=False)) + digits[8] * 5 // 10
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return f"{text[:3]}-{text[3:5]}-{text[5:]}"


def landline(rng: random.Random, area: str = "02") -> str:
    """An office number in E.164: 02-2345-6789 is stored as +82223456789."""
    if area == "02" or rng.random() < 0.5:
        local = f"{rng.randint(2000, 9999)}{rng.randint(0, 9999):04d}"
    else:
        local = f"{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    return f"+82{area[1:]}{local}"


def mobile(rng: random.Random) -> str:
    """A mobile number in E.164: 010-2345-6789 is stored as +821023456789.

    010-5970 to 010-5999 are not allocated (libphonenumber rejects them), so they are skipped.
    """
    exchange = rng.randint(2000, 9969)
    exchange += 30 if exchange >= 5970 else 0
    return f"+8210{exchange}{rng.randint(0, 9999):04d}"


def city(rng: random.Random) -> tuple[str, str]:
    """A city (with district) and its area code."""
    name, area, _w = rng.choices(CITIES, _CITY_WEIGHTS)[0]
    return name, area


def address(rng: random.Random, city_name: str) -> str:
    district = rng.choice(SEOUL_DISTRICTS) + " " if city_name == "서울특별시" else ""
    building = rng.randint(1, 30)
    return f"{city_name} {district}{rng.choice(STREETS)} {rng.randint(1, 700)}, {building}층"


_NON_SLUG = re.compile(r"[^a-z0-9]+")


def company(rng: random.Random, faker_ko) -> dict:
    """An account's name and the values that go with it (domain, industry, BRN, phone, ...)."""
    city_name, area = city(rng)
    roll = rng.random()
    if roll < 0.55:
        (root, r_root), (word, r_word, industry) = (
            rng.choice(COMPANY_ROOTS),
            rng.choice(COMPANY_WORDS),
        )
        name = f"{rng.choice(LEGAL_FORMS)}{root}{word}"
        domain = f"{r_root}{r_word}{rng.randint(1, 999)}.co.kr"
    elif roll < 0.8:
        name = faker_ko.company()
        (_root, r_root), (_word, r_word, industry) = (
            rng.choice(COMPANY_ROOTS),
            rng.choice(COMPANY_WORDS),
        )
        domain = f"{r_root}-{r_word}{rng.randint(1, 9999)}.co.kr"
    else:
        base = rng.choice(ENGLISH_LAST) + rng.choice(["", " Systems", " Digital", " Logistics"])
        name = f"{base} {rng.choice(ENGLISH_COMPANY_SUFFIX)}"
        industry = rng.choice(ENGLISH_INDUSTRIES)
        domain = f"{_NON_SLUG.sub('', base.lower())}{rng.randint(1, 9999)}.com"
    return {
        "name": name,
        "domain": domain,
        "industry": industry,
        "business_registration_number": brn(rng) if rng.random() < 0.9 else "",
        "phone": landline(rng, area),
        "email": f"{rng.choice(['info', 'contact', 'sales', 'biz'])}@{domain}",
        "website": f"https://www.{domain}",
        "address": address(rng, city_name),
        "area": area,
    }


def title(rng: random.Random, korean: bool) -> str:
    return rng.choice(TITLES_KO) if korean else rng.choice(TITLES_EN)


def krw_amount(rng: random.Random) -> Decimal:
    """5,000,000 to 500,000,000 won, log-uniform, rounded to 100,000 won."""
    value = 10 ** rng.uniform(6.7, 8.7)
    return Decimal(max(5_000_000, min(500_000_000, round(value / 100_000) * 100_000)))


def usd_amount(rng: random.Random) -> Decimal:
    """5,000.00 to 500,000.00 dollars, with cents."""
    cents = round(10 ** rng.uniform(5.7, 7.7))
    return Decimal(cents).scaleb(-2)


def deal_name(rng: random.Random, account_name: str) -> str:
    short = account_name.replace("(주)", "").replace("주식회사", "").replace("(유)", "").strip()
    return f"{short} {rng.choice(DEAL_TOPICS)}{rng.choice(DEAL_KINDS)}"
