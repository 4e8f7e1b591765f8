"""A person's first session: log in, create an account and a contact, find them, switch to
Korean and edit in Korean, then check the saved value and the timeline."""

import re

import pytest
from playwright.sync_api import Page, expect

from trellis.crm.models import Account, Contact

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")


def search_box(page: Page, text: str) -> None:
    box = page.locator("#global-search-input")
    box.fill("")
    box.press_sequentially(text)


def test_create_find_and_edit_in_korean(page: Page, admin, transactional_db) -> None:
    log_in(page, "admin", "pw-for-tests")

    # An account.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts").click()
    page.get_by_role("link", name="+ New account").click()
    page.fill("#id_name", "Hanbit Soft")
    page.fill("#id_phone", "02-2255-0114")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hanbit Soft")
    expect(page.locator(".messages")).to_contain_text("was created")

    # A contact linked to it, picked through the account picker's search.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name="+ New contact").click()
    page.fill("#id_name", "Minji Kim")
    page.fill("#id_email", "minji.kim@hanbit.kr")
    picker = page.locator(".field", has=page.locator("#id_accounts"))
    picker.locator(".picker-search").press_sequentially("Hanbit")
    expect(page.locator("#id_accounts option", has_text="Hanbit Soft")).to_have_count(1)
    page.select_option("#id_accounts", label="Hanbit Soft")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Minji Kim")
    expect(page.get_by_role("link", name="Hanbit Soft")).to_be_visible()

    # Both come up in the search box as one types; Enter opens the full results.
    search_box(page, "hanbit")
    dropdown = page.locator("#search-dropdown")
    expect(dropdown.get_by_role("option", name=re.compile("Hanbit Soft"))).to_be_visible()
    expect(dropdown.get_by_role("option", name=re.compile("Minji Kim"))).to_be_visible()
    page.locator("#global-search-input").press("Enter")
    expect(page).to_have_url(re.compile(r"/crm/search/\?q=hanbit"))
    results = page.locator("main")
    expect(results.get_by_role("link", name="Hanbit Soft")).to_be_visible()
    expect(results.get_by_role("link", name="Minji Kim")).to_be_visible()

    # Switch the interface to Korean from the user menu.
    page.locator(".user-menu summary").click()
    page.get_by_role("button", name="한국어").click()
    nav = page.get_by_role("navigation", name="주 메뉴")
    expect(nav.get_by_role("link", name="거래처")).to_be_visible()
    expect(nav.get_by_role("link", name="영업기회")).to_be_visible()

    # Edit the contact in Korean; a bad phone is caught as soon as the field loses focus.
    results.get_by_role("link", name="Minji Kim").click()
    page.get_by_role("link", name="수정").click()
    expect(page.locator("label[for=id_name]")).to_contain_text("이름")
    page.fill("#id_phone", "12")
    page.locator("#id_mobile").focus()
    phone_errors = page.locator(".field", has=page.locator("#id_phone")).locator(".field-errors")
    expect(phone_errors).to_have_text("올바른 전화번호를 입력하세요.")
    page.fill("#id_phone", "010-1234-5678")
    page.fill("#id_name", "김민지")
    page.get_by_role("button", name="저장").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("김민지")
    expect(page.locator(".messages")).to_contain_text("저장했습니다")
    change = page.locator(".timeline .entry.change").first
    expect(change).to_contain_text("수정")
    expect(change.locator("del").first).to_have_text("Minji Kim")
    expect(change.locator("ins").first).to_have_text("김민지")
    expect(change).to_contain_text(str(admin))

    # The account gets a Korean name too, and Korean partial words find both.
    page.get_by_role("link", name="Hanbit Soft").click()
    page.get_by_role("link", name="수정").click()
    page.fill("#id_name", "주식회사 한빛")
    page.get_by_role("button", name="저장").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("주식회사 한빛")
    search_box(page, "한빛")
    expect(
        page.locator("#search-dropdown").get_by_role("option", name=re.compile("주식회사 한빛"))
    ).to_be_visible()
    search_box(page, "민지")
    expect(
        page.locator("#search-dropdown").get_by_role("option", name=re.compile("김민지"))
    ).to_be_visible()

    contact = Contact.objects.get()
    assert (contact.name, contact.phone, contact.version) == ("김민지", "+821012345678", 2)
    assert list(contact.accounts.values_list("name", flat=True)) == ["주식회사 한빛"]
    assert Account.objects.get().version == 2
