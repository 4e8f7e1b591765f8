"""The pipeline definition endpoints: reading for everyone who sees the records, writing for
admins, refusals in the problem shape with nothing changed, and 409 with the current state."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests import factories
from trellis.core.models import Role
from trellis.process.pipelines import api_definitions as api
from trellis.process.pipelines import services
from trellis.process.pipelines.models import BlackoutWindow, Pipeline, Stage

from .conftest import assert_problem, session_client

NEW = {
    "object_type": "opportunity",
    "code": "partner-sales",
    "name": "Partner sales",
    "name_ko": "파트너 영업",
    "stages": [
        {"code": "intro", "name": "Introduced", "name_ko": "소개", "probability": 10},
        {
            "code": "pitch",
            "name": "Pitched",
            "probability": 40,
            "max_dwell_days": 14,
            "dwell_in_business_days": True,
            "expected_activities": [{"en": "Demo held", "ko": "데모 진행"}],
            "gate": "warn",
            "gate_condition": "expected_close_date != null",
            "gate_message": "Set the close date first.",
            "gate_message_ko": "예상 마감일을 먼저 입력하세요.",
        },
        {"code": "deal", "name": "Deal", "kind": "won", "probability": 100},
        {"code": "gone", "name": "Gone", "kind": "lost"},
    ],
}


def definition_state() -> dict:
    return {
        "pipelines": list(Pipeline.objects.order_by("pk").values()),
        "stages": list(Stage.objects.order_by("pk").values()),
        "blackouts": list(BlackoutWindow.objects.order_by("pk").values()),
    }


def replacement(body: dict, **changes) -> dict:
    """A ``PUT`` body from a pipeline as the API showed it."""
    data = {k: body[k] for k in ("code", "name", "name_ko", "is_default", "is_active", "version")}
    data["stages"] = [{k: v for k, v in s.items() if k != "order"} for s in body["stages"]]
    data.update(changes)
    return data


@pytest.fixture
def created(admin, api_as) -> dict:
    answer = api_as(admin).post("pipelines", NEW)
    assert answer.status_code == 201, answer.content
    return answer.json()


def test_an_admin_creates_reads_and_lists_a_pipeline(admin, api_as, created):
    body = api.PipelineOut.model_validate(created).model_dump()
    assert body["object_type"] == "opportunity"
    assert (body["code"], body["name_ko"], body["version"]) == ("partner-sales", "파트너 영업", 1)
    assert (body["is_default"], body["is_active"]) == (False, True)
    assert [(s["code"], s["order"], s["kind"]) for s in body["stages"]] == [
        ("intro", 1, "open"),
        ("pitch", 2, "open"),
        ("deal", 3, "won"),
        ("gone", 4, "lost"),
    ]
    pitch = body["stages"][1]
    assert pitch["expected_activities"] == [{"en": "Demo held", "ko": "데모 진행"}]
    assert (pitch["gate"], pitch["gate_condition"]) == ("warn", "expected_close_date != null")
    assert (pitch["max_dwell_days"], pitch["dwell_in_business_days"]) == (14, True)
    assert {"amount", "expected_close_date", "owner_id"} <= set(body["condition_fields"])

    client = api_as(admin)
    assert client.get(f"pipelines/{body['id']}").json() == created
    listed = client.get("pipelines", object_type="opportunity").json()
    assert [p["code"] for p in listed] == ["b2b-sales", "partner-sales", "renewal"]
    for row in listed:
        api.PipelineOut.model_validate(row)
    assert [p["code"] for p in client.get("pipelines", object_type="lead").json()] == [
        "lead-qualification"
    ]
    Pipeline.objects.filter(code="renewal").update(is_active=False)
    active = client.get("pipelines", object_type="opportunity", is_active="true").json()
    assert [p["code"] for p in active] == ["b2b-sales", "partner-sales"]


def test_replacing_a_definition_reorders_changes_adds_and_removes_stages(admin, api_as, created):
    client = api_as(admin)
    intro, pitch, deal, _gone = created["stages"]
    body = replacement(
        created,
        name="Partner channel",
        is_default=True,
        stages=[
            {**pitch, "name": "Demo", "probability": 50},
            {**intro},
            {
                "code": "closing",
                "name": "Closing",
                "probability": 80,
                "gate": "require",
                "gate_condition": "amount >= 10000000.0",
            },
            {**deal},
        ],
    )
    for stage in body["stages"]:
        stage.pop("order", None)
    answer = client.put(f"pipelines/{created['id']}", body)
    assert answer.status_code == 200, answer.content
    replaced = api.PipelineOut.model_validate(answer.json()).model_dump()
    assert (replaced["name"], replaced["version"], replaced["is_default"]) == (
        "Partner channel",
        2,
        True,
    )
    assert [(s["code"], s["order"]) for s in replaced["stages"]] == [
        ("pitch", 1),
        ("intro", 2),
        ("closing", 3),
        ("deal", 4),
    ]
    assert replaced["stages"][0]["id"] == pitch["id"]
    assert replaced["stages"][0]["name"] == "Demo"
    assert not Stage.objects.filter(code="gone", pipeline_id=created["id"]).exists()
    # One default per kind of record: the old default gave way.
    assert not Pipeline.objects.get(code="b2b-sales").is_default


def test_a_stale_version_is_409_with_the_pipeline_as_it_is_now(admin, api_as, created):
    client = api_as(admin)
    first = client.put(f"pipelines/{created['id']}", replacement(created, name="First"))
    assert first.status_code == 200
    before = definition_state()
    late = client.put(f"pipelines/{created['id']}", replacement(created, name="Second"))
    body = assert_problem(late, 409)
    assert body["current"] == first.json()
    assert body["current"]["name"] == "First"
    assert definition_state() == before


@pytest.mark.parametrize(
    "change, fields, message",
    [
        (
            {
                "object_type": "product",
                "stages": [{"code": "a", "name": "A"}, {"code": "w", "name": "W", "kind": "won"}],
            },
            {"object_type"},
            "This kind of record has no pipelines.",
        ),
        ({"code": "B2B Sales"}, {"code"}, "Use lower-case letters"),
        ({"code": "b2b-sales"}, {"code"}, "This code is taken."),
        ({"stages": []}, {"stages"}, "Give the stages, in order."),
        ({"colour": "red"}, {"colour"}, ""),
        ({"stages": [{"code": "a", "name": "A"}]}, {"stages"}, "A pipeline needs a won stage."),
        (
            {"stages": [{"code": "a", "name": "A", "probability": 150}]},
            {"stages.0.probability"},
            "less than or equal to 100",
        ),
        (
            {"stages": [{"code": "a", "name": "A", "kind": "maybe"}]},
            {"stages.0.kind"},
            "'open', 'won' or 'lost'",
        ),
        (
            {
                "stages": [
                    {"code": "a", "name": "A", "gate": "require", "gate_condition": "amount >"},
                    {"code": "w", "name": "W", "kind": "won"},
                ]
            },
            {"stages.0.gate_condition"},
            "does not compile: Syntax error: mismatched input '<EOF>' (line 1, column 9)",
        ),
        (
            {
                "stages": [
                    {"code": "a", "name": "A"},
                    {
                        "code": "w",
                        "name": "W",
                        "kind": "won",
                        "gate": "warn",
                        "gate_condition": "colour == 'red'",
                    },
                ]
            },
            {"stages.1.gate_condition"},
            "Unknown field: colour.",
        ),
        (
            {"stages": [{"code": "a", "name": "A"}, {"code": "a", "name": "B", "kind": "won"}]},
            {"stages.1.code"},
            "Two stages have this code.",
        ),
        (
            {
                "stages": [
                    {"code": "a", "name": "A", "expected_activities": [{"ko": "미팅"}]},
                    {"code": "w", "name": "W", "kind": "won"},
                ]
            },
            {"stages.0.expected_activities.0.en"},
            "Field required",
        ),
    ],
)
def test_a_bad_definition_is_422_naming_the_field_and_nothing_is_saved(
    admin, api_as, change, fields, message
):
    before = definition_state()
    body = assert_problem(api_as(admin).post("pipelines", {**NEW, **change}), 422, *fields)
    assert message in " ".join(error["message"] for error in body["errors"])
    assert definition_state() == before


def test_a_replacement_that_breaks_a_rule_changes_nothing(admin, api_as, created):
    client = api_as(admin)
    before = definition_state()
    unknown = replacement(created)
    unknown["stages"][0]["id"] = 999_999
    assert_problem(client.put(f"pipelines/{created['id']}", unknown), 422, "stages.0.id")
    no_won = replacement(created)
    no_won["stages"] = [s for s in no_won["stages"] if s["kind"] != "won"]
    assert_problem(client.put(f"pipelines/{created['id']}", no_won), 422, "stages")
    without_version = replacement(created)
    del without_version["version"]
    assert_problem(client.put(f"pipelines/{created['id']}", without_version), 422, "version")
    kind = replacement(created, object_type="lead")
    assert_problem(client.put(f"pipelines/{created['id']}", kind), 422, "object_type")
    assert definition_state() == before
    assert_problem(client.put("pipelines/999999", replacement(created)), 404)


def test_who_may_read_and_who_may_write(admin, sales, manager, api_as, anonymous, created):
    pipeline_id = created["id"]
    before = definition_state()
    for method, path, body in [
        ("get", "pipelines", None),
        ("get", f"pipelines/{pipeline_id}", None),
        ("post", "pipelines", NEW),
        ("put", f"pipelines/{pipeline_id}", replacement(created)),
        ("get", f"pipelines/{pipeline_id}/blackouts", None),
        ("post", f"pipelines/{pipeline_id}/blackouts", {"name": "B"}),
    ]:
        args = () if body is None else (body,)
        assert_problem(getattr(anonymous, method)(path, *args), 401)
    for user in (sales, manager):
        client = api_as(user)
        assert client.get(f"pipelines/{pipeline_id}").json() == created
        assert "partner-sales" in [p["code"] for p in client.get("pipelines").json()]
        assert_problem(client.post("pipelines", {**NEW, "code": "mine"}), 403)
        assert_problem(client.put(f"pipelines/{pipeline_id}", replacement(created)), 403)
        window = {"name": "Mine", "quarter_week_from": 1, "quarter_week_to": 2}
        assert_problem(client.post(f"pipelines/{pipeline_id}/blackouts", window), 403)
    assert definition_state() == before


def test_a_user_reads_only_the_pipelines_of_records_they_may_see(api_as, created, db):
    agent = api_as(factories.user(Role.SUPPORT))
    assert [p["code"] for p in agent.get("pipelines").json()] == ["onboarding"]
    assert agent.get("pipelines", object_type="opportunity").json() == []
    assert_problem(agent.get(f"pipelines/{created['id']}"), 404)
    assert_problem(agent.get(f"pipelines/{created['id']}/blackouts"), 404)


def test_unknown_query_parameters_are_refused(admin, api_as):
    client = api_as(admin)
    assert_problem(client.get("pipelines", type="lead"), 422, "type")
    assert_problem(client.get("pipelines", object_type="lead\x00"), 422, "object_type")


def test_the_list_costs_the_same_queries_however_many_pipelines(admin, api_as):
    client = api_as(admin)

    def cost() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("pipelines").status_code == 200
        return len(queries)

    cost()
    small = cost()
    for n in range(5):
        services.save_pipeline(admin, {**NEW, "code": f"extra-{n}"})
    assert cost() == small


def test_a_browser_session_writes_with_its_csrf_token(admin, db):
    assert session_client(admin).post("pipelines", NEW).status_code == 201
    refused = session_client(admin, csrf=False).post("pipelines", {**NEW, "code": "other"})
    assert refused.status_code == 403
    assert not Pipeline.objects.filter(code="other").exists()


# Blackout windows.


def test_an_admin_adds_lists_replaces_and_deletes_blackout_windows(admin, sales, api_as, created):
    client = api_as(admin)
    path = f"pipelines/{created['id']}/blackouts"
    pitch = created["stages"][1]["id"]
    added = client.post(
        path,
        {
            "name": "No travel approvals",
            "name_ko": "출장 승인 불가",
            "stage_id": pitch,
            "quarter_week_from": 12,
            "quarter_week_to": 14,
        },
    )
    assert added.status_code == 201, added.content
    window = api.BlackoutOut.model_validate(added.json()).model_dump()
    assert window == {
        "id": window["id"],
        "pipeline_id": created["id"],
        "stage_id": pitch,
        "name": "No travel approvals",
        "name_ko": "출장 승인 불가",
        "starts_on": None,
        "ends_on": None,
        "quarter_week_from": 12,
        "quarter_week_to": 14,
    }
    assert api_as(sales).get(path).json() == [added.json()]

    replaced = client.put(
        f"{path}/{window['id']}",
        {"name": "Year end", "starts_on": "2026-12-24", "ends_on": "2027-01-02"},
    )
    assert replaced.status_code == 200, replaced.content
    assert replaced.json() | {"id": 0} == {
        "id": 0,
        "pipeline_id": created["id"],
        "stage_id": None,
        "name": "Year end",
        "name_ko": "",
        "starts_on": "2026-12-24",
        "ends_on": "2027-01-02",
        "quarter_week_from": None,
        "quarter_week_to": None,
    }
    assert client.get(path).json() == [replaced.json()]

    assert_problem(api_as(sales).delete(f"{path}/{window['id']}"), 403)
    assert client.delete(f"{path}/{window['id']}").status_code == 204
    assert client.get(path).json() == []
    assert_problem(client.delete(f"{path}/{window['id']}"), 404)


@pytest.mark.parametrize(
    "body, fields, message",
    [
        ({"name": "B"}, {None}, "Give fixed dates, or weeks of every quarter."),
        (
            {
                "name": "B",
                "starts_on": "2026-01-01",
                "ends_on": "2026-01-02",
                "quarter_week_from": 1,
                "quarter_week_to": 2,
            },
            {None},
            "not both",
        ),
        (
            {"name": "B", "starts_on": "2026-01-05", "ends_on": "2026-01-02"},
            {"ends_on"},
            "The window ends before it starts.",
        ),
        (
            {"name": "B", "quarter_week_from": 3, "quarter_week_to": 2},
            {"quarter_week_to"},
            "The last week comes before the first.",
        ),
        (
            {"name": "B", "quarter_week_from": 3, "quarter_week_to": 15},
            {"quarter_week_to"},
            "less than or equal to 14",
        ),
        ({"name": "B", "starts_on": "2026-02-30", "ends_on": "2026-03-02"}, {"starts_on"}, ""),
        ({"name": "", "quarter_week_from": 1, "quarter_week_to": 1}, {"name"}, "Give a name."),
        (
            {"name": "B", "colour": "red", "quarter_week_from": 1, "quarter_week_to": 1},
            {"colour"},
            "",
        ),
        (
            {"name": "B", "stage_id": "other", "quarter_week_from": 1, "quarter_week_to": 1},
            {"stage_id"},
            "Choose a stage of this pipeline",
        ),
    ],
)
def test_a_bad_blackout_window_is_422_and_nothing_is_saved(
    admin, api_as, created, body, fields, message
):
    if body.get("stage_id") == "other":
        body = {**body, "stage_id": Stage.objects.get(pipeline__code="renewal", code="offer").pk}
    before = definition_state()
    answer = api_as(admin).post(f"pipelines/{created['id']}/blackouts", body)
    problem = assert_problem(answer, 422, *fields)
    assert message in " ".join(error["message"] for error in problem["errors"])
    assert definition_state() == before


def test_a_window_is_reached_only_through_its_own_pipeline(admin, api_as, created):
    window = services.save_blackout(
        admin, created["id"], {"name": "Q end", "quarter_week_from": 13, "quarter_week_to": 13}
    )
    renewal = Pipeline.objects.get(code="renewal").pk
    client = api_as(admin)
    body = {"name": "Moved", "quarter_week_from": 1, "quarter_week_to": 1}
    assert_problem(client.put(f"pipelines/{renewal}/blackouts/{window.pk}", body), 404)
    assert_problem(client.delete(f"pipelines/{renewal}/blackouts/{window.pk}"), 404)
    assert_problem(client.post("pipelines/999999/blackouts", body), 404)
    assert BlackoutWindow.objects.get().name == "Q end"
