"""The agent's support pages: the case list, a case and its actions, a logged call, feature
requests. Every action goes through the views and must change what it says, and bad input or a
stale version must change nothing."""

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from trellis.core.models import Role
from trellis.support import contracts, intake, services
from trellis.support.models import Case, CaseAttachment, CaseEvent, Feature, ReplyTemplate

from .. import factories

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def desk(db):
    return factories.TeamFactory(name="Support desk")


@pytest.fixture
def agent(desk):
    return factories.user(Role.SUPPORT, username="agent", first_name="Jiwoo", team=desk)


@pytest.fixture
def colleague(desk):
    return factories.user(Role.SUPPORT, username="expert", first_name="Seojun", team=desk)


@pytest.fixture
def marketer(db):
    """May see no case at all."""
    return factories.user(Role.MARKETING, username="marketer")


def open_case(
    subject="VPN 접속이 안 돼요",
    body="어제부터 접속이 안 됩니다.",
    email="minji@hanbit.example",
    name="김민지",
    **kwargs,
):
    case, _key = intake.open_case(
        channel="email",
        subject=subject,
        body=body,
        requester_email=email,
        requester_name=name,
        **kwargs,
    )
    return case


def detail(case):
    return reverse("support:case-detail", args=[case.pk])


def action(case, name):
    return reverse(f"support:case-{name}", args=[case.pk])


def events_of(case, kind):
    return list(CaseEvent.objects.filter(case=case, kind=kind).order_by("id"))


# Pages render.


def test_every_page_renders_for_a_support_agent(login, agent):
    case = open_case()
    client = login(agent)
    for tab in ("mine", "queue", "all", "unclassified", "defects", "features"):
        response = client.get(reverse("support:case-list"), {"view": tab})
        assert response.status_code == 200, tab
        assert "<h1>Cases</h1>" in response.text
    queue = client.get(reverse("support:case-list"), {"view": "queue"})
    assert case.tracking_number in queue.text
    assert action(case, "claim") in queue.text

    page = client.get(detail(case))
    assert page.status_code == 200
    for text in (
        case.tracking_number,
        "VPN 접속이 안 돼요",
        "어제부터 접속이 안 됩니다.",
        "minji@hanbit.example",
        "Reply to the customer",
        "Internal note",
        "Reassign",
        "Set status",
        "Merge into another case",
        "Works as designed?",
        "Is the behaviour described in the manual?",
        "Past cases",
    ):
        assert text in page.text, text

    assert client.get(reverse("support:log-call")).status_code == 200
    features = client.get(reverse("support:feature-list"))
    assert features.status_code == 200
    assert "No feature requests yet." in features.text


def test_beside_the_case_the_customers_account_contracts_deals_and_past_cases(login, manager):
    account = factories.account(manager, name="주식회사 한빛", email="info@hanbit.example")
    contract = contracts.create_contract(
        manager,
        {
            "account_id": account.pk,
            "name": "유지보수",
            "start_date": "2000-01-01",
            "end_date": "2999-12-31",
        },
    )
    deal = factories.opportunity(manager, name="VPN 증설", account_id=account.pk)
    earlier = open_case(subject="지난달 문의")
    case = open_case()
    assert case.account_id == account.pk
    page = login(manager).get(detail(case))
    sidebar = page.context["sidebar"]
    assert sidebar.account == account
    assert sidebar.contracts == [contract]
    assert case.contract == contract
    assert sidebar.opportunities == [deal]
    assert sidebar.past_cases == [earlier]
    for text in ("주식회사 한빛", "VPN 증설", earlier.tracking_number, contract.number):
        assert text in page.text


def _queries_for_case(client, case) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(detail(case))
    assert response.status_code == 200
    return len(captured)


