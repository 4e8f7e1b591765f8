"""The support desk's JSON API: cases, their actions and timelines, the feature list."""

import json

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import given
from hypothesis import strategies as st

from trellis.core.models import AuditEvent, Role
from trellis.mail.models import OutboundMessage
from trellis.support import api as support_api
from trellis.support import intake
from trellis.support.models import Case, CaseAttachment, CaseEvent, Feature

from .. import factories
from .conftest import Api, assert_problem, token_client
from .test_fuzz import FUZZ, JSON, assert_no_server_error, encode, typed

CUSTOMER = "kim@example.co.kr"


@pytest.fixture
def agent(db, team):
    return factories.user(Role.SUPPORT, username="agent", first_name="Minji", team=team)


@pytest.fixture
def colleague(db, team):
    return factories.user(Role.SUPPORT, username="colleague", first_name="Jisoo", team=team)


@pytest.fixture
def marketer(db):
    return factories.user(Role.MARKETING, username="marketer")


def open_case(**overrides) -> Case:
    values = {
        "channel": "web",
        "subject": "Export fails",
        "body": "The export to Excel fails.",
        "requester_email": CUSTOMER,
        "requester_name": "Kim Minji",
    }
    values.update(overrides)
    case, _key = intake.open_case(**values)
    return Case.objects.get(pk=case.pk)


def support_state() -> dict:
    """Every row a support request could touch, to compare before and after a refusal."""
    case_type = ContentType.objects.get_for_model(Case)
    return {
        "cases": list(Case.objects.order_by("pk").values()),
        "events": list(CaseEvent.objects.order_by("pk").values()),
        "attachments": list(CaseAttachment.objects.order_by("pk").values("pk", "case_id")),
        "features": list(Feature.objects.order_by("pk").values()),
        "mail": OutboundMessage.objects.count(),
        "audit": AuditEvent.objects.filter(content_type=case_type).count(),
    }


def no_secrets(answer) -> None:
    text = answer.content.decode()
    assert "access_key" not in text
    for case in Case.objects.all():
        assert case.access_key_hash not in text


# Opening cases


def test_a_case_opened_through_the_api_goes_through_the_intake(agent):
    answer = token_client(agent).post(
        "cases/",
        {
            "subject": "로그인 오류",
            "body": "로그인이 안 돼요.",
            "requester_email": "Park@Example.com",
            "requester_name": "Park Jiwoo",
        },
    )
    assert answer.status_code == 201, answer.content
    body = answer.json()
    support_api.CaseDetailOut.model_validate(body)
    case = Case.objects.get(pk=body["id"])
    assert (body["tracking_number"], body["channel"], body["requester_email"]) == (
        case.tracking_number,
        "api",
        "park@example.com",
    )
    assert (body["language"], body["suggested_kind"], body["status"]) == ("ko", "defect", "new")
    assert body["description"] == "로그인이 안 돼요."
    no_secrets(answer)
    # The customer gets the acknowledgement with the access key; the API caller does not.
    assert OutboundMessage.objects.filter(to=["park@example.com"]).count() == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"requester_email": "nobody", "subject": "x"}, {"requester_email"}),
        ({"requester_email": CUSTOMER}, {"subject"}),
        ({"requester_email": CUSTOMER, "subject": "x", "product_id": 999_999}, {"product_id"}),
        ({"requester_email": CUSTOMER, "subject": "x", "colour": "red"}, {"colour"}),
        ({"requester_email": CUSTOMER, "subject": "x" * 301}, {"subject"}),
        ({"requester_email": CUSTOMER, "subject": "x", "language": "fr"}, {"language"}),
        ({"subject": "x"}, {"requester_email"}),
    ],
)
def test_a_bad_case_is_refused_with_field_errors(agent, body, fields):
    before = support_state()
    assert_problem(token_client(agent).post("cases/", body), 422, *fields)
    assert support_state() == before


def test_only_those_who_may_create_cases_open_them(sales):
    before = support_state()
    answer = token_client(sales).post("cases/", {"requester_email": CUSTOMER, "subject": "x"})
    assert_problem(answer, 403)
    assert support_state() == before


# Reading


