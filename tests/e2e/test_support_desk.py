"""A customer and two agents on one case, in the browser, with real mail.

The customer sends the web form, gets the acknowledgement from a real SMTP server, opens the
status page from its link and replies; an agent claims the case from the queue and hands it to
a colleague, who resolves it; the customer sees the change on the page and by e-mail.
"""

import re
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from trellis.core.models import Role
from trellis.support.models import Case, CaseEvent

from .. import factories

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

CUSTOMER = "sora.kim@hanbit.example"


def agent_page(browser: Browser, live_server, username: str) -> Page:
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


def test_a_case_from_web_form_to_resolution(
    page: Page, browser: Browser, live_server, smtp_sink, transactional_db
) -> None:
    team = factories.TeamFactory(name="Support")
    factories.user(Role.SUPPORT, username="jiwon", first_name="Jiwon", last_name="Seo", team=team)
    factories.user(Role.SUPPORT, username="tom", first_name="Tom", last_name="Baker", team=team)

    # The customer writes in through the web form.
    page.goto("/help/new/")
    page.get_by_label("Your name").fill("Kim Sora")
    page.get_by_label("E-mail").fill(CUSTOMER)
    page.get_by_label("Subject").fill("Invoices do not print")
    page.get_by_label("Message").fill("Printing an invoice shows an empty page since Monday.")
    # The spam guard refuses a form sent within seconds of loading; a person takes longer.
    with time_machine.travel(timezone.now() + timedelta(seconds=30), tick=True):
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".tracking-number")).to_have_text(re.compile(r"CS-\d{4}-\d{6}"))
    tracking_number = page.locator(".tracking-number").inner_text()

    # The acknowledgement arrives with the number and the status page link.
    ack = smtp_sink.wait_for(lambda m: CUSTOMER in m.recipients)
    assert tracking_number in ack.message["Subject"]
    link = re.search(r"https?://\S+/help/c/\S+", body_of(ack)).group(0)
    status_path = link.split("/help/", 1)[1]

    page.goto(f"/help/{status_path}")
    expect(page.locator(".portal-status")).to_have_text("Received")
    page.get_by_label("Your reply").fill("It happens with every invoice, also in Chrome.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator(".timeline")).to_contain_text("also in Chrome")

    # An agent claims it from the team queue and hands it to a colleague.
    jiwon = agent_page(browser, live_server, "jiwon")
    jiwon.goto("/cases/?view=queue")
    row = jiwon.get_by_role("row", name=re.compile(tracking_number))
    row.get_by_role("button", name="Claim").click()
    jiwon.goto("/cases/?view=mine")
    jiwon.get_by_role("link", name=tracking_number).click()
    expect(jiwon.locator("main")).to_contain_text("also in Chrome")
    jiwon.locator("summary", has_text="Reassign").click()
    jiwon.get_by_label("Agent").select_option(label="Tom Baker")
    jiwon.get_by_label("Hand-off note").fill("Printing module: Tom knows it best.")
    jiwon.get_by_role("button", name="Hand over").click()
    expect(jiwon.locator("main")).to_contain_text("Tom knows it best")

    # The colleague answers and resolves it in one step.
    tom = agent_page(browser, live_server, "tom")
    tom.goto("/cases/?view=mine")
    tom.get_by_role("link", name=tracking_number).click()
    tom.get_by_label("Reply to the customer").fill("Fixed: the print template was reset.")
    tom.get_by_label("Then set the status to").select_option(label="resolved")
    tom.get_by_role("button", name="Send reply").click()
    expect(tom.locator("main")).to_contain_text("the print template was reset")

    # The customer sees it on the status page, with the first name of who answered only.
    page.reload()
    expect(page.locator(".portal-status")).to_have_text("Resolved")
    expect(page.locator(".timeline")).to_contain_text("the print template was reset")
    expect(page.locator("main")).not_to_contain_text("Baker")
    expect(page.locator("main")).not_to_contain_text("Tom knows it best")
    reply = smtp_sink.wait_for(lambda m: "print template was reset" in body_of(m))
    assert reply.recipients == [CUSTOMER]

    case = Case.objects.get(tracking_number=tracking_number)
    assert case.status == Case.Status.RESOLVED
    assert case.owner.username == "tom"
    assert case.events.filter(kind=CaseEvent.Kind.CUSTOMER_MESSAGE).count() == 2