def test_case_page_queries_do_not_grow_with_the_timeline(login, agent, colleague):
    case = open_case(attachments=[intake.make_attachment("a.txt", "text/plain", b"a")])
    other = open_case(subject="다른 문의")
    client = login(agent)
    few = _queries_for_case(client, case)
    services.claim(agent, case.pk)
    case.refresh_from_db()
    services.assign(agent, case.pk, user_id=colleague.pk, note="확인 부탁", version=case.version)
    services.merge(agent, other.pk, case.pk)
    for n in range(8):
        intake.customer_reply(
            case,
            body=f"추가 내용 {n}",
            via="email",
            attachments=[intake.make_attachment(f"log{n}.txt", "text/plain", b"log")],
        )
        services.add_note(agent, case.pk, f"메모 {n}")
        services.reply(agent, case.pk, f"답변 {n}")
        open_case(subject=f"지난 문의 {n}")
    many = _queries_for_case(client, case)
    assert many == few


def test_the_sidebar_links_to_cases_and_feature_requests(login, agent, marketer):
    page = login(agent).get(reverse("home"))
    assert f'href="{reverse("support:case-list")}"' in page.text
    assert f'href="{reverse("support:feature-list")}"' in page.text
    assert "Mail quarantine" not in page.text
    # Someone who may see no case is not offered the pages.
    page = login(marketer).get(reverse("home"))
    assert f'href="{reverse("support:case-list")}"' not in page.text
    assert login(marketer).get(reverse("support:case-list")).status_code == 403


def test_admins_find_the_mail_quarantine_in_the_sidebar(login, admin):
    url = reverse("mail:quarantine")
    page = login(admin).get(reverse("support:case-list"))
    assert f'href="{url}"' in page.text
    assert "Mail quarantine" in page.text


def test_the_pages_speak_korean(login, agent):
    case = open_case()
    client = login(agent)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ko"
    for url in (reverse("support:case-list"), detail(case), reverse("support:log-call")):
        response = client.get(url)
        assert response.status_code == 200
        assert '<html lang="ko">' in response.text


def test_a_hidden_case_is_not_found_and_nothing_happens(login, marketer, agent):
    case = open_case()
    attachment = CaseAttachment.objects.create(
        case=case, filename="a.txt", content_type="text/plain", size=1, data=b"x"
    )
    client = login(marketer)
    assert client.get(detail(case)).status_code == 404
    url = reverse("support:case-attachment", args=[case.pk, attachment.pk])
    assert client.get(url).status_code == 404
    assert client.post(action(case, "claim")).status_code == 404
    assert client.post(action(case, "note"), {"body": "hi"}).status_code == 404
    case.refresh_from_db()
    assert case.owner_id is None
    assert not events_of(case, CaseEvent.Kind.NOTE)
    assert client.get(reverse("support:case-detail", args=[999_999])).status_code == 404


def test_read_only_users_see_the_case_but_cannot_act(login, sales):
    case = open_case()
    client = login(sales)
    page = client.get(detail(case))
    assert page.status_code == 200
    assert action(case, "reply") not in page.text
    assert client.post(action(case, "note"), {"body": "메모"}).status_code == 403
    assert client.post(action(case, "claim")).status_code == 403
    assert client.get(reverse("support:log-call")).status_code == 403
    assert not events_of(case, CaseEvent.Kind.NOTE)
    case.refresh_from_db()
    assert case.owner_id is None


# The list.


def test_search_and_status_filter_refresh_only_the_results_with_htmx(login, agent):
    vpn = open_case(subject="VPN 접속 오류")
    billing = open_case(subject="청구서 금액 문의", email="park@mirae.example", name="박서연")
    client = login(agent)
    url = reverse("support:case-list")

    response = client.get(
        url, {"view": "all", "q": "청구서"}, HTTP_HX_TARGET="case-results", **HTMX
    )
    assert response.status_code == 200
    assert "<html" not in response.text
    assert billing.tracking_number in response.text
    assert vpn.tracking_number not in response.text
    assert "HX-Target" in response["Vary"]

    by_number = client.get(url, {"view": "all", "q": vpn.tracking_number})
    assert vpn.tracking_number in by_number.text
    assert billing.tracking_number not in by_number.text
    assert "<html" in by_number.text  # without htmx, the whole page

    services.set_status(agent, vpn.pk, Case.Status.RESOLVED)
    resolved = client.get(
        url, {"view": "all", "status": "resolved"}, HTTP_HX_TARGET="case-results", **HTMX
    )
    assert vpn.tracking_number in resolved.text
    assert billing.tracking_number not in resolved.text


