"""The kanban board in the browser: Ana drags a deal from one stage to the next, the columns
count it over at once, and the deal's page shows the stage change on its timeline."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from playwright.sync_api import Browser, Locator, Page, expect

from trellis.core.models import Role
from trellis.crm.models import Opportunity
from trellis.process.pipelines import services
from trellis.process.pipelines.models import Pipeline, StageChange

from .. import factories

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


@pytest.fixture(autouse=True)
def default_pipelines(transactional_db) -> None:
    """The default pipelines, which a data migration makes: the other browser tests' flushes
    of the database take them away."""
    migration = importlib.import_module("trellis.crm.migrations.0005_default_pipelines")
    migration.create_pipelines(django_apps, None)


def log_in(browser: Browser, live_server, username: str) -> Page:
    context = browser.new_context(
        base_url=live_server.url, locale="en-US", viewport={"width": 1600, "height": 900}
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hello")
    return page


def column(page: Page, name: str) -> Locator:
    return page.locator("section.board-column", has=page.get_by_role("heading", name=name))


def drag(page: Page, item: Locator, target: Locator) -> None:
    """A drag as a person makes it: press, move in steps, release (SortableJS listens to the
    mouse itself, not to the browser's drag-and-drop events)."""
    start = item.locator(".board-dwell").bounding_box()
    end = target.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(start["x"] + start["width"] / 2 + 10, start["y"] + 10, steps=5)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 40, steps=20)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + 44, steps=5)
    page.mouse.up()


def test_dragging_a_card_moves_the_deal_and_its_timeline_shows_it(
    browser: Browser, live_server
) -> None:
    team = factories.TeamFactory(name="Seoul sales")
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", last_name="Lee", team=team)
    deal = factories.opportunity(ana, name="Hanbit ERP", amount=Decimal(30_000_000))
    factories.opportunity(ana, name="Mirae cloud", amount=Decimal(12_000_000))
    pipeline = Pipeline.objects.get(code="b2b-sales")

    page = log_in(browser, live_server, "ana")
    page.goto(f"/pipelines/{pipeline.pk}/board/")
    prospecting = column(page, "Prospecting")
    analysis = column(page, "Needs analysis")
    expect(prospecting.locator(".board-count")).to_have_text("2")
    expect(prospecting.locator(".board-sums")).to_have_text("42,000,000 KRW")
    expect(analysis.locator(".board-count")).to_have_text("0")

    card = prospecting.locator(".board-card", has_text="Hanbit ERP")
    drag(page, card, analysis.locator(".board-cards"))

    expect(page.locator("#board-status")).to_have_text("Moved to Needs analysis.")
    expect(analysis.locator(".board-card", has_text="Hanbit ERP")).to_be_visible()
    expect(prospecting.locator(".board-card", has_text="Hanbit ERP")).to_have_count(0)
    expect(prospecting.locator(".board-count")).to_have_text("1")
    expect(analysis.locator(".board-count")).to_have_text("1")
    expect(prospecting.locator(".board-sums")).to_have_text("12,000,000 KRW")
    expect(analysis.locator(".board-sums")).to_have_text("30,000,000 KRW")
    # The card was drawn again: its new version is what a next move sends.
    expect(analysis.locator(".board-card", has_text="Hanbit ERP")).to_have_attribute(
        "data-version", "2"
    )

    deal.refresh_from_db()
    assert deal.stage.code == "needs-analysis"
    change = StageChange.objects.latest("pk")
    assert (change.from_stage.code, change.to_stage.code, change.direction, change.actor) == (
        "prospecting",
        "needs-analysis",
        "forward",
        ana,
    )

    # The deal's page: the stage panel and the timeline tell the move.
    analysis.get_by_role("link", name="Hanbit ERP").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hanbit ERP")
    panel = page.locator("#pipeline")
    expect(panel.locator(".stage-step.is-current")).to_have_text("Needs analysis")
    expect(panel.locator(".stage-history tbody tr")).to_have_count(2)
    timeline = page.locator("#timeline .timeline")
    entry = timeline.locator(".entry.change").first
    expect(entry).to_contain_text("Stage")
    expect(entry.locator("del").first).to_have_text("Prospecting")
    expect(entry.locator("ins").first).to_have_text("Needs analysis")
    expect(entry).to_contain_text("Ana Lee")


