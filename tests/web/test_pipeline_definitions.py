"""The pages that define pipelines: the list, the stage editor, blackout windows."""

import html
import re

import pytest
from django.urls import NoReverseMatch, reverse

from tests import factories
from trellis.core.models import Role
from trellis.process.pipelines import services
from trellis.process.pipelines.models import BlackoutWindow, Pipeline, Stage

from .conftest import form_data

LIST = "/pipelines/"


@pytest.fixture
def partner(admin) -> Pipeline:
    return services.save_pipeline(
        admin,
        {
            "object_type": "opportunity",
            "code": "partner-sales",
            "name": "Partner sales",
            "name_ko": "파트너 영업",
            "stages": [
                {"code": "intro", "name": "Introduced", "probability": 10},
                {"code": "pitch", "name": "Pitched", "probability": 30},
                {"code": "deal", "name": "Deal", "kind": "won", "probability": 100},
                {"code": "gone", "name": "Gone", "kind": "lost"},
            ],
        },
    )


def edit_url(pipeline: Pipeline) -> str:
    return reverse("pipelines:edit", args=[pipeline.pk])


def editor_data(response, **changes) -> dict:
    """What the browser posts for the editor as the page shows it, with some fields changed."""
    data = form_data(response.context["form"])
    formset = response.context["formset"]
    data.update(form_data(formset.management_form))
    for form in formset:
        data.update(form_data(form))
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def codes(pipeline: Pipeline) -> list[str]:
    return list(
        pipeline.stages.filter(is_active=True).order_by("order").values_list("code", flat=True)
    )


def shown_codes(response) -> list[str]:
    return [
        form["code"].value()
        for form in response.context["formset"]
        if form["code"].value() or form["id"].value()
    ]


def row_html(response, index: int) -> str:
    """The part of the page that shows one stage row."""
    page = response.content.decode()
    start = page.index(f'id="stage-row-{index}"')
    return html.unescape(page[start : page.index("</fieldset>", start)])


def field_html(part: str, name: str) -> str:
    """One field's block (label, input, errors) within a part of a page."""
    start = part.index(f'name="{name}"')
    return part[start : part.index("</ul>", start)]


# The list.


def test_everyone_who_sees_records_lists_the_active_pipelines_by_kind(login, admin, sales):
    Pipeline.objects.filter(code="renewal").update(is_active=False)
    page = login(sales).get(LIST)
    assert page.status_code == 200
    text = page.content.decode()
    for name in ("B2B sales", "Lead qualification", "Customer onboarding"):
        assert name in text
    assert "Renewal" not in text
    assert "/edit/" not in text
    assert reverse("pipelines:create") not in text
    b2b = Pipeline.objects.get(code="b2b-sales")
    assert reverse("pipelines:blackouts", args=[b2b.pk]) in text
    for name in ("board", "reports", "alert-rules"):
        try:
            url = reverse(f"pipelines:{name}", args=[b2b.pk])
        except NoReverseMatch:
            continue  # that page belongs to another part of Trellis
        assert url in text

    page = login(admin).get(LIST)
    text = page.content.decode()
    assert "Renewal" in text and "inactive" in text
    assert edit_url(b2b) in text
    assert reverse("pipelines:create") in text


def test_korean_users_read_the_korean_names(login, sales):
    text = login(sales).get(LIST, HTTP_ACCEPT_LANGUAGE="ko").content.decode()
    assert "B2B 영업" in text and "발굴" in text
    assert "Prospecting" not in text


def test_a_user_sees_only_the_pipelines_of_records_they_may_see(login, db):
    agent = factories.user(Role.SUPPORT)
    text = login(agent).get(LIST).content.decode()
    assert "Customer onboarding" in text
    assert "B2B sales" not in text and "Lead qualification" not in text
    nobody = factories.UserFactory(role=None)
    assert login(nobody).get(LIST).status_code == 403


def test_the_editor_is_for_admins_only(login, manager, sales, partner):
    for user in (manager, sales):
        client = login(user)
        assert client.get(edit_url(partner)).status_code == 404
        assert client.get(reverse("pipelines:create")).status_code == 404
        assert client.post(edit_url(partner), {"name": "Mine", "version": 1}).status_code == 404
        assert client.post(reverse("pipelines:create"), {"code": "x"}).status_code == 404
    partner.refresh_from_db()
    assert (partner.name, partner.version) == ("Partner sales", 1)
    assert not Pipeline.objects.filter(code="x").exists()


# Editing stages.


