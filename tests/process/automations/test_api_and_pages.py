"""Automations through the JSON API and the pages: the same services, the same answers."""

import datetime as dt
from decimal import Decimal

from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from trellis.core.models import Role
from trellis.crm import services as crm
from trellis.process.automations import services
from trellis.process.automations.models import HoldPlacement, Rule, RuleRun
from trellis.process.pipelines.models import Stage

from ... import factories
from ...api.conftest import assert_problem, token_client
from .conftest import rule


def _browser(user, language: str = "en") -> Client:
    client = Client(headers={"Accept-Language": language})
    client.force_login(user)
    return client


def deal(people, account, **data):
    values = {"account": account.pk, "name": "Press line", "amount": Decimal(1000), **data}
    return factories.opportunity(people["sales"], **values)


def _rule_data(**fields):
    return {
        "object_type": "opportunity",
        "name": "Big deals",
        "trigger": "updated",
        "condition": "amount > 5000.0",
        "actions": [{"kind": "set_fields", "values": {"description": "'Big: ' + name"}}],
        **fields,
    }


def test_a_rule_round_trip_through_the_api(people, account, events):
    admin = token_client(people["admin"])
    made = admin.post("automations/rules", _rule_data())
    assert made.status_code == 201, made.content
    created = made.json()
    assert (created["version"], created["is_enabled"], created["mode"]) == (1, True, "newly")
    rule_id = created["id"]
    assert admin.get(f"automations/rules/{rule_id}").json()["name"] == "Big deals"

    changed = admin.put(f"automations/rules/{rule_id}", {"name": "Bigger deals", "version": 1})
    assert changed.status_code == 200, changed.content
    assert (changed.json()["name"], changed.json()["version"]) == ("Bigger deals", 2)
    assert changed.json()["condition"] == "amount > 5000.0"  # left out, kept
    stale = admin.put(f"automations/rules/{rule_id}", {"name": "Old", "version": 1})
    assert assert_problem(stale, 409)["current"]["name"] == "Bigger deals"

    with events():
        opportunity = deal(people, account)
    with events():
        crm.update(people["sales"], "opportunity", opportunity.pk, {"amount": 9000}, 1)
    [listed] = admin.get("automations/rules", object_type="opportunity").json()
    assert (listed["fired_recently"], listed["failed_recently"]) == (1, 0)
    assert listed["last_run_at"] is not None
    runs = admin.get(f"automations/rules/{rule_id}/runs").json()
    # The rule's own write fires it again, and it is skipped: once per originating event.
    assert [r["outcome"] for r in runs["items"]] == ["skipped", "fired"]
    assert {r["object_id"] for r in runs["items"]} == {opportunity.pk}
    fired_only = admin.get(f"automations/rules/{rule_id}/runs", outcome="fired", page_size=1)
    assert [r["outcome"] for r in fired_only.json()["items"]] == ["fired"]
    assert_problem(admin.get(f"automations/rules/{rule_id}/runs", outcome="odd"), 422, "outcome")
    assert_problem(admin.get(f"automations/rules/{rule_id}/runs", colour="red"), 422, "colour")

    disabled = admin.post(f"automations/rules/{rule_id}/disable", {"version": 2})
    assert (disabled.json()["is_enabled"], disabled.json()["version"]) == (False, 3)
    enabled = admin.post(f"automations/rules/{rule_id}/enable", {"version": 3})
    assert enabled.json()["is_enabled"] is True
    assert_problem(admin.post(f"automations/rules/{rule_id}/enable", {}), 422, "version")

    assert_problem(admin.delete(f"automations/rules/{rule_id}"), 422, "version")
    assert_problem(admin.delete(f"automations/rules/{rule_id}", version=1), 409)
    assert admin.delete(f"automations/rules/{rule_id}", version=4).status_code == 204
    assert_problem(admin.get(f"automations/rules/{rule_id}"), 404)
    assert not RuleRun.objects.exists()


