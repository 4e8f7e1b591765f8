"""The system user becomes a superuser: checking its rights then costs no query (it already
held every right through the admin role, and it cannot log in)."""

from django.db import migrations

SYSTEM_USERNAME = "trellis"


def forwards(apps, schema_editor):
    User = apps.get_model("core", "User")
    User.objects.filter(username=SYSTEM_USERNAME).update(is_superuser=True)


class Migration(migrations.Migration):
    dependencies = [("core", "0002_numbersequence_ratecounter")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=True)]