def test_a_case_reads_as_the_schema_says_and_hidden_ones_are_missing(agent, marketer):
    case = open_case()
    answer = token_client(agent).get(f"cases/{case.pk}")
    assert answer.status_code == 200
    body = answer.json()
    support_api.CaseDetailOut.model_validate(body)
    assert (body["id"], body["subject"], body["owner_id"], body["owner_name"]) == (
        case.pk,
        "Export fails",
        None,
        None,
    )
    no_secrets(answer)
    assert_problem(token_client(marketer).get(f"cases/{case.pk}"), 404)
    assert_problem(token_client(agent).get("cases/999999"), 404)


def test_lists_by_view_status_class_and_search(agent, colleague):
    api = token_client(agent)
    queued = open_case(subject="Printing")
    mine = open_case(subject="Export fails", requester_email="lee@example.com")
    theirs = open_case(subject="로그인 오류", requester_name="박지우")
    api.post(f"cases/{mine.pk}/claim")
    token_client(colleague).post(f"cases/{theirs.pk}/claim")
    api.post(f"cases/{mine.pk}/classify", {"kind": "defect"})

    def ids(**params) -> list[int]:
        answer = api.get("cases/", **params)
        assert answer.status_code == 200, answer.content
        support_api.CasePage.model_validate(answer.json())
        return [item["id"] for item in answer.json()["items"]]

    assert ids() == [theirs.pk, mine.pk, queued.pk]
    assert ids(view="mine") == [mine.pk]
    assert ids(view="queue") == [queued.pk]
    assert ids(view="team") == [theirs.pk, mine.pk]
    assert ids(view="defects") == [mine.pk]
    assert ids(view="unclassified") == [theirs.pk, queued.pk]
    assert ids(status="new") == [queued.pk]
    assert ids(kind="defect") == [mine.pk]
    assert ids(q="print") == [queued.pk]
    assert ids(q="박지우") == [theirs.pk]
    assert ids(q="LEE@example") == [mine.pk]
    assert ids(q=mine.tracking_number.lower()) == [mine.pk]
    first = api.get("cases/", page_size=2).json()
    assert (len(first["items"]), first["has_next"]) == (2, True)
    assert api.get("cases/", page_size=2, page=2).json()["has_next"] is False

    assert_problem(api.get("cases/", view="everything"), 422, "view")
    assert_problem(api.get("cases/", status="solved"), 422, "status")
    assert_problem(api.get("cases/", colour="red"), 422, "colour")
    assert_problem(api.get("cases/", page_size=101), 422, "page_size")


def test_the_list_needs_a_right_on_cases(marketer, sales):
    open_case()
    assert_problem(token_client(marketer).get("cases/"), 403)
    assert len(token_client(sales).get("cases/").json()["items"]) == 1


def _queries_for(api: Api, page_size: int) -> int:
    with CaptureQueriesContext(connection) as context:
        answer = api.get("cases/", page_size=page_size)
    assert answer.status_code == 200
    assert len(answer.json()["items"]) == page_size
    return len(context)


def test_a_list_costs_the_same_few_queries_whatever_its_size(agent, colleague, admin):
    account = factories.account(admin, name="Hanbit", email="info@hanbit.example")
    for n in range(30):
        case = open_case(subject=f"Case {n}", requester_email=f"c{n}@hanbit.example")
        if n % 2:
            token_client(colleague).post(f"cases/{case.pk}/claim")
    assert Case.objects.filter(account=account).count() == 30
    api = token_client(agent)
    api.get("me")
    small, large = _queries_for(api, 5), _queries_for(api, 30)
    assert small == large
    # The token with its user and role, the rights, the page.
    assert large <= 3


# Actions


def test_claim_and_the_loser_of_a_claim(agent, colleague):
    case = open_case()
    answer = token_client(agent).post(f"cases/{case.pk}/claim")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    support_api.CaseDetailOut.model_validate(body)
    assert (body["owner_id"], body["owner_name"], body["status"], body["version"]) == (
        agent.pk,
        "Minji",
        "open",
        2,
    )
    before = support_state()
    problem = assert_problem(token_client(colleague).post(f"cases/{case.pk}/claim"), 409)
    assert "Minji" in problem["detail"]
    assert support_state() == before