def test_an_admin_renames_reorders_removes_and_adds_stages(login, admin, partner):
    client = login(admin)
    page = client.get(edit_url(partner))
    assert page.status_code == 200
    assert shown_codes(page) == ["intro", "pitch", "deal", "gone"]
    new = len(page.context["formset"].forms) - 1  # the blank row at the end
    data = editor_data(
        page,
        name_ko="파트너 채널 영업",
        **{
            "stages-0-position": "2",
            "stages-1-position": "1",
            "stages-1-name_ko": "제안",
            "stages-2-position": "4",
            "stages-3-DELETE": "on",
            f"stages-{new}-position": "3",
            f"stages-{new}-code": "closing",
            f"stages-{new}-name": "Closing",
            f"stages-{new}-name_ko": "계약 마무리",
            f"stages-{new}-kind": "open",
            f"stages-{new}-probability": "80",
            f"stages-{new}-max_dwell_days": "10",
            f"stages-{new}-dwell_in_business_days": "on",
            f"stages-{new}-expected_activities": "Contract sent | 계약서 발송\n\nSigned",
            f"stages-{new}-gate": "require",
            f"stages-{new}-gate_condition": "amount >= 10000000.0",
            f"stages-{new}-gate_message": "Closing needs 10M or more.",
        },
    )
    saved = client.post(edit_url(partner), data)
    assert saved.status_code == 302
    assert saved["Location"] == f"{LIST}#pipeline-{partner.pk}"
    assert "The pipeline Partner sales was saved." in client.get(LIST).content.decode()
    partner.refresh_from_db()
    assert (partner.name_ko, partner.version) == ("파트너 채널 영업", 2)
    assert codes(partner) == ["pitch", "intro", "closing", "deal"]
    assert not Stage.objects.filter(pipeline=partner, code="gone").exists()
    closing = Stage.objects.get(pipeline=partner, code="closing")
    assert (closing.probability, closing.max_dwell_days, closing.dwell_in_business_days) == (
        80,
        10,
        True,
    )
    assert closing.expected_activities == [
        {"en": "Contract sent", "ko": "계약서 발송"},
        {"en": "Signed", "ko": ""},
    ]
    assert (closing.gate, closing.gate_condition) == ("require", "amount >= 10000000.0")
    assert Stage.objects.get(pipeline=partner, code="pitch").name_ko == "제안"

    again = client.get(edit_url(partner))
    assert shown_codes(again) == ["pitch", "intro", "closing", "deal"]
    assert "Contract sent | 계약서 발송\nSigned" in again.content.decode()


def test_the_arrows_and_add_rearrange_the_form_without_saving(login, admin, partner):
    client = login(admin)
    page = client.get(edit_url(partner))
    # A name typed but not saved yet travels with the rows.
    moved = client.post(
        edit_url(partner), editor_data(page, action="down:0", **{"stages-0-name": "Intro"})
    )
    assert moved.status_code == 200
    assert shown_codes(moved) == ["pitch", "intro", "deal", "gone"]
    assert moved.context["formset"].forms[1]["name"].value() == "Intro"
    assert [f["position"].value() for f in moved.context["formset"].forms[:4]] == [1, 2, 3, 4]
    up = client.post(edit_url(partner), editor_data(moved, action="up:3"))
    assert shown_codes(up) == ["pitch", "intro", "gone", "deal"]
    added = client.post(edit_url(partner), editor_data(up, action="add"))
    assert len(added.context["formset"].forms) == 6  # four stages and two blank rows
    partner.refresh_from_db()
    assert partner.version == 1
    assert codes(partner) == ["intro", "pitch", "deal", "gone"]

    saved = client.post(edit_url(partner), editor_data(added))
    assert saved.status_code == 302
    assert codes(partner) == ["pitch", "intro", "gone", "deal"]
    assert Stage.objects.get(pipeline=partner, code="intro").name == "Intro"