def test_bad_input_is_refused_with_the_path_of_each_error(people):
    admin = token_client(people["admin"])
    refused = admin.post(
        "automations/rules",
        _rule_data(
            condition="amount >",
            actions=[
                {"kind": "set_fields", "values": {"nope": "1"}},
                {"kind": "webhook", "url": "ftp://example.com/"},
                {"kind": "send_email", "subject": "Hi {{ nobody }}"},
            ],
        ),
    )
    body = assert_problem(
        refused, 422, "condition", "actions.0.values.nope", "actions.1.url", "actions.2.subject"
    )
    assert "line 1" in str(body["errors"])
    assert "column" in str(body["errors"])
    assert_problem(admin.post("automations/rules", {**_rule_data(), "nmae": "x"}), 422, "nmae")
    assert_problem(
        admin.post("automations/rules", _rule_data(trigger="time", trigger_params={})),
        422,
        "trigger_params.field",
    )
    assert not Rule.objects.exists()


def test_a_cycle_is_refused_through_the_api_with_the_rules_named(people):
    admin = token_client(people["admin"])
    first = admin.post(
        "automations/rules",
        _rule_data(
            name="Describe probable deals",
            trigger="field_changed",
            trigger_params={"field": "probability"},
            condition="",
            actions=[{"kind": "set_fields", "values": {"description": "'likely'"}}],
        ),
    )
    assert first.status_code == 201, first.content
    second = admin.post(
        "automations/rules",
        _rule_data(
            name="Score described deals",
            trigger="field_changed",
            trigger_params={"field": "description"},
            condition="",
            actions=[{"kind": "set_fields", "values": {"probability": "80"}}],
        ),
    )
    body = assert_problem(second, 422, "actions")
    message = body["errors"][0]["message"]
    assert "Describe probable deals" in message and "Score described deals" in message
    assert Rule.objects.count() == 1

    # Smuggled in by editing a disabled rule and enabling it: refused too.
    made = admin.post(
        "automations/rules",
        _rule_data(
            name="Score described deals",
            trigger="field_changed",
            trigger_params={"field": "description"},
            condition="",
            is_enabled=False,
            actions=[{"kind": "set_fields", "values": {"probability": "80"}}],
        ),
    )
    assert made.status_code == 201, made.content
    enabling = admin.post(f"automations/rules/{made.json()['id']}/enable", {"version": 1})
    assert "Describe probable deals" in assert_problem(enabling, 422, "actions")["detail"] + str(
        enabling.json()["errors"]
    )
    assert Rule.objects.get(pk=made.json()["id"]).is_enabled is False


def test_who_may_define_rules_and_holds(people, outsider):
    sales = token_client(people["sales"])
    made = rule(people["admin"], name="Admin's rule", condition="amount > 5000.0")
    assert sales.get("automations/rules").json() == []
    assert_problem(sales.get(f"automations/rules/{made.pk}"), 404)
    assert_problem(sales.put(f"automations/rules/{made.pk}", {"name": "x", "version": 1}), 404)
    assert_problem(sales.delete(f"automations/rules/{made.pk}", version=1), 404)
    assert_problem(sales.get(f"automations/rules/{made.pk}/runs"), 404)
    assert_problem(sales.post("automations/rules", _rule_data()), 422, "object_type")
    assert_problem(sales.post("automations/dry-run", {"object_type": "opportunity"}), 403)
    assert_problem(
        sales.post("automations/holds", {"object_type": "order", "code": "x", "name": "X"}), 403
    )
    assert Rule.objects.count() == 1

    for path in ("", "new/", f"{made.pk}/", f"{made.pk}/edit/", "holds/new/"):
        assert _browser(people["sales"]).get(f"/automations/{path}").status_code == 404, path
    refused = _browser(people["sales"]).post(f"/automations/{made.pk}/delete/", {"confirm": "yes"})
    assert refused.status_code == 404
    assert Rule.objects.count() == 1

    # Marketing may edit every lead: it may define rules for leads, and only for them.
    marketer = factories.user(Role.MARKETING, username="marketer")
    marketing = token_client(marketer)
    lead_rule = marketing.post(
        "automations/rules",
        {
            "object_type": "lead",
            "name": "New leads get a note",
            "trigger": "created",
            "actions": [{"kind": "set_fields", "values": {"notes": "'new'"}}],
        },
    )
    assert lead_rule.status_code == 201, lead_rule.content
    assert [r["name"] for r in marketing.get("automations/rules").json()] == [
        "New leads get a note"
    ]
    assert_problem(marketing.get(f"automations/rules/{made.pk}"), 404)

    nav = "/automations/"
    assert f'href="{nav}"' in _browser(people["admin"]).get("/").content.decode()
    assert f'href="{nav}"' in _browser(marketer).get("/").content.decode()
    assert f'href="{nav}"' not in _browser(people["sales"]).get("/").content.decode()