def test_bad_list_parameters_fall_back_instead_of_failing(login, agent):
    open_case()
    client = login(agent)
    response = client.get(
        reverse("support:case-list"), {"view": "nonsense", "status": "bogus", "page": "-3"}
    )
    assert response.status_code == 200
    assert response.context["view"] == "mine"


def test_the_tabs_show_counts(login, agent):
    open_case()
    open_case(subject="두 번째 문의")
    mine = open_case(subject="내 문의")
    services.claim(agent, mine.pk)
    response = login(agent).get(reverse("support:case-list"))
    tabs = {tab["key"]: tab["count"] for tab in response.context["tabs"]}
    assert tabs["mine"] == 1
    assert tabs["queue"] == 2
    assert tabs["all"] == 3
    assert '<span class="count">2</span>' in response.text


def _queries_for_list(client, view) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("support:case-list"), {"view": view})
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("view", ["queue", "all"])
def test_list_queries_do_not_grow_with_the_rows_on_the_page(login, agent, colleague, view):
    client = login(agent)
    for n in range(3):
        open_case(subject=f"문의 {n}", email=f"c{n}@hanbit.example")
    few = _queries_for_list(client, view)
    for n in range(3, 30):
        case = open_case(subject=f"문의 {n}", email=f"c{n}@hanbit.example")
        if view == "all" and n % 2:
            services.claim(colleague, case.pk)
    many = _queries_for_list(client, view)
    page = client.get(reverse("support:case-list"), {"view": view}).context["page"]
    assert len(page.items) == 25
    assert many == few


# Claim and reassign.


def test_claim_from_the_queue_makes_the_agent_the_owner(login, agent):
    case = open_case()
    response = login(agent).post(action(case, "claim"))
    assert response.status_code == 302
    assert response["Location"] == detail(case)
    case.refresh_from_db()
    assert case.owner_id == agent.pk
    assert case.status == Case.Status.OPEN


def test_a_second_claim_is_a_conflict_that_names_the_owner(login, agent, colleague):
    case = open_case()
    services.claim(colleague, case.pk)
    response = login(agent).post(action(case, "claim"))
    assert response.status_code == 409
    assert "Seojun" in response.text
    assert "has already taken this case" in response.text
    case.refresh_from_db()
    assert case.owner_id == colleague.pk


