"""Indexes for finding the customer of an incoming message.

A sender's contact is looked up case-blind (``email__iexact``), and their account by the
domain of an account's e-mail or web site (``iendswith`` / ``icontains``). Without these, each
incoming message scanned the contact and account tables. The trigram indexes for the domain
are PostgreSQL only, like the search indexes of 0002.
"""

from django.db import migrations, models
from django.db.models.functions import Upper

DOMAIN_COLUMNS = (("crm_account", "email"), ("crm_account", "website"))


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, column in DOMAIN_COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_{column}_trgm "
            f"ON {table} USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, column in DOMAIN_COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS {table}_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("crm", "0002_search_trigram")]

    operations = [
        migrations.RemoveIndex(model_name="contact", name="contact_email"),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(Upper("email"), name="contact_email_ci"),
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