def test_assign_checks_the_version_and_answers_a_stale_one_with_the_current_case(agent, colleague):
    case = open_case()
    api = token_client(agent)
    api.post(f"cases/{case.pk}/claim")
    before = support_state()

    stale = assert_problem(
        api.post(f"cases/{case.pk}/assign", {"user_id": colleague.pk, "version": 1}), 409
    )
    assert (stale["current"]["id"], stale["current"]["version"]) == (case.pk, 2)
    assert "access_key_hash" not in stale["current"]
    assert_problem(api.post(f"cases/{case.pk}/assign", {"note": "x"}), 422, "user_id")
    assert_problem(api.post(f"cases/{case.pk}/assign", {"user_id": 999_999}), 422, "user_id")
    assert_problem(api.post(f"cases/{case.pk}/assign", {"user_id": 0}), 422, "user_id")
    assert_problem(api.post(f"cases/{case.pk}/assign", {"team_id": 999_999}), 422, "team_id")
    assert support_state() == before

    answer = api.post(
        f"cases/{case.pk}/assign", {"user_id": colleague.pk, "note": "Expert.", "version": 2}
    )
    assert answer.status_code == 200, answer.content
    assert (answer.json()["owner_id"], answer.json()["version"]) == (colleague.pk, 3)


def test_status_changes_and_their_refusals(agent):
    case = open_case()
    api = token_client(agent)
    before = support_state()
    assert_problem(api.post(f"cases/{case.pk}/status", {"status": "solved"}), 422, "status")
    assert_problem(api.post(f"cases/{case.pk}/status", {}), 422, "status")
    assert_problem(api.post(f"cases/{case.pk}/status", {"status": "resolved", "version": 7}), 409)
    assert support_state() == before

    answer = api.post(f"cases/{case.pk}/status", {"status": "resolved", "version": 1})
    assert answer.status_code == 200, answer.content
    assert answer.json()["resolved_at"] is not None
    before = support_state()
    assert_problem(api.post(f"cases/{case.pk}/status", {"status": "new"}), 422, "status")
    assert support_state() == before


def test_details_change_with_a_version_and_refusals_change_nothing(agent, admin):
    product = factories.product(admin, name="Trellis Cloud", sku="TC-1")
    case = open_case()
    api = token_client(agent)
    before = support_state()
    path = f"cases/{case.pk}"
    assert_problem(api.patch(path, {"priority": "high"}), 422, "version")
    assert_problem(api.patch(path, {"priority": "soon", "version": 1}), 422, "priority")
    assert_problem(api.patch(path, {"subject": None, "version": 1}), 422, "subject")
    assert_problem(api.patch(path, {"status": "closed", "version": 1}), 422, "status")
    assert_problem(api.patch(path, {"product_id": 999_999, "version": 1}), 422, "product_id")
    assert_problem(api.patch(path, {"priority": "high", "version": 7}), 409)
    assert_problem(api.patch("cases/999999", {"priority": "high", "version": 1}), 404)
    assert support_state() == before

    answer = api.patch(path, {"priority": "urgent", "product_id": product.pk, "version": 1})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    support_api.CaseDetailOut.model_validate(body)
    assert (body["priority"], body["product_id"], body["subject"], body["version"]) == (
        "urgent",
        product.pk,
        case.subject,
        2,
    )
    [edited] = CaseEvent.objects.filter(case=case, kind="edited")
    assert not edited.public
    assert edited.data["changes"] == {
        "priority": ["normal", "urgent"],
        "product": [None, "Trellis Cloud (TC-1)"],
    }
    answer = api.patch(path, {"product_id": None, "version": 2})
    assert answer.json()["product_id"] is None


def test_classify_a_feature_request_and_see_it_on_the_feedback_list(agent):
    first = open_case()
    second = open_case(requester_email="lee@example.com", requester_name="Lee")
    api = token_client(agent)
    answer = api.post(
        f"cases/{first.pk}/classify", {"kind": "feature_request", "feature_title": "Dark mode"}
    )
    assert answer.status_code == 200, answer.content
    feature_id = answer.json()["feature_id"]
    assert (
        api.post(
            f"cases/{second.pk}/classify", {"kind": "feature_request", "feature_id": feature_id}
        ).json()["feature_id"]
        == feature_id
    )

    features = api.get("features/")
    assert features.status_code == 200
    support_api.FeaturePage.model_validate(features.json())
    [item] = features.json()["items"]
    assert (item["title"], item["case_count"]) == ("Dark mode", 2)
    assert sorted(c["email"] for c in item["customers"]) == [CUSTOMER, "lee@example.com"]

    before = support_state()
    assert_problem(api.post(f"cases/{first.pk}/classify", {"kind": "bug"}), 422, "kind")
    assert_problem(api.post(f"cases/{first.pk}/classify", {"kind": "unclassified"}), 422, "kind")
    assert_problem(
        api.post(f"cases/{second.pk}/classify", {"kind": "feature_request"}),
        422,
        "feature_title",
    )
    assert support_state() == before


