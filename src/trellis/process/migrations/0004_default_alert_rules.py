"""Alert rules for the pipelines a fresh install ships with.

Frozen here rather than imported, so that this migration means the same thing whenever it runs;
admins change the rules afterwards in the UI or the API. A pipeline that is not there (renamed
or removed before this ran) gets none. The rules' timers are planned by the planning sweep.
"""

from django.db import migrations

# kind -> (threshold, tell the manager too)
SALES = {
    "over_dwell": (0, False),
    "past_close": (0, False),
    "close_pushed": (3, True),
    "stalled": (14, False),
    "no_next_step": (2, False),
    "moved_backward": (1, False),
    "amount_dropped": (20, True),
    "task_overdue": (0, False),
}
RULES = {
    "lead-qualification": {
        "over_dwell": (0, False),
        "stalled": (7, False),
        "no_next_step": (2, False),
        "task_overdue": (0, False),
    },
    "b2b-sales": SALES,
    "renewal": {**SALES, "close_pushed": (2, True), "amount_dropped": (10, True)},
    "onboarding": {
        "over_dwell": (0, True),
        "stalled": (10, False),
        "no_next_step": (2, False),
        "moved_backward": (1, True),
        "task_overdue": (0, False),
    },
}


def create_rules(apps, schema_editor):
    Pipeline = apps.get_model("process", "Pipeline")
    AlertRule = apps.get_model("process", "AlertRule")
    for code, rules in RULES.items():
        pipeline = Pipeline.objects.filter(code=code).first()
        if pipeline is None:
            continue
        for kind, (threshold, manager) in rules.items():
            AlertRule.objects.get_or_create(
                pipeline=pipeline,
                kind=kind,
                defaults={"threshold": threshold, "notify_manager": manager},
            )


class Migration(migrations.Migration):
    dependencies = [
        ("process", "0003_pipeline_alerts"),
        ("crm", "0005_default_pipelines"),
    ]

    operations = [migrations.RunPython(create_rules, migrations.RunPython.noop)]
