"""Task threads in the Django admin: task types are edited there, tasks and links only read."""

import pytest
from django.urls import reverse

from trellis.process.models import ExternalLink, Task, TaskType

from .. import factories
from .conftest import PARTNER, new_task


@pytest.fixture
def site(client, db):
    client.force_login(
        factories.UserFactory(
            username="root", role=None, team=None, is_staff=True, is_superuser=True
        )
    )
    return client


def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_task_types_are_configured_in_the_admin(site):
    answer = site.post(
        admin_url(TaskType, "add"),
        {
            "code": "review",
            "name": "Review",
            "name_ko": "검토",
            "requires_next_step": "on",
            "is_active": "on",
        },
    )
    assert answer.status_code == 302
    review = TaskType.objects.get(code="review")
    assert (review.name_ko, review.requires_next_step, review.is_active) == ("검토", True, True)
    assert site.get(admin_url(TaskType, "changelist")).status_code == 200


def test_tasks_and_links_are_only_read_there(site, people):
    task = new_task(people["ana"], title="Check the contract", external_email=PARTNER)
    listed = site.get(admin_url(Task, "changelist"))
    assert listed.status_code == 200 and "Check the contract" in listed.text
    page = site.get(admin_url(Task, "change", task.pk))
    assert page.status_code == 200 and 'name="title"' not in page.text
    assert site.post(admin_url(Task, "change", task.pk), {"title": "x"}).status_code == 403
    [link] = ExternalLink.objects.filter(task=task)
    page = site.get(admin_url(ExternalLink, "change", link.pk))
    assert page.status_code == 200 and link.token_hash not in page.text
