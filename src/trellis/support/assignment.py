"""Who owns a new case: assignment rules, round robin, least open work, or the team queue."""

from .models import Case


def assign_on_arrival(case: Case) -> None:
    """Set ``case.owner`` / ``case.team`` from the first matching rule (not saved here)."""
