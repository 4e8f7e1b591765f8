"""A known sales history for the pipeline report tests (pages, API and queries).

Seven deals in the B2B sales pipeline, moved by their owners on a clock that the builder moves,
all at 09:00 Seoul time. Day 0 is Monday 2 March 2026; the reports look at March and April
2026 (days -1 to 59) and are read on day 70 (11 May).

    deal  owner        amount            history (day: stage)
    A     sales        10,000,000 KRW    0 prospecting, 10 needs-analysis, 20 proposal,
                                         25 amount to 8,000,000, 50 back to needs-analysis
    B     sales        20,000,000 KRW    0 prospecting (probability 40 by hand),
                                         4 needs-analysis, 44 proposal
    C     other_sales  30,000,000 KRW    7 prospecting, 17 proposal, 57 negotiation, 60 won
    D     other_sales   4,000,000 KRW    7 prospecting, 14 lost
    E     outsider     50,000,000 KRW    30 prospecting, 35 needs-analysis, 40 back to prospecting
    F     sales         7,000,000 KRW    -20 prospecting, -10 amount to 6,000,000,
                                         5 needs-analysis
    G     other_sales       5,000.50 USD 60 prospecting
"""

import datetime as dt
from decimal import Decimal

from tests import factories
from trellis.crm import services as crm
from trellis.process.pipelines import services
from trellis.process.pipelines.models import Pipeline, Stage

DAY0 = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
NOW = DAY0 + dt.timedelta(days=70)
FIRST_DAY = dt.date(2026, 3, 1)
LAST_DAY = dt.date(2026, 4, 30)


def day(n: float) -> dt.datetime:
    return DAY0 + dt.timedelta(days=n)


def sales_pipeline() -> Pipeline:
    return Pipeline.objects.get(code="b2b-sales")


def stage(code: str) -> Stage:
    return Stage.objects.get(pipeline__code="b2b-sales", code=code)


def _move(actor, deal, code: str) -> None:
    deal.refresh_from_db()
    services.move(actor, "opportunity", deal.pk, stage(code).pk, version=deal.version, confirm=True)


def _amount(actor, deal, amount: Decimal) -> None:
    deal.refresh_from_db()
    crm.update(actor, "opportunity", deal.pk, {"amount": amount}, version=deal.version)


def build(clock, sales, other_sales, outsider) -> dict:
    """Make the history with ``clock`` (pytest's ``time_machine`` fixture), which is left
    standing at ``NOW``. Returns the deals by letter."""
    deals: dict = {}

    def new(letter: str, owner, amount: str, **data) -> None:
        deals[letter] = factories.opportunity(owner, amount=Decimal(amount), **data)

    steps = [
        (-20, lambda: new("F", sales, "7000000")),
        (-10, lambda: _amount(sales, deals["F"], Decimal(6_000_000))),
        (0, lambda: new("A", sales, "10000000")),
        (0, lambda: new("B", sales, "20000000", probability=40)),
        (4, lambda: _move(sales, deals["B"], "needs-analysis")),
        (5, lambda: _move(sales, deals["F"], "needs-analysis")),
        (7, lambda: new("C", other_sales, "30000000")),
        (7, lambda: new("D", other_sales, "4000000")),
        (10, lambda: _move(sales, deals["A"], "needs-analysis")),
        (14, lambda: _move(other_sales, deals["D"], "lost")),
        (17, lambda: _move(other_sales, deals["C"], "proposal")),
        (20, lambda: _move(sales, deals["A"], "proposal")),
        (25, lambda: _amount(sales, deals["A"], Decimal(8_000_000))),
        (30, lambda: new("E", outsider, "50000000")),
        (35, lambda: _move(outsider, deals["E"], "needs-analysis")),
        (40, lambda: _move(outsider, deals["E"], "prospecting")),
        (44, lambda: _move(sales, deals["B"], "proposal")),
        (50, lambda: _move(sales, deals["A"], "needs-analysis")),
        (57, lambda: _move(other_sales, deals["C"], "negotiation")),
        (60, lambda: _move(other_sales, deals["C"], "won")),
        (60, lambda: new("G", other_sales, "5000.50", currency="USD")),
    ]
    for offset, step in steps:
        clock.move_to(day(offset), tick=False)
        step()
    clock.move_to(NOW, tick=False)
    return deals
