"""The keyword model that suggests a class for a new case, in English and Korean."""

import pytest

from trellis.support import intake, services, triage
from trellis.support.models import Case

pytestmark = pytest.mark.django_db

Kind = Case.Kind


@pytest.fixture(autouse=True)
def fresh_model():
    triage.forget()
    yield
    triage.forget()


@pytest.mark.parametrize(
    ("subject", "text", "kind"),
    [
        ("Error when exporting", "The export crashes with an exception.", Kind.DEFECT),
        ("Login broken", "It doesn’t work since the update.", Kind.DEFECT),
        ("Feature request", "Please add a dark mode option.", Kind.FEATURE_REQUEST),
        ("How do I configure SSO?", "Where is the guide for this setup?", Kind.QUESTION),
        ("Invoice", "We were charged twice; please refund the payment.", Kind.BILLING),
        ("Partnership", "We would like to discuss a marketing partnership.", Kind.OTHER),
        ("로그인 오류", "로그인이 안 돼요.", Kind.DEFECT),
        ("에러 발생", "저장할 때 에러가 납니다.", Kind.DEFECT),
        ("기능 추가 요청", "엑셀 내보내기 기능이 있으면 좋겠습니다.", Kind.FEATURE_REQUEST),
        ("사용법 문의", "보고서는 어떻게 만드나요?", Kind.QUESTION),
        ("청구서 문의", "이번 달 요금이 두 번 청구되었습니다. 환불 부탁드립니다.", Kind.BILLING),
    ],
)
def test_a_fresh_install_suggests_from_the_seed_keywords(subject, text, kind):
    assert triage.suggest_kind(subject, text) == kind


@pytest.mark.parametrize(("subject", "text"), [("", ""), ("Hello", "Kim"), ("", "!!! ???")])
def test_nothing_to_go_on_suggests_nothing(subject, text):
    assert triage.suggest_kind(subject, text) == ""


def test_korean_is_cut_into_words_and_bigrams():
    assert triage.tokens("오류가 안 돼요") == ["오류가", "오류", "류가", "안", "돼요"]
    assert triage.tokens("The export doesn’t work") == ["export", "doesn't", "work"]


def test_the_model_learns_from_classified_cases(admin):
    # "Frobnicator" is the site's own word for a billing module; no seed knows it.
    assert triage.suggest_kind("Frobnicator", "frobnicator totals") == ""
    for n in range(3):
        case, _key = intake.open_case(
            channel="web",
            subject=f"Frobnicator {n}",
            body="The frobnicator totals look odd.",
            requester_email="kim@example.co.kr",
        )
        services.classify(admin, case.pk, Kind.BILLING)
    intake.open_case(
        channel="web",
        subject="Frobnicator",
        body="frobnicator",
        requester_email="lee@example.com",
    )
    # The model in memory is still the one built before; it learns when it is rebuilt.
    assert triage.suggest_kind("Frobnicator", "frobnicator totals") == ""
    triage.forget()
    assert triage.suggest_kind("Frobnicator", "frobnicator totals") == Kind.BILLING


def test_the_model_is_rebuilt_when_stale(monkeypatch):
    first = triage.model()
    assert triage.model() is first
    monkeypatch.setattr(triage, "REFRESH_SECONDS", -1)
    assert triage.model() is not first


def test_new_cases_get_a_suggestion_from_the_intake():
    case, _key = intake.open_case(
        channel="web",
        subject="결제 오류",
        body="결제 화면에서 오류가 발생하고 멈춤 현상이 있어요.",
        requester_email="kim@example.co.kr",
    )
    assert Case.objects.get(pk=case.pk).suggested_kind == Kind.DEFECT
