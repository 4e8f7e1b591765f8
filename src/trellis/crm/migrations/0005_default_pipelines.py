"""The pipelines a fresh install ships with, and existing records placed in them.

The definitions are frozen here rather than imported, so that this migration means the same
thing whenever it runs; admins change pipelines afterwards in the UI or the API.
"""

from django.db import migrations

# (code, object type, default?, English name, Korean name, stages)
# stage: (code, English, Korean, kind, probability, max dwell days, expected activities)
PIPELINES = [
    (
        "lead-qualification",
        "lead",
        True,
        "Lead qualification",
        "리드 검증",
        [
            ("new", "New", "신규", "open", 5, 3, [("First contact made", "첫 연락")]),
            ("contacted", "Contacted", "연락 완료", "open", 10, 14, []),
            ("qualifying", "Qualifying", "검증 중", "open", 20, 21,
             [("Budget, authority, need and timing checked", "예산·권한·필요·시기 확인")]),
            ("qualified", "Qualified", "검증 완료", "won", 100, None, []),
            ("disqualified", "Disqualified", "부적격", "lost", 0, None, []),
        ],
    ),
    (
        "b2b-sales",
        "opportunity",
        True,
        "B2B sales",
        "B2B 영업",
        [
            ("prospecting", "Prospecting", "발굴", "open", 10, 30, []),
            ("needs-analysis", "Needs analysis", "요구 분석", "open", 25, 30,
             [("Needs-analysis meeting held", "요구 분석 미팅 완료")]),
            ("proposal", "Proposal", "제안", "open", 50, 21,
             [("Proposal sent", "제안서 발송")]),
            ("negotiation", "Negotiation", "협상", "open", 75, 30,
             [("Terms agreed with the buyer", "구매 담당자와 조건 합의")]),
            ("won", "Closed won", "수주", "won", 100, None, []),
            ("lost", "Closed lost", "실주", "lost", 0, None, []),
        ],
    ),
    (
        "renewal",
        "opportunity",
        False,
        "Renewal",
        "계약 갱신",
        [
            ("due", "Renewal due", "갱신 예정", "open", 60, 60, []),
            ("offer", "Offer sent", "갱신 제안", "open", 75, 30, [("Offer sent", "제안 발송")]),
            ("renewed", "Renewed", "갱신 완료", "won", 100, None, []),
            ("churned", "Not renewed", "갱신 실패", "lost", 0, None, []),
        ],
    ),
    (
        "onboarding",
        "account",
        False,
        "Customer onboarding",
        "고객 온보딩",
        [
            ("kickoff", "Kick-off", "착수", "open", 0, 7, [("Kick-off meeting held", "착수 회의 완료")]),
            ("setup", "Set-up", "구축", "open", 0, 21, []),
            ("training", "Training", "교육", "open", 0, 14, [("Users trained", "사용자 교육 완료")]),
            ("live", "Live", "운영 시작", "won", 0, 14, []),
            ("stopped", "Stopped", "중단", "lost", 0, None, []),
        ],
    ),
]


def create_pipelines(apps, schema_editor):
    Pipeline = apps.get_model("process", "Pipeline")
    Stage = apps.get_model("process", "Stage")
    StageChange = apps.get_model("process", "StageChange")
    ContentType = apps.get_model("contenttypes", "ContentType")
    first_of_kind = {}
    for code, object_type, default, name, name_ko, stages in PIPELINES:
        pipeline, created = Pipeline.objects.get_or_create(
            code=code,
            defaults={
                "object_type": object_type,
                "is_default": default,
                "name": name,
                "name_ko": name_ko,
            },
        )
        if not created:
            continue
        for order, (s_code, s_name, s_ko, kind, probability, dwell, activities) in enumerate(
            stages, start=1
        ):
            stage = Stage.objects.create(
                pipeline=pipeline,
                code=s_code,
                name=s_name,
                name_ko=s_ko,
                order=order,
                kind=kind,
                probability=probability,
                max_dwell_days=dwell,
                expected_activities=[{"en": en, "ko": ko} for en, ko in activities],
            )
            if default:
                first_of_kind.setdefault((object_type, kind), stage)
    # Records already there enter the default pipeline: deals at the first stage of their
    # status, leads at the first stage.
    for model_name in ("opportunity", "lead"):
        model = apps.get_model("crm", model_name)
        content_type, _ = ContentType.objects.get_or_create(app_label="crm", model=model_name)
        changes = []
        for record in model.objects.filter(stage__isnull=True).iterator():
            kind = record.status if model_name == "opportunity" else "open"
            stage = first_of_kind.get((model_name, kind))
            if stage is None:
                continue
            model.objects.filter(pk=record.pk).update(
                stage=stage, stage_entered_at=record.created_at
            )
            deal = model_name == "opportunity"
            changes.append(
                StageChange(
                    pipeline_id=stage.pipeline_id,
                    content_type=content_type,
                    object_id=record.pk,
                    to_stage=stage,
                    direction="entered",
                    at=record.created_at,
                    owner_id=record.owner_id,
                    amount=record.amount if deal else None,
                    currency=record.currency if deal else "",
                    expected_close_date=record.expected_close_date if deal else None,
                    probability=record.probability if deal else None,
                )
            )
        StageChange.objects.bulk_create(changes, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("crm", "0004_pipelines"),
        ("process", "0002_pipelines"),
    ]

    operations = [migrations.RunPython(create_pipelines, migrations.RunPython.noop)]