def _row_counts() -> dict[str, int]:
    labels = ("process", "crm", "core")
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.app_label in labels
    }


def test_a_dry_run_writes_nothing(people, account, events):
    admin = token_client(people["admin"])
    hold = services.save_hold(
        people["admin"], {"object_type": "opportunity", "code": "check", "name": "Check"}
    )
    saved = rule(
        people["admin"],
        name="Big deals",
        condition="amount > 5000.0",
        actions=[
            {"kind": "set_fields", "values": {"description": "'Big: ' + name"}},
            {"kind": "create_task", "title": "Call about {{ name }}"},
            {"kind": "hold", "hold": hold.code},
            {"kind": "webhook", "url": "https://example.com/hook"},
        ],
    )
    with events():
        small = deal(people, account, name="Small")
        big = deal(people, account, name="Big", amount=Decimal(9000))
    before = _row_counts()

    tried = admin.post(
        "automations/dry-run", {"object_type": "opportunity", "record_ids": [big.pk, small.pk]}
    )
    assert tried.status_code == 200, tried.content
    by_record = {r["id"]: r["rules"][0] for r in tried.json()}
    assert by_record[big.pk]["fires"] is True and by_record[small.pk]["fires"] is False
    first = by_record[big.pk]["actions"][0]
    assert first["changes"] == {"description": ["", "Big: Big"]}
    assert by_record[big.pk]["actions"][1]["title"] == "Call about Big"

    sampled = admin.post(
        "automations/dry-run", {"object_type": "opportunity", "sample": 1, "rule_id": saved.pk}
    )
    assert [r["id"] for r in sampled.json()] == [big.pk]
    unsaved = admin.post(
        "automations/dry-run",
        {
            "object_type": "opportunity",
            "rule": {
                "name": "Not saved",
                "trigger": "updated",
                "condition": "amount < 5000.0",
                "actions": [{"kind": "set_fields", "values": {"probability": "10"}}],
            },
        },
    )
    assert unsaved.status_code == 200, unsaved.content
    verdicts = {r["id"]: r["rules"][0] for r in unsaved.json()}
    assert verdicts[small.pk]["fires"] and verdicts[small.pk]["rule"] is None
    assert not verdicts[big.pk]["fires"]
    page = _browser(people["admin"]).get(f"/automations/dry-run/?rule={saved.pk}&record_id=")
    assert page.status_code == 200
    assert "Big: Big" in page.content.decode()

    assert _row_counts() == before
    assert Rule.objects.count() == 1

    bad = admin.post(
        "automations/dry-run",
        {
            "object_type": "opportunity",
            "record_ids": [big.pk, 10**9],
            "rule_id": saved.pk,
            "rule": {"name": "x"},
        },
    )
    assert_problem(bad, 422, "record_ids.1", "rule")
    bad = admin.post(
        "automations/dry-run",
        {"object_type": "opportunity", "rule": {"trigger": "updated", "actions": []}},
    )
    assert_problem(bad, 422, "rule.name", "rule.actions")
    assert_problem(
        admin.post("automations/dry-run", {"object_type": "opportunity", "sample": 51}),
        422,
        "sample",
    )
    assert_problem(admin.post("automations/dry-run", {"object_type": "planet"}), 422, "object_type")
    assert _row_counts() == before


