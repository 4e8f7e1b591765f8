"""Stage histories for demo deals and leads: the moves a record made before today.

A deal walks through the stages of the default sales pipeline from its creation to its close
(or to today while it is open): mostly forward, sometimes back, sometimes skipping a stage,
and ends in the stage its status and probability say. Amounts drift and now and then drop
between moves, as deals do. The rows are written directly, with the times they happened; the
services record moves as they happen now.
"""

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trellis.process.pipelines.models import Pipeline, Stage

# Where an open deal stands, by the probability its owner gave it.
_OPEN_STAGE_BY_PROBABILITY = [(10, 0), (30, 1), (60, 2), (100, 3)]
_LEAD_STAGE_BY_STATUS = {
    "new": "new",
    "contacted": "contacted",
    "qualified": "qualifying",
    "unqualified": "disqualified",
    "converted": "qualified",
}


@dataclass
class Path:
    """The stages a record went through and when it entered each, oldest first."""

    stages: list[Stage]
    times: list[dt.datetime]
    amounts: list[Decimal | None]


class StageHistories:
    def __init__(self, rng: random.Random, moves_per_deal: float = 0) -> None:
        self.rng = rng
        # An average number of moves per deal to aim at (0: as the walk comes out, about 4).
        self.moves_per_deal = moves_per_deal
        sales = Pipeline.objects.get(object_type="opportunity", is_default=True)
        stages = list(sales.stages.filter(is_active=True).order_by("order"))
        self.open = [s for s in stages if s.kind == Stage.Kind.OPEN]
        self.closed = {s.kind: s for s in stages if s.kind != Stage.Kind.OPEN}
        leads = Pipeline.objects.filter(object_type="lead", is_default=True).first()
        self.lead_stages = {s.code: s for s in leads.stages.all()} if leads else {}

    def deal(self, row: dict[str, Any], now: dt.datetime) -> Path:
        """A path for a deal row (its status, probability, amount, dates); sets the row's
        stage fields and its probability to the stage's."""
        rng = self.rng
        if row["status"] == "open":
            last = next(i for limit, i in _OPEN_STAGE_BY_PROBABILITY if row["probability"] <= limit)
            last = min(last, len(self.open) - 1)
            final = None
        else:
            last = rng.randrange(len(self.open)) if row["status"] == "lost" else len(self.open) - 1
            final = self.closed[row["status"]]
        walk = [0]
        while walk[-1] < last:
            step = 2 if rng.random() < 0.15 else 1
            walk.append(min(last, walk[-1] + step))
            if rng.random() < 0.12 and walk[-1] > 1:
                walk.append(walk[-1] - 1)  # back a stage, as when the buyer changes his mind
        # More history where asked for: a step aside and back again, anywhere on the walk.
        extra = self.moves_per_deal - len(walk) - (1 if final else 0) if self.moves_per_deal else 0
        while extra >= 2:
            at = rng.randrange(len(walk))
            here = walk[at]
            walk[at + 1 : at + 1] = [here - 1 if here else 1, here]
            extra -= 2
        stages = [self.open[i] for i in walk] + ([final] if final else [])
        start = row["created_at"]
        close = dt.datetime.combine(row["expected_close_date"], dt.time(17), tzinfo=now.tzinfo)
        end = min(now, close) if final else now
        end = max(end, start + dt.timedelta(hours=len(stages)))
        span = (end - start).total_seconds()
        offsets = sorted(rng.random() * span for _ in stages[1:])
        times = [start] + [start + dt.timedelta(seconds=o) for o in offsets]
        amount = row["amount"]
        amounts: list[Decimal | None] = [amount] * len(stages)
        # Now and then a deal was bigger before it was cut down.
        if len(stages) > 2 and rng.random() < 0.2:
            cut = rng.randrange(1, len(stages))
            for i in range(cut):
                amounts[i] = (amount * Decimal(rng.choice(["1.1", "1.25", "1.5"]))).quantize(
                    Decimal(1)
                )
        row["stage_id"] = stages[-1].pk
        row["stage_entered_at"] = times[-1]
        row["probability"] = stages[-1].probability
        return Path(stages, times, amounts)

    def lead(self, row: dict[str, Any]) -> Path | None:
        stage = self.lead_stages.get(_LEAD_STAGE_BY_STATUS.get(row["status"], "new"))
        if stage is None:
            return None
        row["stage_id"] = stage.pk
        row["stage_entered_at"] = row["created_at"]
        return Path([stage], [row["created_at"]], [None])

    @staticmethod
    def rows(
        path: Path, content_type_id: int, object_id: int, row: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The StageChange rows of one record's path, as column values."""
        changes = []
        previous = None
        for stage, at, amount in zip(path.stages, path.times, path.amounts, strict=True):
            if previous is None:
                direction = "entered"
            else:
                direction = "forward" if stage.order > previous[0].order else "backward"
            changes.append(
                {
                    "pipeline_id": stage.pipeline_id,
                    "content_type_id": content_type_id,
                    "object_id": object_id,
                    "from_stage_id": previous[0].pk if previous else None,
                    "to_stage_id": stage.pk,
                    "direction": direction,
                    "at": at,
                    "from_entered_at": previous[1] if previous else None,
                    "actor_id": row["owner_id"],
                    "owner_id": row["owner_id"],
                    "amount": amount,
                    "currency": row.get("currency", "") if amount is not None else "",
                    "expected_close_date": row.get("expected_close_date"),
                    "probability": stage.probability if amount is not None else None,
                }
            )
            previous = (stage, at)
        return changes