def test_every_error_shows_next_to_its_field_and_nothing_is_saved(login, admin, partner):
    client = login(admin)
    page = client.get(edit_url(partner))
    refused = client.post(
        edit_url(partner),
        editor_data(
            page,
            code="Not A Code",
            **{
                "stages-1-code": "intro",
                "stages-2-kind": "open",
                "stages-3-probability": "150",
            },
        ),
    )
    assert refused.status_code == 422
    assert "Ensure this value is less than or equal to 100." in field_html(
        row_html(refused, 3), "stages-3-probability"
    )
    # The form's own checks pass once the probability is fixed; then the service's speak.
    refused = client.post(
        edit_url(partner),
        editor_data(
            page,
            code="Not A Code",
            **{"stages-1-code": "intro", "stages-2-kind": "open"},
        ),
    )
    assert refused.status_code == 422
    text = html.unescape(refused.content.decode())
    assert "Use lower-case letters, digits and hyphens" in field_html(text, "code")
    assert "Two stages have this code." in field_html(row_html(refused, 1), "stages-1-code")
    assert "Two stages have this code." not in row_html(refused, 0)
    assert "A pipeline needs a won stage." in text
    partner.refresh_from_db()
    assert (partner.code, partner.version) == ("partner-sales", 1)
    assert codes(partner) == ["intro", "pitch", "deal", "gone"]


def test_an_error_lands_on_the_row_it_is_about_after_reordering(login, admin, partner):
    client = login(admin)
    page = client.get(edit_url(partner))
    # Row 3 ("gone") is sent first; its gate has no condition.
    refused = client.post(
        edit_url(partner),
        editor_data(page, **{"stages-3-position": "0", "stages-3-gate": "warn"}),
    )
    assert refused.status_code == 422
    assert "Ensure this value is greater than or equal to 1." in row_html(refused, 3)
    # Sent first, as the service numbers it: stages.0 is the page's row 3.
    order = {"stages-0-position": "2", "stages-1-position": "3", "stages-2-position": "4"}
    refused = client.post(
        edit_url(partner),
        editor_data(page, **order, **{"stages-3-position": "1", "stages-3-gate": "warn"}),
    )
    assert refused.status_code == 422
    assert "A warn or require gate needs a condition." in field_html(
        row_html(refused, 3), "stages-3-gate_condition"
    )


@pytest.mark.parametrize(
    "condition, message",
    [
        ("amount >", "(line 1, column 9)"),
        ("amount > 1.0 &&\n  (stage_id ==", "(line 2, column 15)"),
        ("colour == 'red'", "Unknown field: colour. Fields you can use:"),
    ],
)
def test_a_gate_condition_that_cannot_work_shows_where(login, admin, partner, condition, message):
    client = login(admin)
    page = client.get(edit_url(partner))
    refused = client.post(
        edit_url(partner),
        editor_data(
            page,
            **{"stages-2-gate": "require", "stages-2-gate_condition": condition},
        ),
    )
    assert refused.status_code == 422
    errors = field_html(row_html(refused, 2), "stages-2-gate_condition")
    assert message in errors
    assert Stage.objects.get(pipeline=partner, code="deal").gate == "free"


def test_the_editor_shows_the_fields_a_condition_may_use(login, admin, partner):
    text = login(admin).get(edit_url(partner)).content.decode()
    assert "<code>amount</code>" in text
    assert "<code>expected_close_date</code>" in text
    assert "<code>owner_id</code>" in text


def test_a_stale_version_says_so_and_keeps_the_admins_input(login, admin, partner):
    client = login(admin)
    page = client.get(edit_url(partner))
    data = editor_data(page, name="My partner sales", **{"stages-0-name": "Met"})
    services.save_pipeline(admin, {"name": "Their partner sales"}, pk=partner.pk, version=1)

    conflict = client.post(edit_url(partner), data)
    assert conflict.status_code == 409
    text = html.unescape(conflict.content.decode())
    assert "changed by someone else" in text
    assert 'value="My partner sales"' in text
    assert 'value="Met"' in text
    assert re.search(r'name="version" value="2"', text)
    partner.refresh_from_db()
    assert (partner.name, partner.version) == ("Their partner sales", 2)

    saved = client.post(edit_url(partner), editor_data(conflict))
    assert saved.status_code == 302
    partner.refresh_from_db()
    assert (partner.name, partner.version) == ("My partner sales", 3)
    assert Stage.objects.get(pipeline=partner, code="intro").name == "Met"


def test_an_admin_creates_a_pipeline_from_the_starter_stages(login, admin):
    client = login(admin)
    page = client.get(reverse("pipelines:create"))
    assert page.status_code == 200
    assert shown_codes(page) == ["new", "won", "lost"]
    data = editor_data(
        page,
        object_type="lead",
        code="event-leads",
        name="Event leads",
        name_ko="행사 리드",
        is_active="on",
        **{"stages-0-name": "Met at the booth", "stages-0-name_ko": "부스 방문"},
    )
    saved = client.post(reverse("pipelines:create"), data)
    assert saved.status_code == 302, saved.content
    created = Pipeline.objects.get(code="event-leads")
    assert (created.object_type, created.is_active, created.is_default) == ("lead", True, False)
    assert codes(created) == ["new", "won", "lost"]
    assert created.stages.get(code="new").name_ko == "부스 방문"

    taken = client.post(reverse("pipelines:create"), data)
    assert taken.status_code == 422
    assert "This code is taken." in html.unescape(field_html(taken.content.decode(), "code"))