def test_a_dry_run_on_changes_judges_them_as_the_update_would_be(people, account, events):
    admin = token_client(people["admin"])
    newly_big = rule(
        people["admin"],
        name="Newly big",
        condition="amount > 5000.0",
        actions=[{"kind": "set_fields", "values": {"description": "'Big: ' + name"}}],
    )
    likely = rule(
        people["admin"],
        name="Likely",
        trigger="field_changed",
        trigger_params={"field": "probability", "to": 90},
        actions=[{"kind": "create_task", "title": "Close {{ name }}"}],
    )
    with events():
        small = deal(people, account, name="Small", probability=20)
        big = deal(people, account, name="Big", amount=Decimal(9000), probability=20)
    later = Stage.objects.filter(pipeline=small.stage.pipeline).order_by("order")[1]
    rule(
        people["admin"],
        name="Entered",
        trigger="stage_entered",
        trigger_params={"stage": later.pk},
        actions=[{"kind": "create_task", "title": "Prepare {{ name }}"}],
    )
    before = _row_counts()

    def tried(changes, *records):
        answer = admin.post(
            "automations/dry-run",
            {
                "object_type": "opportunity",
                "record_ids": [r.pk for r in records],
                "changes": changes,
            },
        )
        assert answer.status_code == 200, answer.content
        return {
            r["id"]: (r["changes"], {v["name"]: (v["triggered"], v["fires"]) for v in r["rules"]})
            for r in answer.json()
        }

    # The small deal newly meets the condition; the big one met it already, and an amount it
    # already has changes nothing, so nothing is triggered.
    got = tried({"amount": "9000"}, small, big)
    assert got[small.pk] == (
        {"amount": [1000.0, 9000.0]},
        {"Newly big": (True, True), "Likely": (False, False), "Entered": (False, False)},
    )
    assert got[big.pk] == (
        {},
        {"Newly big": (False, False), "Likely": (False, False), "Entered": (False, False)},
    )
    assert tried({"amount": 9500}, big)[big.pk][1]["Newly big"] == (True, False)
    # A "field changed" trigger with a "to" value fires on that value only.
    assert tried({"probability": 90}, small)[small.pk][1] == {
        "Newly big": (True, False),
        "Likely": (True, True),
        "Entered": (False, False),
    }
    assert tried({"probability": 50}, small)[small.pk][1]["Likely"] == (True, False)
    # A new stage is judged as a move to it, which is no "updated" event.
    assert tried({"stage_id": later.pk}, small)[small.pk][1] == {
        "Newly big": (False, False),
        "Likely": (False, False),
        "Entered": (True, True),
    }

    page = _browser(people["admin"]).get(
        "/automations/dry-run/",
        {"rule": newly_big.pk, "record_id": small.pk, "changes": "amount = 9000"},
    )
    assert page.status_code == 200
    assert "Big: Small" in page.content.decode()
    page = _browser(people["admin"], "ko").get(
        "/automations/dry-run/", {"rule": likely.pk, "record_id": big.pk, "changes": "amount 5"}
    )
    assert page.status_code == 422
    assert "1번째 줄" in page.content.decode()

    bad = admin.post(
        "automations/dry-run",
        {"object_type": "opportunity", "changes": {"planet": 1, "amount": "lots", "name": None}},
    )
    assert_problem(bad, 422, "changes.planet", "changes.amount", "changes.name")
    assert_problem(
        admin.post("automations/dry-run", {"object_type": "opportunity", "changes": {}}),
        422,
        "changes",
    )
    assert _row_counts() == before