def test_reply_and_note_add_events_that_read_as_the_schema_says(agent):
    case = open_case()
    api = token_client(agent)
    before = support_state()
    assert_problem(api.post(f"cases/{case.pk}/reply", {"body": "  "}), 422, "body")
    assert_problem(api.post(f"cases/{case.pk}/reply", {}), 422, "body")
    assert_problem(
        api.post(f"cases/{case.pk}/reply", {"body": "Hi", "status": "done"}), 422, "status"
    )
    assert_problem(api.post(f"cases/{case.pk}/notes", {"body": ""}), 422, "body")
    assert support_state() == before

    reply = api.post(
        f"cases/{case.pk}/reply", {"body": "Which version?", "status": "waiting_on_customer"}
    )
    assert reply.status_code == 201, reply.content
    support_api.EventOut.model_validate(reply.json())
    assert (reply.json()["kind"], reply.json()["public"], reply.json()["author"]) == (
        "reply",
        True,
        "Minji",
    )
    note = api.post(f"cases/{case.pk}/notes", {"body": "Old plan."})
    assert note.status_code == 201
    assert (note.json()["kind"], note.json()["public"]) == ("note", False)
    assert Case.objects.get(pk=case.pk).status == "waiting_on_customer"


def test_events_list_the_timeline_with_attachments(agent, marketer):
    case = open_case()
    message = CaseEvent.objects.get(case=case, kind="customer_message")
    CaseAttachment.objects.create(
        case=case, event=message, filename="log.txt", content_type="text/plain", size=3, data=b"a"
    )
    api = token_client(agent)
    api.post(f"cases/{case.pk}/notes", {"body": "Checked."})

    answer = api.get(f"cases/{case.pk}/events")
    assert answer.status_code == 200, answer.content
    support_api.EventPage.model_validate(answer.json())
    items = answer.json()["items"]
    assert [(e["kind"], e["public"]) for e in items] == [
        ("received", True),
        ("customer_message", True),
        ("note", False),
    ]
    assert [a["filename"] for a in items[1]["attachments"]] == ["log.txt"]
    assert "data" not in items[1]["attachments"][0]
    assert items[2]["actor_name"] == "Minji"
    assert_problem(token_client(marketer).get(f"cases/{case.pk}/events"), 404)
    assert_problem(api.get(f"cases/{case.pk}/events", public="1"), 422, "public")


def test_merge_and_split(agent):
    target = open_case(subject="Export fails")
    source = open_case(subject="Export fails again")
    other_customer = open_case(requester_email="lee@example.com")
    api = token_client(agent)
    before = support_state()
    for target_id in (source.pk, other_customer.pk, 999_999):
        assert_problem(
            api.post(f"cases/{source.pk}/merge", {"target_id": target_id}), 422, "target_id"
        )
    assert_problem(api.post(f"cases/{source.pk}/merge", {}), 422, "target_id")
    assert support_state() == before

    merged = api.post(f"cases/{source.pk}/merge", {"target_id": target.pk})
    assert merged.status_code == 200, merged.content
    assert merged.json()["id"] == target.pk
    source_now = api.get(f"cases/{source.pk}").json()
    assert (source_now["status"], source_now["merged_into_id"]) == ("closed", target.pk)
    assert_problem(api.post(f"cases/{source.pk}/merge", {"target_id": target.pk}), 409)

    message = CaseEvent.objects.filter(case=target, kind="customer_message").first()
    before = support_state()
    assert_problem(
        api.post(f"cases/{target.pk}/split", {"event_ids": [], "subject": "Part"}),
        422,
        "event_ids",
    )
    assert_problem(
        api.post(f"cases/{target.pk}/split", {"event_ids": [message.pk], "subject": " "}),
        422,
        "subject",
    )
    assert support_state() == before
    split = api.post(f"cases/{target.pk}/split", {"event_ids": [message.pk], "subject": "Part"})
    assert split.status_code == 201, split.content
    body = split.json()
    support_api.CaseDetailOut.model_validate(body)
    assert (body["split_from_id"], body["subject"]) == (target.pk, "Part")
    assert body["tracking_number"] not in (target.tracking_number, source.tracking_number)
    no_secrets(split)


