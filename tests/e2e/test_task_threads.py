"""A task thread through three people, in the browser, with real mail.

Ana starts a thread about an account by giving Ben a task; Ben completes it and hands the next
step to a partner outside the company; the partner gets the task by e-mail from a real SMTP
server, opens the signed link without an account and says the thread is finished; Ana sees the
whole thread on the account's Tasks panel.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from trellis.core.models import Role
from trellis.process.models import Task, TaskEvent

from .. import factories

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

PARTNER = "jisoo@partner.example"


def log_in(browser: Browser, live_server, username: str) -> Page:
    context = browser.new_context(base_url=live_server.url, locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")
    return page


def body_of(received) -> str:
    return received.message.get_body(preferencelist=("plain",)).get_content()


def in_days(days: int) -> str:
    """A time ``days`` from now as the browser's date-and-time picker takes it."""
    return (timezone.localtime() + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")


def test_a_thread_through_three_people(
    page: Page, browser: Browser, live_server, smtp_sink, transactional_db
) -> None:
    team = factories.TeamFactory(name="Seoul sales")
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", last_name="Lee", team=team)
    factories.user(Role.SALES, username="ben", first_name="Ben", last_name="Park", team=team)
    account = factories.account(ana, name="Hanbit Soft")

    # Ana starts a thread about the account: a task for Ben.
    ana_page = log_in(browser, live_server, "ana")
    ana_page.goto(f"/crm/accounts/{account.pk}/")
    ana_page.locator("#tasks").get_by_role("link", name="Add a task").click()
    expect(ana_page.locator("main")).to_contain_text("Hanbit Soft")
    ana_page.get_by_label("What is to be done").fill("Check the credit limit")
    ana_page.get_by_label("User", exact=True).select_option(label="Ben Park")
    ana_page.get_by_label("Due").fill(in_days(2))
    ana_page.get_by_role("button", name="Create the task").click()
    expect(ana_page.get_by_role("heading", level=1)).to_have_text("Check the credit limit")

    # Ben finds it in his work and completes it, handing the next step to the partner.
    ben_page = log_in(browser, live_server, "ben")
    ben_page.goto("/work/")
    ben_page.get_by_role("link", name="Check the credit limit").click()
    complete = ben_page.locator("form.complete-form")
    complete.get_by_label("The next task is …").check()
    complete.get_by_label("What is to be done next").fill("Confirm the delivery date")
    complete.get_by_label("an external participant").check()
    complete.get_by_label("Participant's e-mail address").fill(PARTNER)
    complete.get_by_label("Participant's name").fill("Park Jisoo")
    complete.get_by_label("By when").fill(in_days(5))
    complete.get_by_label("Note on the completed task").fill("Credit is fine up to 50M.")
    complete.get_by_role("button", name="Complete the task").click()
    expect(ben_page.locator(".messages")).to_contain_text("Confirm the delivery date")

    # The partner gets the task by e-mail, with a link that needs no account.
    mail = smtp_sink.wait_for(lambda m: PARTNER in m.recipients)
    text = body_of(mail)
    assert "Confirm the delivery date" in text
    link = re.search(r"https?://\S+(/task-link/[A-Za-z0-9_-]+/)", text).group(1)

    partner = browser.new_context(base_url=live_server.url, locale="en-US").new_page()
    partner.goto(link)
    expect(partner.get_by_role("heading", level=1)).to_have_text("Confirm the delivery date")
    expect(partner.locator("main")).not_to_contain_text("Credit is fine")
    partner.get_by_label("The thread is finished").check()
    partner.get_by_label("Anything to add?").fill("Delivery on 20 March.")
    partner.get_by_role("button", name="Mark done").click()
    expect(partner.locator(".messages")).to_contain_text("the task is done")
    expect(partner.locator("main")).to_contain_text("This task is done.")

    # Ana sees the whole thread on the account's page, in order, finished.
    ana_page.goto(f"/crm/accounts/{account.pk}/")
    panel = ana_page.locator("#tasks")
    expect(panel).to_contain_text("Check the credit limit")
    expect(panel).to_contain_text("Confirm the delivery date")
    expect(panel.locator(".badge.thread-finished")).to_be_visible()
    tasks = panel.locator(".panel-tasks li a")
    expect(tasks).to_have_text(["Check the credit limit", "Confirm the delivery date"])

    first, second = Task.objects.order_by("id")
    assert (first.owner.username, first.status, first.completed_by.username) == (
        "ben",
        "done",
        "ben",
    )
    assert (second.external_email, second.status, second.completed_by) == (PARTNER, "done", None)
    assert second.thread.status == "finished"
    finished = TaskEvent.objects.get(task=second, kind="completed")
    assert (finished.external_email, finished.body) == (PARTNER, "Delivery on 20 March.")