# Blackout windows.


def blackouts_url(pipeline: Pipeline) -> str:
    return reverse("pipelines:blackouts", args=[pipeline.pk])


def test_an_admin_adds_changes_and_deletes_blackout_windows(login, admin, partner):
    client = login(admin)
    url = blackouts_url(partner)
    assert "This pipeline has no blackout windows." in client.get(url).content.decode()
    pitch = partner.stages.get(code="pitch")
    added = client.post(
        url,
        {
            "name": "No travel approvals",
            "name_ko": "출장 승인 불가",
            "stage": pitch.pk,
            "quarter_week_from": "12",
            "quarter_week_to": "14",
        },
    )
    assert added.status_code == 302
    window = BlackoutWindow.objects.get()
    assert (window.stage, window.quarter_week_from, window.quarter_week_to) == (pitch, 12, 14)
    text = client.get(url).content.decode()
    assert "No travel approvals" in text and "Weeks 12–14 of every quarter" in text

    edit = reverse("pipelines:blackout-edit", args=[partner.pk, window.pk])
    page = client.get(edit)
    assert page.status_code == 200
    changed = client.post(
        edit,
        form_data(
            page.context["form"],
            quarter_week_from="",
            quarter_week_to="",
            starts_on="2026-12-24",
            ends_on="2027-01-02",
            stage="",
        ),
    )
    assert changed.status_code == 302
    window.refresh_from_db()
    assert (window.starts_on.isoformat(), window.quarter_week_from, window.stage) == (
        "2026-12-24",
        None,
        None,
    )
    assert "2026-12-24 – 2027-01-02" in client.get(url).content.decode()

    deleted = client.post(reverse("pipelines:blackout-delete", args=[partner.pk, window.pk]))
    assert deleted.status_code == 302
    assert not BlackoutWindow.objects.exists()


def test_a_bad_blackout_window_shows_what_is_wrong(login, admin, partner):
    client = login(admin)
    url = blackouts_url(partner)
    dates = {"starts_on": "2026-03-01", "ends_on": "2026-03-05"}
    weeks = {"quarter_week_from": "1", "quarter_week_to": "2"}
    both = client.post(url, {"name": "Both", **dates, **weeks})
    assert both.status_code == 422
    assert "Give either fixed dates or weeks of the quarter, not both." in html.unescape(
        both.content.decode()
    )
    backwards = client.post(
        url, {"name": "Back", "starts_on": "2026-03-05", "ends_on": "2026-03-01"}
    )
    assert "The window ends before it starts." in html.unescape(
        field_html(backwards.content.decode(), "ends_on")
    )
    week = client.post(url, {"name": "W", "quarter_week_from": "12", "quarter_week_to": "15"})
    assert week.status_code == 422
    assert "less than or equal to 14" in field_html(week.content.decode(), "quarter_week_to")
    assert not BlackoutWindow.objects.exists()


def test_users_read_blackout_windows_and_only_admins_change_them(login, admin, sales, partner):
    window = services.save_blackout(
        admin, partner.pk, {"name": "Quarter end", "quarter_week_from": 13, "quarter_week_to": 13}
    )
    client = login(sales)
    page = client.get(blackouts_url(partner))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Quarter end" in text and "Week 13 of every quarter" in text
    assert "<form" not in text.split('id="main"')[1]
    edit = reverse("pipelines:blackout-edit", args=[partner.pk, window.pk])
    assert client.get(edit).status_code == 403
    assert client.post(edit, {"name": "Mine", "quarter_week_from": "1"}).status_code == 403
    assert client.post(blackouts_url(partner), {"name": "Mine"}).status_code == 403
    delete = reverse("pipelines:blackout-delete", args=[partner.pk, window.pk])
    assert client.post(delete).status_code == 403
    window.refresh_from_db()
    assert window.name == "Quarter end"
    assert BlackoutWindow.objects.count() == 1

    agent = factories.user(Role.SUPPORT)
    assert login(agent).get(blackouts_url(partner)).status_code == 404