def test_the_hold_queue_shows_waiting_time_and_release_works(
    people, account, events, clock, outsider
):
    admin = token_client(people["admin"])
    made = admin.post(
        "automations/holds",
        {
            "object_type": "opportunity",
            "code": "credit-check",
            "name": "Credit check",
            "name_ko": "신용 확인",
            "blocks": [{"field": "status", "value": "won"}],
        },
    )
    assert made.status_code == 201, made.content
    hold = made.json()
    assert_problem(
        admin.post(
            "automations/holds",
            {"object_type": "opportunity", "code": "x", "name": "X", "blocks": [{"colour": "red"}]},
        ),
        422,
        "blocks.0",
    )
    changed = admin.put(f"automations/holds/{hold['id']}", {"name": "Credit check!", "version": 1})
    assert changed.json()["version"] == 2
    assert_problem(admin.put(f"automations/holds/{hold['id']}", {"name": "x", "version": 1}), 409)

    with events():
        opportunity = deal(people, account, name="Hanbit press")
    sales = token_client(people["sales"])
    placed = sales.post(
        f"automations/holds/{hold['id']}/place",
        {"object_id": opportunity.pk, "reason": "Waiting for the bank"},
    )
    assert placed.status_code == 201, placed.content
    assert_problem(
        token_client(outsider).post(
            f"automations/holds/{hold['id']}/place", {"object_id": opportunity.pk}
        ),
        404,
    )

    clock.shift(dt.timedelta(hours=3, minutes=5))
    queue = sales.get(f"automations/holds/{hold['id']}/queue").json()
    [waiting] = queue["items"]
    assert waiting["waiting_seconds"] == 3 * 3600 + 5 * 60
    assert (waiting["record"], waiting["reason"]) == ("Hanbit press", "Waiting for the bank")
    assert waiting["placed_by_id"] == people["sales"].pk
    assert token_client(outsider).get(f"automations/holds/{hold['id']}/queue").json()["items"] == []
    # Reading deals is not enough for the queue: it is a work list for those who may edit them.
    reader = factories.user(Role.READ_ONLY, username="reader")
    assert token_client(reader).get(f"automations/holds/{hold['id']}").status_code == 200
    assert_problem(token_client(reader).get(f"automations/holds/{hold['id']}/queue"), 403)
    assert _browser(reader).get(f"/automations/holds/{hold['id']}/").status_code == 403
    listed = _browser(reader).get("/automations/holds/").content.decode()
    assert "Credit check" in listed and f"/automations/holds/{hold['id']}/" not in listed

    page = _browser(people["sales"]).get(f"/automations/holds/{hold['id']}/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Hanbit press" in text and "3\xa0hours" in text and "Waiting for the bank" in text
    assert f"/automations/holds/placements/{waiting['id']}/release/" in text
    korean = _browser(people["sales"], "ko").get(f"/automations/holds/{hold['id']}/")
    assert "신용 확인" in korean.content.decode() and "3시간" in korean.content.decode()

    refused = _browser(outsider).post(f"/automations/holds/placements/{waiting['id']}/release/")
    assert refused.status_code == 404
    released = _browser(people["sales"]).post(
        f"/automations/holds/placements/{waiting['id']}/release/", {"note": "Bank said yes"}
    )
    assert released.status_code == 302
    placement = HoldPlacement.objects.get()
    assert (placement.release_note, placement.released_by) == ("Bank said yes", people["sales"])
    again = sales.post(f"automations/holds/placements/{waiting['id']}/release", {"note": ""})
    assert_problem(again, 409)
    assert sales.get(f"automations/holds/{hold['id']}/queue").json()["items"] == []


def test_the_pages_render_in_both_languages(people, account, events):
    hold = services.save_hold(
        people["admin"], {"object_type": "opportunity", "code": "check", "name": "Check"}
    )
    made = rule(people["admin"], name="Big deals", condition="amount > 5000.0")
    with events():
        opportunity = deal(people, account)
    with events():
        crm.update(people["sales"], "opportunity", opportunity.pk, {"amount": 9000}, 1)
    pages = [
        "/automations/",
        "/automations/?type=lead",
        "/automations/new/?type=order",
        f"/automations/{made.pk}/",
        f"/automations/{made.pk}/?outcome=fired&page=1",
        f"/automations/{made.pk}/edit/",
        f"/automations/dry-run/?rule={made.pk}&record_id={opportunity.pk}",
        "/automations/holds/",
        "/automations/holds/new/",
        f"/automations/holds/{hold.pk}/",
        f"/automations/holds/{hold.pk}/edit/",
    ]
    for language, marker in (("en", "Log out"), ("ko", "로그아웃")):
        client = _browser(people["admin"], language)
        for path in pages:
            page = client.get(path)
            assert page.status_code == 200, (language, path)
            assert f'<html lang="{language}">' in page.content.decode(), (language, path)
            assert marker in page.content.decode(), (language, path)
    detail = _browser(people["admin"]).get(f"/automations/{made.pk}/").content.decode()
    assert "Press line" in detail and "<td>fired</td>" in detail
    listing = _browser(people["admin"]).get("/automations/").content.decode()
    assert "Big deals" in listing and f"/automations/{made.pk}/edit/" in listing
    # The kind of record is named in the page's language, not by its key.
    holds = _browser(people["admin"], "ko").get("/automations/holds/").content.decode()
    assert "<td>영업기회</td>" in holds
    assert _browser(people["admin"]).get("/automations/?type=planet").status_code == 404
    assert _browser(people["admin"]).get("/automations/dry-run/?rule=999").status_code == 404


def test_a_rule_is_defined_enabled_and_deleted_on_the_pages(people):
    admin = _browser(people["admin"])
    data = {
        "object_type": "opportunity",
        "name": "Describe probable deals",
        "trigger": "field_changed",
        "trigger_field": "probability",
        "trigger_to": "90",
        "mode": "newly",
        "throttle_per_hour": "10",
        "condition": "amount >",
        "actions": '[{"kind": "set_fields", "values": {"nothing": "1"}}]',
    }
    refused = admin.post("/automations/new/", data)
    assert refused.status_code == 422
    text = refused.content.decode()
    assert "line 1" in text and "Item 1, values.nothing" in text
    assert admin.post("/automations/new/", {**data, "actions": "[{"}).status_code == 422
    data.update(
        condition="", actions='[{"kind": "set_fields", "values": {"description": "\'likely\'"}}]'
    )
    saved = admin.post("/automations/new/", data)
    assert saved.status_code == 302
    first = Rule.objects.get()
    assert first.trigger_params == {"field": "probability", "to": "90"}

    looping = {
        **data,
        "name": "Score described deals",
        "trigger_field": "description",
        "trigger_to": "",
        "actions": '[{"kind": "set_fields", "values": {"probability": "90"}}]',
    }
    refused = admin.post("/automations/new/", looping)
    assert refused.status_code == 422
    assert "Describe probable deals" in refused.content.decode()
    assert Rule.objects.count() == 1

    edit = admin.get(f"/automations/{first.pk}/edit/").content.decode()
    assert 'value="probability"' in edit
    edited = admin.post(
        f"/automations/{first.pk}/edit/", {**data, "name": "Renamed", "version": "1"}
    )
    assert edited.status_code == 302
    stale = admin.post(f"/automations/{first.pk}/edit/", {**data, "name": "Old", "version": "1"})
    assert stale.status_code == 409
    assert (
        admin.post(f"/automations/{first.pk}/enable/", {"enabled": "0", "version": "2"}).status_code
        == 302
    )
    first.refresh_from_db()
    assert (first.name, first.is_enabled) == ("Renamed", False)
    admin.post(f"/automations/{first.pk}/delete/", {"version": "3"})
    assert Rule.objects.exists()  # not confirmed
    gone = admin.post(f"/automations/{first.pk}/delete/", {"version": "3", "confirm": "yes"})
    assert gone.status_code == 302 and not Rule.objects.exists()


def test_an_admin_defines_a_hold_on_the_page(people):
    admin = _browser(people["admin"])
    data = {
        "object_type": "order",
        "code": "credit-check",
        "name": "Credit check",
        "name_ko": "신용 확인",
        "release_condition": "total >",
        "blocks": '[{"field": "nowhere"}]',
    }
    refused = admin.post("/automations/holds/new/", data)
    assert refused.status_code == 422
    assert "Item 1: No such field." in refused.content.decode()
    data.update(release_condition="total > 0.0", blocks='[{"field": "status", "value": "shipped"}]')
    assert admin.post("/automations/holds/new/", data).status_code == 302
    assert _browser(people["manager"]).get("/automations/holds/new/").status_code == 404
    listing = _browser(people["manager"]).get("/automations/holds/").content.decode()
    assert "Credit check" in listing and "/edit/" not in listing


def _queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def test_lists_cost_the_same_queries_whatever_their_length(people, account):
    admin = token_client(people["admin"])
    hold = services.save_hold(
        people["admin"], {"object_type": "opportunity", "code": "check", "name": "Check"}
    )
    services.save_hold(people["admin"], {"object_type": "order", "code": "o", "name": "O"})
    deals = [deal(people, account, name=f"Deal {n}") for n in range(4)]

    def grow(n: int) -> None:
        rule(people["admin"], name=f"Rule {n}", condition=f"amount > {n}.0", position=n)
        services.place_on_hold(people["admin"], hold.pk, deals[n].pk, "check")
        kind = "order" if n % 2 else "opportunity"
        services.save_hold(people["admin"], {"object_type": kind, "code": f"h{n}", "name": "H"})

    grow(0)
    paths = ["automations/rules", f"automations/holds/{hold.pk}/queue"]
    pages = ["/automations/", f"/automations/holds/{hold.pk}/", "/automations/holds/"]
    browser = _browser(people["admin"])
    for path in paths:  # the token's first use and the content types cache cost once
        _queries(admin.client, "/api/v1/" + path)
    one = [_queries(admin.client, "/api/v1/" + p) for p in paths]
    one += [_queries(browser, p) for p in pages]
    for n in (1, 2, 3):
        grow(n)
    four = [_queries(admin.client, "/api/v1/" + p) for p in paths]
    four += [_queries(browser, p) for p in pages]
    assert four == one


def test_the_record_page_shows_its_holds_and_the_rules_that_acted(people, account, events):
    hold = services.save_hold(
        people["admin"],
        {
            "object_type": "opportunity",
            "code": "check",
            "name": "Credit check",
            "name_ko": "신용 확인",
        },
    )
    rule(
        people["admin"],
        name="Hold big deals",
        trigger="created",
        condition="amount > 5000.0",
        actions=[{"kind": "hold", "hold": hold.code}],
    )
    with events():
        big = deal(people, account, name="Big", amount=Decimal(9000))
        small = deal(people, account, name="Small")
    page = _browser(people["sales"]).get(f"/crm/opportunities/{big.pk}/").content.decode()
    assert "Holds and rules" in page
    assert "Credit check" in page and f"/automations/holds/{hold.pk}/" in page
    assert "Hold big deals" in page and "fired" in page
    # A salesperson does not define rules: the rule is named, not linked.
    assert "/automations/rules/" not in page
    admin_page = _browser(people["admin"], "ko").get(f"/crm/opportunities/{big.pk}/")
    text = admin_page.content.decode()
    assert "보류와 규칙" in text and "신용 확인" in text and "보류 중" in text
    # A record no rule or hold has touched shows no panel.
    untouched = _browser(people["sales"]).get(f"/crm/opportunities/{small.pk}/")
    assert "Holds and rules" not in untouched.content.decode()
    # The same through the API, next to the page.
    api = token_client(people["sales"])
    body = api.get(f"automations/records/opportunity/{big.pk}").json()
    assert [(h["hold_code"], h["released_at"]) for h in body["holds"]] == [("check", None)]
    assert body["holds"][0]["record"] == "Big" and body["holds"][0]["waiting_seconds"] >= 0
    assert [(r["outcome"], r["detail"]["done"]) for r in body["runs"]] == [
        ("fired", ["on hold: Credit check"])
    ]
    assert api.get(f"automations/records/spaceship/{big.pk}").status_code == 404
    # The API also lists the runs the page leaves out: skipped by condition.
    quiet = api.get(f"automations/records/opportunity/{small.pk}").json()
    assert quiet["holds"] == [] and [r["outcome"] for r in quiet["runs"]] == ["skipped"]
    outsider = factories.user(Role.SALES, username="stranger", team=factories.TeamFactory())
    assert (
        token_client(outsider).get(f"automations/records/opportunity/{big.pk}").status_code == 404
    )