# Who may


ACTIONS = [
    ("claim", None),
    ("assign", {"team_id": "TEAM"}),
    ("status", {"status": "in_progress"}),
    ("classify", {"kind": "defect"}),
    ("reply", {"body": "Hello"}),
    ("notes", {"body": "Hello"}),
    ("merge", {"target_id": "OTHER"}),
    ("split", {"event_ids": ["MESSAGE"], "subject": "Part"}),
]


def _body(body, case, other, team):
    if body is None:
        return None
    names = {
        "TEAM": team.pk,
        "OTHER": other.pk,
        "MESSAGE": CaseEvent.objects.get(case=case, kind="customer_message").pk,
    }

    def fill(value):
        if isinstance(value, list):
            return [fill(v) for v in value]
        return names.get(value, value) if isinstance(value, str) else value

    return {key: fill(value) for key, value in body.items()}


@pytest.mark.parametrize(("action", "body"), ACTIONS, ids=[a for a, _b in ACTIONS])
@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.SALES, 403), (Role.READ_ONLY, 403), (Role.MARKETING, 404), (None, 401)],
)
def test_actions_refused_change_nothing(team, action, body, role, status):
    case, other = open_case(), open_case()
    if role is None:
        api = Api(Client())
    else:
        api = token_client(factories.user(role, username=f"as-{role}", team=team))
    before = support_state()
    answer = api.post(f"cases/{case.pk}/{action}", _body(body, case, other, team))
    assert_problem(answer, status)
    assert support_state() == before


@pytest.mark.parametrize(("action", "body"), ACTIONS, ids=[a for a, _b in ACTIONS])
def test_actions_answer_404_for_a_case_that_does_not_exist(agent, team, action, body):
    case, other = open_case(), open_case()
    before = support_state()
    answer = token_client(agent).post("cases/999999/" + action, _body(body, case, other, team))
    assert_problem(answer, 404)
    assert support_state() == before


def test_a_body_that_is_not_json_is_a_problem(agent):
    case = open_case()
    api = token_client(agent)
    answer = api.client.post(
        f"/api/v1/cases/{case.pk}/reply", "{not json", content_type="application/json"
    )
    assert answer.status_code in (400, 422)
    assert answer["Content-Type"] == "application/problem+json"
    assert json.loads(answer.content)["status"] == answer.status_code


# Whatever a client sends, never a 5xx.

BODIES = {
    "": support_api.CaseCreate,
    "claim": None,
    "assign": support_api.AssignIn,
    "status": support_api.StatusIn,
    "classify": support_api.ClassifyIn,
    "reply": support_api.ReplyIn,
    "notes": support_api.NoteIn,
    "merge": support_api.MergeIn,
    "split": support_api.SplitIn,
}


@pytest.fixture
def fuzz_world(agent, team):
    """Made once per test, not per example: two cases and ids that fit the inputs."""
    cases = [open_case(subject=f"Fuzz {n}") for n in range(2)]
    ids = st.sampled_from(
        [
            *(c.pk for c in cases),
            *CaseEvent.objects.filter(case__in=cases).values_list("pk", flat=True),
            agent.pk,
            team.pk,
        ]
    )
    return token_client(agent), ids


@pytest.mark.parametrize("action", BODIES, ids=lambda a: a or "create")
@FUZZ
@given(data=st.data())
def test_actions_never_fail_with_a_server_error(action, fuzz_world, data):
    api, ids = fuzz_world
    schema = BODIES[action]
    if schema is None:
        body = data.draw(JSON | st.just({}))
    else:
        properties = schema.model_json_schema()["properties"]
        fields = st.fixed_dictionaries(
            {}, optional={name: typed(spec, ids) | JSON for name, spec in properties.items()}
        )
        body = data.draw(fields | JSON)
    path = f"cases/{data.draw(ids)}/{action}" if action else "cases/"
    answer = api.client.post(f"/api/v1/{path}", encode(body), content_type="application/json")
    assert_no_server_error(answer)
