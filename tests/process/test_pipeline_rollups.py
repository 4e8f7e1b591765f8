"""The daily sums the funnel and time-in-stage reports read: kept by every move, equal to what a
rebuild from the stage changes gives, exact under moves at the same moment, and right at the
edges of a local day."""

import datetime as dt
import io
import random
import threading

from django.core.management import call_command

from tests import factories
from trellis.core.models import Role, User
from trellis.crm import services as crm
from trellis.crm.models import Opportunity
from trellis.process.pipelines import reports, rollups, services
from trellis.process.pipelines.models import Pipeline, Stage, StageDay, StageDwellBucket

from ..concurrency import OwnConnections

START = dt.datetime(2026, 1, 5, 0, 30, tzinfo=dt.UTC)  # a Monday, 09:30 in Seoul


def sums() -> tuple[dict, dict]:
    """Every rollup row, keyed by its unique key; rows that sum to nothing left out."""
    days = {
        (r.stage_id, r.day, r.owner_pk): (r.entered, r.converted, round(r.dwell_max, 3))
        for r in StageDay.objects.all()
        if r.entered or r.converted or r.dwell_max
    }
    buckets = {
        (r.stage_id, r.day, r.owner_pk, r.bucket): (r.count, round(r.dwell_sum, 3))
        for r in StageDwellBucket.objects.all()
        if r.count
    }
    return days, buckets


def move(actor, deal, stage: Stage) -> None:
    deal.refresh_from_db()
    services.move(actor, "opportunity", deal.pk, stage.pk, version=deal.version, confirm=True)


def test_the_sums_kept_by_moves_equal_a_rebuild_from_the_stage_changes(
    time_machine, sales, other_sales, admin
):
    """Two hundred moves, forward, back, to won and lost, across owners and local midnights,
    at uneven hours over six weeks: what the moves added equals what a rebuild computes."""
    rng = random.Random(7)
    pipeline = Pipeline.objects.get(code="b2b-sales")
    stages = list(pipeline.stages.filter(is_active=True).order_by("order"))
    now = START
    time_machine.move_to(now, tick=False)
    deals = [factories.opportunity(rng.choice([sales, other_sales])) for _ in range(12)]
    moves = 0
    for _step in range(200):
        now += dt.timedelta(hours=rng.uniform(0.2, 6))
        time_machine.move_to(now, tick=False)
        deal = rng.choice(deals)
        deal.refresh_from_db()
        if rng.random() < 0.1:
            # A change of owner between moves: later moves count under the new owner.
            owner = sales if deal.owner_id == other_sales.pk else other_sales
            crm.update(admin, "opportunity", deal.pk, {"owner_id": owner.pk}, deal.version)
            continue
        move(admin, deal, rng.choice([s for s in stages if s.pk != deal.stage_id]))
        moves += 1
    kept = sums()
    assert moves > 150
    assert sum(entered for entered, _c, _m in kept[0].values()) == 12 + moves
    assert sum(converted for _e, converted, _m in kept[0].values()) > 0

    assert rollups.rebuild() == 12 + moves
    assert sums() == kept


def test_the_rebuild_command_restores_sums_that_were_lost(time_machine, sales):
    time_machine.move_to(START, tick=False)
    deal = factories.opportunity(sales)
    time_machine.move_to(START + dt.timedelta(days=3), tick=False)
    move(sales, deal, Stage.objects.get(pipeline__code="b2b-sales", code="needs-analysis"))
    kept = sums()
    StageDay.objects.all().delete()
    StageDwellBucket.objects.all().delete()

    call_command("rebuild_pipeline_rollups", stdout=io.StringIO())

    assert sums() == kept
    [(stage, day, owner, _bucket)] = kept[1]
    assert (day, owner) == (dt.date(2026, 1, 8), sales.pk)
    assert kept[1][stage, day, owner, _bucket] == (1, 3 * 86400.0)


def test_a_move_counts_under_the_local_day_of_the_server(time_machine, sales, admin):
    """23:59 and 00:01 in Seoul are two days, whatever the date in UTC says."""
    pipeline = Pipeline.objects.get(code="b2b-sales")
    late = dt.datetime(2026, 1, 6, 14, 59, tzinfo=dt.UTC)  # 23:59 on 6 January in Seoul
    time_machine.move_to(late, tick=False)
    factories.opportunity(sales)
    time_machine.move_to(late + dt.timedelta(minutes=2), tick=False)  # 00:01 on 7 January
    factories.opportunity(sales)
    entered = {
        (row.stage.code, row.day): row.entered
        for row in StageDay.objects.select_related("stage").filter(entered__gt=0)
    }
    assert entered == {
        ("prospecting", dt.date(2026, 1, 6)): 1,
        ("prospecting", dt.date(2026, 1, 7)): 1,
    }
    january_6 = reports.funnel(admin, pipeline, dt.date(2026, 1, 6), dt.date(2026, 1, 7), "week")
    assert [(r.stage.code, r.entered) for r in january_6.stages if r.entered] == [
        ("prospecting", 1)
    ]


def test_moves_at_the_same_moment_are_all_counted(transactional_db):
    """Two salespeople move their deals into the same stage on the same day at once: both
    entries land on the same rollup rows, and neither is lost."""
    admin = factories.user(Role.ADMIN, username="boss")
    seller = factories.user(Role.SALES, username="seller")
    # Its own pipeline: the default ones come from a data migration that an earlier test with
    # real transactions may have flushed away.
    pipeline = services.save_pipeline(
        admin,
        {
            "object_type": "opportunity",
            "code": "race",
            "name": "Race",
            "stages": [
                {"code": "first", "name": "First"},
                {"code": "second", "name": "Second"},
                {"code": "won", "name": "Won", "kind": "won"},
            ],
        },
    )
    first, second, _won = pipeline.stages.order_by("order")
    deals = []
    for _ in range(2):
        deal = factories.opportunity(seller)
        Opportunity.objects.filter(pk=deal.pk).update(stage=None)
        deals.append(
            services.move(seller, "opportunity", deal.pk, first.pk, version=deal.version).record
        )
    start = threading.Barrier(2, timeout=30)

    def mover(deal: Opportunity):
        def run():
            actor = User.objects.get(pk=seller.pk)
            start.wait()
            return services.move(actor, "opportunity", deal.pk, second.pk, version=deal.version)

        return run

    outcomes = OwnConnections().run(*(mover(deal) for deal in deals))

    assert all(isinstance(o, services.Move) for o in outcomes), outcomes
    assert [row.entered for row in StageDay.objects.filter(stage=second)] == [2]
    assert [row.converted for row in StageDay.objects.filter(stage=first)] == [2]
    assert [row.count for row in StageDwellBucket.objects.filter(stage=first)] == [2]
