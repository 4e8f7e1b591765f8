"""The Korean UI: the browser's language, the language cookie, and the switcher."""

import pytest
from django.conf import settings
from django.urls import reverse

from .. import factories

pytestmark = pytest.mark.django_db


def test_the_browser_language_gives_korean_labels(login, sales):
    factories.account(sales, name="주식회사 한빛")
    response = login(sales).get(reverse("crm:account-list"), HTTP_ACCEPT_LANGUAGE="ko")
    assert '<html lang="ko">' in response.text
    assert "<h1>거래처</h1>" in response.text
    for label in ("담당자", "리드", "영업기회", "제품", "주문", "활동"):
        assert label in response.text  # the navigation
    assert "새 거래처" in response.text


def test_the_language_cookie_wins_over_the_browser(login, sales):
    client = login(sales)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ko"
    response = client.get(reverse("crm:opportunity-create"), HTTP_ACCEPT_LANGUAGE="en")
    assert "새 영업기회" in response.text
    for label in ("거래처", "금액", "화폐", "예상 마감일", "확률", "소유자"):
        assert label in response.text


def test_the_switcher_sets_the_language(login, sales):
    client = login(sales)
    response = client.post(
        reverse("set_language"), {"language": "ko", "next": reverse("crm:lead-list")}
    )
    assert response.status_code == 302
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert "<h1>리드</h1>" in client.get(reverse("crm:lead-list")).text


def test_service_errors_come_in_korean(login, sales):
    client = login(sales)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ko"
    response = client.post(
        reverse("crm:account-create"), {"name": "한빛", "phone": "12", "owner": sales.pk}
    )
    assert response.status_code == 422
    assert "올바른 전화번호를 입력하세요." in response.text


def test_money_and_the_timeline_read_naturally_in_korean(login, sales):
    deal = factories.opportunity(sales, name="ERP 연동", amount=48_000_000)
    from trellis.crm import services

    services.update(sales, "opportunity", deal.pk, {"status": "won"}, version=1)
    client = login(sales)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ko"
    page = client.get(reverse("crm:opportunity-detail", args=[deal.pk]))
    assert "48,000,000 KRW" in page.text
    assert '<del><span class="status status-open">진행 중</span></del>' in page.text
    assert '<ins><span class="status status-won">수주</span></ins>' in page.text
    assert "수정" in page.text  # the audit action "updated"
