"""Global search, list filters, htmx partials and pickers."""

import datetime as dt

import pytest
from django.urls import reverse

from trellis.core.clock import now

from .. import factories

pytestmark = pytest.mark.django_db

HTMX_RESULTS = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "record-results"}
HTMX_DROPDOWN = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "search-dropdown"}


def test_search_finds_korean_partial_words_emails_and_phones(login, sales):
    account = factories.account(sales, name="주식회사 한빛소프트", phone="02-2255-0114")
    contact = factories.contact(sales, name="김민지", email="minji.kim@hanbit.kr")
    factories.lead(sales, name="Lee Jun")
    client = login(sales)
    url = reverse("crm:search")

    page = client.get(url, {"q": "한빛"})
    assert page.status_code == 200
    assert reverse("crm:account-detail", args=[account.pk]) in page.text
    assert "Lee Jun" not in page.text

    assert reverse("crm:contact-detail", args=[contact.pk]) in client.get(url, {"q": "민지"}).text
    assert "김민지" in client.get(url, {"q": "HANBIT.KR"}).text
    assert "주식회사 한빛소프트" in client.get(url, {"q": "2255-0114"}).text


def test_the_search_box_dropdown_is_a_fragment_linking_to_all_results(login, sales):
    factories.contact(sales, name="김민지")
    response = login(sales).get(reverse("crm:search"), {"q": "민지"}, **HTMX_DROPDOWN)
    assert response.status_code == 200
    assert "<html" not in response.text
    assert "김민지" in response.text
    assert reverse("crm:search") + "?q=%EB%AF%BC%EC%A7%80" in response.text


def test_search_does_not_find_hidden_records(login, sales, outsider):
    factories.account(outsider, name="부산 한빛상사")
    response = login(sales).get(reverse("crm:search"), {"q": "한빛"})
    assert "부산 한빛상사" not in response.text
    assert "Nothing found" in response.text


def test_list_search_and_filters_work_without_javascript(login, sales):
    wanted = factories.opportunity(sales, name="ERP 연동 구축")
    won = factories.opportunity(sales, name="ERP 유지보수", status="won")
    factories.opportunity(sales, name="보안 점검")
    client = login(sales)
    response = client.get(reverse("crm:opportunity-list"), {"q": "erp", "status": "open"})
    assert response.status_code == 200
    assert "<html" in response.text
    items = response.context["page"].items
    assert items == [wanted]
    assert won.name not in response.text


def test_htmx_asks_only_for_the_results(login, sales):
    factories.lead(sales, name="박서연")
    response = login(sales).get(reverse("crm:lead-list"), {"q": "서연"}, **HTMX_RESULTS)
    assert response.status_code == 200
    assert "<html" not in response.text
    assert "박서연" in response.text
    assert "HX-Request" in response["Vary"]


def test_pages_move_forward_and_back_without_counting(login, sales, settings):
    settings.TRELLIS = {**settings.TRELLIS, "DEFAULT_PAGE_SIZE": 2}
    for n in range(5):
        factories.lead(sales, name=f"리드 {n}")
    client = login(sales)
    first = client.get(reverse("crm:lead-list"), {"o": "name"})
    assert [lead.name for lead in first.context["page"].items] == ["리드 0", "리드 1"]
    assert "page=2" in first.text and 'rel="prev"' not in first.text
    third = client.get(reverse("crm:lead-list"), {"o": "name", "page": 3})
    assert [lead.name for lead in third.context["page"].items] == ["리드 4"]
    assert 'rel="next"' not in third.text and "page=2" in third.text


def test_unknown_orderings_and_bad_filter_values_are_ignored(login, sales):
    factories.lead(sales, name="박서연")
    response = login(sales).get(
        reverse("crm:lead-list"), {"o": "password", "owner": "abc", "status": "nonsense"}
    )
    assert response.status_code == 200
    assert "박서연" in response.text


def test_the_contact_list_filters_by_account(login, sales):
    hanbit = factories.account(sales, name="한빛")
    factories.contact(sales, name="김민지", accounts=[hanbit.pk])
    factories.contact(sales, name="이준호")
    response = login(sales).get(reverse("crm:contact-list"), {"account": hanbit.pk})
    assert [c.name for c in response.context["page"].items] == ["김민지"]


def test_a_picker_offers_matching_records_and_keeps_the_chosen_one(login, sales, outsider):
    chosen = factories.account(sales, name="대성정밀")
    factories.account(sales, name="주식회사 한빛")
    factories.account(outsider, name="한빛 부산지사")
    response = login(sales).get(
        reverse("crm:pick", args=["account"]),
        {"q": "한빛", "field": "account", "account": chosen.pk, "blank": "1"},
    )
    assert response.status_code == 200
    assert f'<option value="{chosen.pk}" selected>대성정밀</option>' in response.text
    assert "주식회사 한빛" in response.text
    assert "부산지사" not in response.text


def test_the_regarding_picker_searches_every_searchable_type(login, sales):
    account = factories.account(sales, name="주식회사 한빛")
    contact = factories.contact(sales, name="한빛 김대리")
    response = login(sales).get(reverse("crm:pick-regarding"), {"q": "한빛", "field": "regarding"})
    assert f'value="account:{account.pk}" selected' in response.text
    assert f'value="contact:{contact.pk}"' in response.text


def test_the_home_page_counts_my_open_work(login, sales, other_sales):
    factories.opportunity(sales, name="열린 거래", expected_close_date=dt.date(2030, 1, 31))
    factories.opportunity(sales, name="수주 거래", status="won")
    factories.opportunity(other_sales, name="동료 거래")
    factories.lead(sales, status="new")
    factories.lead(sales, status="converted")
    account = factories.account(sales)
    factories.activity(sales, account, subject="오늘 통화")
    factories.activity(
        sales, account, subject="지난달 통화", occurred_at=now() - dt.timedelta(days=30)
    )
    response = login(sales).get(reverse("home"))
    work = response.context["work"]
    assert work.open_opportunities == 1
    assert work.open_leads == 1
    assert work.activities_this_week == 1
    assert [a.subject for a in work.recent_activities] == ["오늘 통화", "지난달 통화"]
    assert "열린 거래" in response.text
    assert "동료 거래" not in response.text


def test_login_page_and_logout(client, sales):
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert "crm/" not in page.text  # nothing of the CRM shows before logging in
    response = client.post(reverse("login"), {"username": "sales", "password": "pw-for-tests"})
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302
