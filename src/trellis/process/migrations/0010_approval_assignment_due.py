from django.db import migrations, models
from django.db.models import F, OuterRef, Subquery


def copy_due_times(apps, schema_editor):
    Assignment = apps.get_model("process", "ApprovalAssignment")
    StepRun = apps.get_model("process", "ApprovalStepRun")
    # The inbox no longer looks at the step run's status: a waiting assignment of a step that
    # has ended (the engine never leaves one) would otherwise show up in it.
    Assignment.objects.filter(status="pending").exclude(step_run__status="pending").update(
        status="closed"
    )
    Assignment.objects.filter(step_run__due_at__isnull=False).update(
        due_at=Subquery(StepRun.objects.filter(pk=OuterRef("step_run_id")).values("due_at")[:1])
    )
    # Until now the approvers were told in the transaction that asked them.
    Assignment.objects.update(told_at=F("created_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('process', '0009_approval_comments'),
    ]

    operations = [
        migrations.AddField(
            model_name='approvalassignment',
            name='due_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='approvalassignment',
            name='told_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(copy_due_times, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name='approvalassignment',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['user', 'due_at', 'id'], name='approval_inbox_due'),
        ),
        migrations.AddIndex(
            model_name='approvalassignment',
            index=models.Index(condition=models.Q(('status', 'pending'), ('told_at__isnull', True)), fields=['created_at'], name='approval_untold'),
        ),
    ]