def test_reassign_hands_the_case_over_with_an_internal_note(login, agent, colleague):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    response = login(agent).post(
        action(case, "assign"),
        {"user": colleague.pk, "team": "", "note": "VPN 전문가 확인 필요", "version": case.version},
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.owner_id == colleague.pk
    handoff = events_of(case, CaseEvent.Kind.ASSIGNED)[-1]
    assert (handoff.body, handoff.public) == ("VPN 전문가 확인 필요", False)
    page = login(agent).get(detail(case))
    assert "VPN 전문가 확인 필요" in page.text
    assert "Assigned to" in page.text


def test_reassign_without_anyone_to_hand_to_changes_nothing(login, agent):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    before = case.version
    response = login(agent).post(
        action(case, "assign"), {"user": "", "team": "", "note": "", "version": case.version}
    )
    assert response.status_code == 422
    assert "Choose an agent, a team, or both." in response.text
    case.refresh_from_db()
    assert (case.owner_id, case.version) == (agent.pk, before)


def test_cases_are_handed_only_to_people_who_work_on_cases(login, agent, colleague, sales):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    client = login(agent)
    offered = set(client.get(detail(case)).context["assign_form"].fields["user"].queryset)
    assert {agent, colleague} <= offered
    assert sales not in offered
    response = client.post(
        action(case, "assign"), {"user": sales.pk, "note": "", "version": case.version}
    )
    assert response.status_code == 422
    case.refresh_from_db()
    assert case.owner_id == agent.pk


def test_a_stale_reassignment_is_a_conflict_showing_the_current_state(login, agent, colleague):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    seen = case.version
    # Meanwhile the case moves on.
    services.set_status(agent, case.pk, Case.Status.IN_PROGRESS, version=seen)
    response = login(agent).post(
        action(case, "assign"),
        {"user": colleague.pk, "team": "", "note": "넘깁니다", "version": seen},
    )
    assert response.status_code == 409
    assert "Someone else changed this case after you opened it." in response.text
    case.refresh_from_db()
    assert case.owner_id == agent.pk
    assert response.context["case"].status == Case.Status.IN_PROGRESS
    # The agent's entry is kept, now at the current version, so sending it again is deliberate.
    form = response.context["assign_form"]
    assert form["note"].value() == "넘깁니다"
    assert form["version"].value() == str(case.version)
    assert not [e for e in events_of(case, CaseEvent.Kind.ASSIGNED) if e.body == "넘깁니다"]


# Details.


def test_subject_priority_and_product_are_changed_on_the_case_page(login, agent, admin):
    product = factories.product(admin, name="Trellis Cloud")
    case = open_case()
    page = login(agent).get(reverse("support:case-detail", args=[case.pk]))
    assert "Subject, priority, product" in page.text
    response = login(agent).post(
        action(case, "details"),
        {
            "subject": "Excel export fails",
            "priority": "high",
            "product": product.pk,
            "version": case.version,
        },
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert (case.subject, case.priority, case.product_id) == (
        "Excel export fails",
        "high",
        product.pk,
    )
    timeline = login(agent).get(response.url).text
    assert "Details changed" in timeline
    assert "Trellis Cloud" in timeline


def test_a_stale_or_bad_details_change_keeps_the_entry_and_changes_nothing(login, agent):
    case = open_case()
    services.edit(agent, case.pk, {"priority": "low"}, version=case.version)
    before = Case.objects.values("subject", "priority", "version").get(pk=case.pk)
    stale = login(agent).post(
        action(case, "details"), {"subject": "Mine", "priority": "high", "version": 1}
    )
    assert stale.status_code == 409
    assert stale.context["details_form"]["subject"].value() == "Mine"
    bad = login(agent).post(
        action(case, "details"), {"subject": "", "priority": "soon", "version": 2}
    )
    assert bad.status_code == 422
    assert "Select a valid choice." in bad.text
    assert Case.objects.values("subject", "priority", "version").get(pk=case.pk) == before


# Status.


def test_set_status(login, agent):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    response = login(agent).post(
        action(case, "status"), {"status": "in_progress", "version": case.version}
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == Case.Status.IN_PROGRESS
    assert events_of(case, CaseEvent.Kind.STATUS)[-1].data["to"] == "in_progress"


def test_a_stale_status_change_is_a_conflict_and_changes_nothing(login, agent):
    case = open_case()
    services.claim(agent, case.pk)
    case.refresh_from_db()
    seen = case.version
    services.set_status(agent, case.pk, Case.Status.WAITING_ON_CUSTOMER, version=seen)
    response = login(agent).post(action(case, "status"), {"status": "resolved", "version": seen})
    assert response.status_code == 409
    case.refresh_from_db()
    assert case.status == Case.Status.WAITING_ON_CUSTOMER
    assert response.context["status_form"]["status"].value() == "resolved"


@pytest.mark.parametrize(
    ("status", "message"),
    [("bogus", "Select a valid choice."), ("waiting_on_customer", "cannot become")],
)
def test_a_bad_status_is_refused_with_the_form(login, agent, status, message):
    case = open_case()
    services.set_status(agent, case.pk, Case.Status.RESOLVED)
    case.refresh_from_db()
    before = (case.status, case.version)
    response = login(agent).post(
        action(case, "status"), {"status": status, "version": case.version}
    )
    assert response.status_code == 422
    assert message in response.text
    case.refresh_from_db()
    assert (case.status, case.version) == before


def test_the_status_picker_offers_the_moves_the_case_can_make(login, agent):
    case = open_case()
    services.set_status(agent, case.pk, Case.Status.RESOLVED)
    page = login(agent).get(detail(case))
    offered = [
        value for value, _label in page.context["status_form"]["status"].field.widget.choices
    ]
    assert offered == ["resolved", "open", "closed"]
    reply_offers = page.context["reply_form"]["status"].field.widget.choices
    assert [value for value, _label in reply_offers] == ["", "open", "closed"]


# Classify.


def test_classify_as_a_feature_request_puts_it_on_the_feedback_list(login, agent):
    case = open_case(subject="엑셀 내보내기 기능 요청")
    response = login(agent).post(
        action(case, "classify"), {"kind": "feature_request", "feature_title": "엑셀 내보내기"}
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.kind == Case.Kind.FEATURE_REQUEST
    assert case.feature.title == "엑셀 내보내기"

    page = login(agent).get(reverse("support:feature-list"))
    assert "엑셀 내보내기" in page.text
    assert "김민지" in page.text
    summary = page.context["features"][0]
    assert (summary.feature.title, summary.case_count) == ("엑셀 내보내기", 1)


def test_the_case_page_shows_the_suggested_class(login, agent):
    case = open_case()
    Case.objects.filter(pk=case.pk).update(suggested_kind=Case.Kind.DEFECT)
    page = login(agent).get(detail(case))
    assert "Suggested from similar past cases:" in page.text
    assert page.context["classify_form"]["kind"].value() == "defect"


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "feature_request", "feature_title": ""},
        {"kind": "unclassified"},
        {"kind": "nonsense"},
    ],
)
def test_bad_classifications_change_nothing(login, agent, data):
    case = open_case()
    response = login(agent).post(action(case, "classify"), data)
    assert response.status_code == 422
    case.refresh_from_db()
    assert case.kind == Case.Kind.UNCLASSIFIED
    assert not Feature.objects.exists()
    assert not events_of(case, CaseEvent.Kind.CLASSIFIED)


# Reply and notes.


def test_reply_with_a_status_change(login, agent):
    case = open_case()
    response = login(agent).post(
        action(case, "reply"),
        {"body": "재설치 후 다시 시도해 주세요.", "status": "waiting_on_customer"},
    )
    assert response.status_code == 302
    case.refresh_from_db()
    assert case.status == Case.Status.WAITING_ON_CUSTOMER
    assert case.first_response_at is not None
    reply = events_of(case, CaseEvent.Kind.REPLY)[-1]
    assert (reply.body, reply.public) == ("재설치 후 다시 시도해 주세요.", True)


def test_an_empty_reply_is_refused(login, agent):
    case = open_case()
    response = login(agent).post(action(case, "reply"), {"body": "   ", "status": ""})
    assert response.status_code == 422
    assert "This field is required." in response.text
    assert not events_of(case, CaseEvent.Kind.REPLY)
    case.refresh_from_db()
    assert case.first_response_at is None


def test_the_reply_box_quotes_the_thread_and_offers_templates_in_the_case_language(login, agent):
    case = open_case()
    korean = ReplyTemplate.objects.create(
        name="재설치 안내", language="ko", body="재설치 해주세요."
    )
    ReplyTemplate.objects.create(name="Reinstall", language="en", body="Please reinstall.")
    client = login(agent)
    page = client.get(detail(case))
    assert "&gt; 어제부터 접속이 안 됩니다." in page.text
    assert "재설치 안내" in page.text
    assert "Reinstall" not in page.text

    # htmx asks for the reply box alone, keeping what the agent typed.
    box = client.get(
        detail(case),
        {"template": korean.pk, "body": "안녕하세요."},
        HTTP_HX_TARGET="reply-body",
        **HTMX,
    )
    assert box.status_code == 200
    assert "<html" not in box.text
    assert 'id="reply-body"' in box.text
    assert "안녕하세요.\n\n재설치 해주세요." in box.text

    # Without JavaScript, the template fills the box on the whole page.
    plain = client.get(detail(case), {"template": korean.pk})
    assert plain.context["reply_form"]["body"].value() == "재설치 해주세요."
    # An unknown template fills nothing and fails nothing.
    assert client.get(detail(case), {"template": "x"}).status_code == 200


def test_an_internal_note_is_marked_internal(login, agent):
    case = open_case()
    client = login(agent)
    response = client.post(action(case, "note"), {"body": "고객사 IT팀과 통화 예정"})
    assert response.status_code == 302
    note = events_of(case, CaseEvent.Kind.NOTE)[-1]
    assert (note.body, note.public) == ("고객사 IT팀과 통화 예정", False)
    page = client.get(detail(case))
    assert f'id="event-{note.pk}"' in page.text
    assert "entry event event-note internal" in page.text


def test_an_empty_note_is_refused(login, agent):
    case = open_case()
    response = login(agent).post(action(case, "note"), {"body": ""})
    assert response.status_code == 422
    assert not events_of(case, CaseEvent.Kind.NOTE)


# Merge and split.


def test_merge_into_another_case_by_tracking_number(login, agent):
    target = open_case(subject="VPN 오류")
    source = open_case(subject="VPN 오류 (다시 보냄)")
    response = login(agent).post(action(source, "merge"), {"target": target.tracking_number})
    assert response.status_code == 302
    assert response["Location"].startswith(detail(target))
    source.refresh_from_db()
    assert source.merged_into_id == target.pk
    assert source.status == Case.Status.CLOSED
    page = login(agent).get(detail(source))
    assert "This case was merged into" in page.text
    # Work goes on in the case it went into: no reply or status change here.
    assert action(source, "reply") not in page.text
    assert action(source, "status") not in page.text


@pytest.mark.parametrize("target", ["CS-1999-000001", "self", "other customer"])
def test_a_bad_merge_changes_nothing(login, agent, target):
    source = open_case()
    other = open_case(email="someone@else.example", name="다른 고객")
    number = {
        "CS-1999-000001": "CS-1999-000001",
        "self": source.tracking_number,
        "other customer": other.tracking_number,
    }[target]
    response = login(agent).post(action(source, "merge"), {"target": number})
    assert response.status_code == 422
    source.refresh_from_db()
    assert source.merged_into_id is None
    assert source.status == Case.Status.NEW


def test_split_moves_the_chosen_messages_into_a_new_case(login, agent):
    case = open_case()
    second = intake.customer_reply(case, body="그리고 프린터도 안 돼요.", via="email")
    response = login(agent).post(
        action(case, "split"), {"events": [second.pk], "subject": "프린터 문제"}
    )
    assert response.status_code == 302
    new_case = Case.objects.get(split_from=case)
    assert response["Location"].startswith(detail(new_case))
    assert new_case.subject == "프린터 문제"
    second.refresh_from_db()
    assert second.case_id == new_case.pk


@pytest.mark.parametrize("data", [{"subject": "프린터 문제"}, {"events": ["1"], "subject": ""}])
def test_a_bad_split_changes_nothing(login, agent, data):
    case = open_case()
    message = events_of(case, CaseEvent.Kind.CUSTOMER_MESSAGE)[0]
    if "events" in data:
        data = {**data, "events": [message.pk]}
    response = login(agent).post(action(case, "split"), data)
    assert response.status_code == 422
    assert not Case.objects.filter(split_from=case).exists()
    message.refresh_from_db()
    assert message.case_id == case.pk


def test_split_refuses_a_message_of_another_case(login, agent):
    case = open_case()
    other = open_case(subject="다른 문의")
    foreign = events_of(other, CaseEvent.Kind.CUSTOMER_MESSAGE)[0]
    response = login(agent).post(
        action(case, "split"), {"events": [foreign.pk], "subject": "프린터 문제"}
    )
    assert response.status_code == 422
    foreign.refresh_from_db()
    assert foreign.case_id == other.pk


# A phone call.


def test_logging_a_phone_call_opens_a_case(login, agent):
    client = login(agent)
    response = client.post(
        reverse("support:log-call"),
        {
            "requester_name": "이도윤",
            "requester_email": "doyun@mirae.example",
            "subject": "로그인이 안 됨",
            "body": "비밀번호 재설정 메일이 오지 않는다고 함",
        },
    )
    assert response.status_code == 302
    case = Case.objects.get(requester_email="doyun@mirae.example")
    assert case.channel == Case.Channel.PHONE
    assert response["Location"] == detail(case)
    assert events_of(case, CaseEvent.Kind.PHONE_CALL)


def test_a_call_for_a_known_contact_takes_their_address(login, agent, sales):
    contact = factories.contact(sales, name="최유나", email="yuna@hanbit.example")
    response = login(agent).post(
        reverse("support:log-call"),
        {"contact": contact.pk, "subject": "견적 문의", "body": "유지보수 견적 요청"},
    )
    assert response.status_code == 302
    case = Case.objects.get(subject="견적 문의")
    assert (case.requester_email, case.contact_id) == ("yuna@hanbit.example", contact.pk)


@pytest.mark.parametrize(
    "data",
    [
        {"subject": "로그인", "body": "내용"},  # no address and no contact
        {"requester_email": "not-an-address", "subject": "로그인", "body": "내용"},
        {"requester_email": "a@b.example", "subject": "", "body": "내용"},
    ],
)
def test_a_bad_call_opens_nothing(login, agent, data):
    response = login(agent).post(reverse("support:log-call"), data)
    assert response.status_code == 422
    assert not Case.objects.exists()


# Files and e-mail HTML.


def test_allowed_attachments_download_with_a_safe_name(login, agent):
    case = open_case(
        attachments=[intake.make_attachment("견적서.pdf", "application/pdf", b"%PDF-1.4 test")]
    )
    attachment = CaseAttachment.objects.get(case=case)
    client = login(agent)
    page = client.get(detail(case))
    url = reverse("support:case-attachment", args=[case.pk, attachment.pk])
    assert url in page.text
    response = client.get(url)
    assert response.status_code == 200
    assert response.content == b"%PDF-1.4 test"
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "%EA%B2%AC%EC%A0%81%EC%84%9C.pdf" in response["Content-Disposition"]


def test_hostile_file_names_and_types_are_made_harmless(login, agent):
    case = open_case()
    attachment = CaseAttachment.objects.create(
        case=case,
        filename='..\\..\\Windows\\evil"\r\nX-Injected: 1.html',
        content_type="text/html\r\nX-Other: 1",
        size=5,
        data=b"<b>x",
    )
    response = login(agent).get(reverse("support:case-attachment", args=[case.pk, attachment.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "\\" not in disposition and "\n" not in disposition and ".." not in disposition
    assert "X-Injected" not in response.headers


def test_blocked_attachments_are_listed_but_never_served(login, agent):
    case = open_case(
        attachments=[intake.make_attachment("invoice.pdf.exe", "application/octet-stream", b"MZ")]
    )
    attachment = CaseAttachment.objects.get(case=case)
    assert not attachment.allowed
    client = login(agent)
    page = client.get(detail(case))
    assert "invoice.pdf.exe" in page.text
    url = reverse("support:case-attachment", args=[case.pk, attachment.pk])
    assert url not in page.text
    assert client.get(url).status_code == 404


def test_html_mail_is_shown_sanitised_without_remote_images(login, agent):
    case = open_case(
        html=(
            '<p>안녕하세요</p><script>alert("x")</script>'
            '<img src="https://tracker.example/pixel.gif" alt="logo">'
            '<a href="javascript:alert(1)">link</a>'
        )
    )
    page = login(agent).get(detail(case))
    assert page.status_code == 200
    assert "<p>안녕하세요</p>" in page.text
    assert "tracker.example" not in page.text
    assert 'alert("x")' not in page.text
    assert "javascript:" not in page.text
