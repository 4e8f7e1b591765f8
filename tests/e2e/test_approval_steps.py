"""An administrator defines an approval process step by step on its page, then adds a step and
an action."""

import re

import pytest
from playwright.sync_api import Page, expect

from trellis.process.approvals import services
from trellis.process.approvals.models import ApprovalProcess

from .test_browser import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_an_admin_defines_the_steps_of_a_process_in_their_blocks(
    page: Page, admin, transactional_db
) -> None:
    log_in(page, "admin", "pw-for-tests")
    page.goto("/approvals/processes/new/")
    page.select_option("#process_object_type", "opportunity")
    page.fill("#process_code", "big-deals")
    page.fill("#process_name", "Big deals")
    page.select_option("#process_owner_id", str(admin.pk))
    page.fill("#process_entry_condition", "amount > 50000000.0")

    first = page.locator("fieldset.step-form", has_text="Step 1")
    first.get_by_label("Step name").fill("Team lead")
    first.get_by_label("The submitter's manager").check()
    first.get_by_label("Timeout in business hours").fill("8")
    # A reminder after the timeout: refused in the step's own block, nothing published.
    first.get_by_label("Reminder, hours before the timeout").fill("9")
    first.get_by_label("When the timeout passes").select_option("manager")
    page.get_by_role("button", name="Publish").click()
    first = page.locator("fieldset.step-form", has_text="Step 1")
    expect(first).to_contain_text("give fewer hours than the timeout")
    assert not ApprovalProcess.objects.exists()

    first.get_by_label("Reminder, hours before the timeout").fill("2")
    page.get_by_role("button", name="Publish").click()
    expect(page).to_have_url(re.compile(r"/approvals/processes/$"))
    expect(page.locator(".messages")).to_contain_text("Version 1")

    # The saved step comes back in its block, with a blank one after it to add another.
    page.get_by_role("link", name="Big deals").click()
    expect(page.locator("fieldset.step-form")).to_have_count(2)
    expect(page.locator("#id_steps-0-name")).to_have_value("Team lead")
    second = page.locator("fieldset.step-form", has_text="Step 2")
    second.get_by_label("Step name").fill("Director")
    second.get_by_label("The manager's manager").check()
    second.get_by_label("On rejection").select_option("back")
    # An action block shows the boxes of the kind chosen, and only those.
    action = page.locator("fieldset.action-form", has_text="Action 1")
    expect(action.get_by_label("Fields and their values")).to_be_visible()
    expect(action.get_by_label("Subject")).to_be_hidden()
    page.select_option("#id_actions-0-kind", "email")
    expect(action.get_by_label("Fields and their values")).to_be_hidden()
    page.select_option("#id_actions-0-moment", "reject")
    action.get_by_label("To").fill("submitter")
    action.get_by_label("Subject").fill("Not approved")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator(".messages")).to_contain_text("Version 2")

    steps = services.current_version(ApprovalProcess.objects.get()).steps
    assert [(s["name"], s["approvers"], s["on_reject"]) for s in steps] == [
        ("Team lead", [{"kind": "manager"}], "end"),
        ("Director", [{"kind": "managers_manager"}], "back"),
    ]
    assert (steps[0]["timeout_hours"], steps[0]["remind_before_hours"]) == (8, 2)
    actions = services.current_version(ApprovalProcess.objects.get()).actions
    assert actions["reject"] == [
        {"kind": "email", "to": "submitter", "subject": "Not approved", "body": ""}
    ]
