"""What an approver sees in the inbox, on the page and through ``GET /api/approvals/inbox``:
the steps waiting for them, soonest due first and those without a due time last, with the
process, the record's name, the step, who submitted it, for whom they stand in, the due time
and an overdue mark, under the counts of what waits and what is late."""

import datetime as dt
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from trellis.core.models import User
from trellis.process.approvals import queries, services

from ... import factories
from ...api.conftest import token_client
from .conftest import deal, define, step

SEOUL = ZoneInfo("Asia/Seoul")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SEOUL)


class _InboxTable(HTMLParser):
    """The body rows of the inbox table as a reader sees them: the text of the request, record,
    step and due cells, whether the row is marked overdue, where its link goes, its due time
    and where its "Approve" button posts."""

    CELLS = ("request", "record", "step", "due")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._in_body = False
        self._cells = 0
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "table" and "approvals-inbox" in found.get("class", ""):
            self._in_body = False
        if tag == "tbody":
            self._in_body = True
        if not self._in_body:
            return
        if tag == "tr":
            self.rows.append({"overdue": "is-overdue" in found.get("class", "")})
            self._cells = 0
        elif tag == "td" and self._cells < len(self.CELLS):
            self._text = []
        elif tag == "br" and self._text is not None:
            self._text.append(" | ")
        elif tag == "a" and "link" not in self.rows[-1]:
            self.rows[-1]["link"] = found["href"]
        elif tag == "time":
            self.rows[-1]["due_at"] = found["datetime"]
        elif tag == "button" and found.get("formaction", "").endswith("/approve/"):
            self.rows[-1]["approve"] = found["formaction"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._in_body:
            if self._text is not None:
                self.rows[-1][self.CELLS[self._cells]] = " ".join("".join(self._text).split())
                self._text = None
            self._cells += 1

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def inbox_page(user, language: str = "en") -> tuple[str, list[dict]]:
    client = Client()
    client.force_login(user)
    page = client.get("/approvals/", HTTP_ACCEPT_LANGUAGE=language)
    assert page.status_code == 200
    text = page.content.decode()
    table = _InboxTable()
    table.feed(text)
    return text, table.rows


@pytest.fixture
def waiting(people, clock):
    """Three requests waiting for the boss: a lead whose step has no timeout, and two deals
    due at 11:00 and 11:30; a fourth, due at 11:30, goes to the director standing in for the
    boss. It is 11:10 now: the step due at 11:00 is late."""
    p = people
    define(p["admin"], name_ko="대형 거래 승인", steps=[step(timeout_hours=1)])
    services.save_process(
        p["admin"],
        {
            "object_type": "lead",
            "code": "lead-check",
            "name": "Lead check",
            "steps": [step("Qualify")],
        },
    )
    lead = factories.lead(p["seller"], name="Minji's inquiry")
    no_due = services.submit(p["seller"], "lead", lead.pk)
    sooner = services.submit(p["seller"], "opportunity", deal(p["seller"], name="Hanbit").pk)
    clock.move_to(at(2026, 3, 3, 10, 30), tick=False)
    later = services.submit(p["seller"], "opportunity", deal(p["seller"], name="Daehan").pk)
    services.set_delegation(
        p["boss"], p["director"].pk, at(2026, 3, 3, 10, 30), at(2026, 3, 4, 18, 0)
    )
    delegated = services.submit(p["seller"], "opportunity", deal(p["seller"], name="Gangnam").pk)
    clock.move_to(at(2026, 3, 3, 11, 10), tick=False)
    return {"sooner": sooner, "later": later, "no_due": no_due, "delegated": delegated}


def test_the_page_shows_the_waiting_steps_soonest_due_first_with_overdue_marks(people, waiting):
    sooner, later, no_due = waiting["sooner"], waiting["later"], waiting["no_due"]
    text, rows = inbox_page(people["boss"])

    assert "3 wait for your decision" in text and "1 overdue" in text
    shown = [(row["request"], row["record"], row["step"]) for row in rows]
    assert shown == [
        (f"Big deal approval #{sooner.pk} | Seo", "Hanbit", "Manager"),
        (f"Big deal approval #{later.pk} | Seo", "Daehan", "Manager"),
        (f"Lead check #{no_due.pk} | Seo", "Minji's inquiry", "Qualify"),
    ]
    assert [row["overdue"] for row in rows] == [True, False, False]
    assert [row["due"].endswith(" overdue") for row in rows] == [True, False, False]
    assert [row.get("due_at") for row in rows] == [
        at(2026, 3, 3, 11, 0).isoformat(),
        at(2026, 3, 3, 11, 30).isoformat(),
        None,
    ]
    assert rows[2]["due"] == "—"
    assert [row["link"] for row in rows] == [
        f"/approvals/requests/{r.pk}/" for r in (sooner, later, no_due)
    ]
    assert [row["approve"] for row in rows] == [
        f"/approvals/requests/{r.pk}/approve/" for r in (sooner, later, no_due)
    ]


def test_the_api_shows_the_same_rows_in_the_same_order(people, waiting):
    sooner, later, no_due = waiting["sooner"], waiting["later"], waiting["no_due"]
    inbox = token_client(people["boss"]).get("approvals/inbox").json()

    assert (inbox["waiting"], inbox["overdue"], inbox["counts_capped_at"]) == (3, 1, 1000)
    record_of = {r.pk: r.object_id for r in (sooner, later, no_due)}
    assert inbox["items"] == [
        {
            "request_id": sooner.pk,
            "process": "Big deal approval",
            "object_type": "opportunity",
            "object_id": record_of[sooner.pk],
            "record": "Hanbit",
            "step": "Manager",
            "due_at": "2026-03-03T02:00:00+00:00",
            "overdue": True,
            "on_behalf_of_id": None,
        },
        {
            "request_id": later.pk,
            "process": "Big deal approval",
            "object_type": "opportunity",
            "object_id": record_of[later.pk],
            "record": "Daehan",
            "step": "Manager",
            "due_at": "2026-03-03T02:30:00+00:00",
            "overdue": False,
            "on_behalf_of_id": None,
        },
        {
            "request_id": no_due.pk,
            "process": "Lead check",
            "object_type": "lead",
            "object_id": record_of[no_due.pk],
            "record": "Minji's inquiry",
            "step": "Qualify",
            "due_at": None,
            "overdue": False,
            "on_behalf_of_id": None,
        },
    ]


def test_a_delegate_sees_for_whom_they_decide(people, waiting):
    delegated = waiting["delegated"]
    text, [row] = inbox_page(people["director"])
    # Nothing of the director's is late: no overdue count after the waiting one.
    assert "1 waits for your decision</p>" in text
    assert row["request"] == f"Big deal approval #{delegated.pk} | Seo | for Bora"
    assert (row["record"], row["overdue"]) == ("Gangnam", False)

    [item] = token_client(people["director"]).get("approvals/inbox").json()["items"]
    assert (item["request_id"], item["on_behalf_of_id"]) == (delegated.pk, people["boss"].pk)
    assert (item["record"], item["overdue"]) == ("Gangnam", False)


def test_a_korean_reader_sees_the_process_by_its_korean_name(people, waiting):
    # A Korean name is written family name first, without a space.
    User.objects.filter(pk=people["seller"].pk).update(first_name="서연", last_name="최")
    _text, rows = inbox_page(people["boss"], language="ko")
    assert [row["request"].split(" #")[0] for row in rows] == [
        "대형 거래 승인",
        "대형 거래 승인",
        "Lead check",
    ]
    assert {row["request"].split(" | ")[1] for row in rows} == {"최서연"}


def test_an_empty_inbox_says_so(people):
    text, rows = inbox_page(people["boss"])
    assert rows == [] and "Nothing waits for your approval." in text
    inbox = token_client(people["boss"]).get("approvals/inbox").json()
    assert (inbox["waiting"], inbox["overdue"], inbox["items"]) == (0, 0, [])


def test_the_inbox_reads_as_many_queries_for_many_rows_as_for_one(people, clock):
    p = people
    define(p["admin"], steps=[step(timeout_hours=1)])
    services.submit(p["seller"], "opportunity", deal(p["seller"]).pk)
    queries.inbox(p["boss"])  # the content type, cached once per process
    with CaptureQueriesContext(connection) as one:
        assert len(queries.inbox(p["boss"])) == 1
    for _n in range(5):
        other = factories.user("sales", username=f"seller-{_n}", manager=p["boss"])
        services.submit(other, "opportunity", deal(other).pk)
    with CaptureQueriesContext(connection) as six:
        assert len(queries.inbox(p["boss"])) == 6
    # The page, the processes, the people, the deals.
    assert len(one.captured_queries) == len(six.captured_queries) == 4