def test_a_refused_drag_puts_the_card_back_and_says_why(browser: Browser, live_server) -> None:
    team = factories.TeamFactory(name="Seoul sales")
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", team=team)
    deal = factories.opportunity(ana, name="Small deal", amount=Decimal(5_000_000))
    pipeline = Pipeline.objects.get(code="b2b-sales")
    pipeline.stages.filter(code="proposal").update(
        gate="require",
        gate_condition="amount >= 10000000.0",
        gate_message="Proposals need an amount of 10M+.",
    )

    page = log_in(browser, live_server, "ana")
    page.goto(f"/pipelines/{pipeline.pk}/board/")
    prospecting = column(page, "Prospecting")
    proposal = column(page, "Proposal")
    drag(page, prospecting.locator(".board-card"), proposal.locator(".board-cards"))

    expect(page.locator("#board-status")).to_have_text("Proposals need an amount of 10M+.")
    expect(prospecting.locator(".board-card", has_text="Small deal")).to_be_visible()
    expect(proposal.locator(".board-card")).to_have_count(0)
    expect(prospecting.locator(".board-count")).to_have_text("1")
    expect(proposal.locator(".board-count")).to_have_text("0")
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "prospecting"


def test_a_warn_gate_asks_and_the_move_goes_through_when_confirmed(
    browser: Browser, live_server
) -> None:
    team = factories.TeamFactory(name="Seoul sales")
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", team=team)
    deal = factories.opportunity(ana, name="No date yet")
    pipeline = Pipeline.objects.get(code="b2b-sales")
    pipeline.stages.filter(code="negotiation").update(
        gate="warn", gate_condition="expected_close_date != null", gate_message="No close date."
    )

    page = log_in(browser, live_server, "ana")
    page.goto(f"/pipelines/{pipeline.pk}/board/")
    asked = []

    def answer(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    negotiation = column(page, "Negotiation")
    drag(page, column(page, "Prospecting").locator(".board-card"), negotiation.locator("ol"))

    expect(page.locator("#board-status")).to_have_text("Moved to Negotiation. No close date.")
    expect(negotiation.locator(".board-card", has_text="No date yet")).to_be_visible()
    assert asked == ["No close date. Confirm to move anyway."]
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "negotiation"


def test_a_card_someone_else_moved_meanwhile_is_shown_where_it_is_now(
    browser: Browser, live_server
) -> None:
    team = factories.TeamFactory(name="Seoul sales")
    ana = factories.user(Role.SALES, username="ana", first_name="Ana", team=team)
    deal = factories.opportunity(ana, name="Busy deal", amount=Decimal(7_000_000))
    pipeline = Pipeline.objects.get(code="b2b-sales")

    page = log_in(browser, live_server, "ana")
    page.goto(f"/pipelines/{pipeline.pk}/board/")
    # Meanwhile, in another tab, the deal goes to Proposal.
    proposal_stage = pipeline.stages.get(code="proposal")
    services.move(ana, "opportunity", deal.pk, proposal_stage.pk, version=1)

    prospecting = column(page, "Prospecting")
    analysis = column(page, "Needs analysis")
    proposal = column(page, "Proposal")
    drag(page, prospecting.locator(".board-card"), analysis.locator("ol"))

    expect(page.locator("#board-status")).to_contain_text("Someone else changed this record")
    expect(proposal.locator(".board-card", has_text="Busy deal")).to_have_attribute(
        "data-version", "2"
    )
    expect(analysis.locator(".board-card")).to_have_count(0)
    expect(prospecting.locator(".board-count")).to_have_text("0")
    expect(analysis.locator(".board-count")).to_have_text("0")
    expect(proposal.locator(".board-count")).to_have_text("1")
    expect(proposal.locator(".board-sums")).to_have_text("7,000,000 KRW")
    assert Opportunity.objects.get(pk=deal.pk).stage.code == "proposal"
