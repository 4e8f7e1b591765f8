"""Background work of automations, on the django-tasks queue."""

import json
import urllib.request
from urllib.parse import urlsplit

from django_tasks import task

from trellis.core import clock

TIMEOUT_SECONDS = 10


@task()
def call_webhook(url: str, payload: dict) -> int:
    """POST the record to the rule's address; a failure fails the task, which keeps it to see."""
    if urlsplit(url).scheme not in ("http", "https"):  # checked when the rule was saved, too
        raise ValueError(f"not an http(s) address: {url}")
    body = json.dumps({**payload, "sent_at": clock.now().isoformat()}, default=str).encode()
    request = urllib.request.Request(  # noqa: S310  (the scheme is checked above)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
        return response.status


@task()
def plan_timers(rule_id: int, version: int) -> int:
    """Plan a time rule's timers, as saved at ``version``; a later save plans again itself."""
    from .engine import plan_rule
    from .models import Rule

    rule = Rule.objects.filter(pk=rule_id, version=version).first()
    return plan_rule(rule) if rule is not None else 0
