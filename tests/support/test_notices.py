"""Agents hear of what needs them in their notifications inbox."""

import pytest
from django.conf import settings

from trellis.core import events
from trellis.mail import inbound
from trellis.process.models import Notification
from trellis.support import intake, services
from trellis.support.models import Case

from ..mail.conftest import build
from .conftest import CUSTOMER


@pytest.fixture
def owned_case(agent, open_web_case, django_capture_on_commit_callbacks):
    case, _key = open_web_case()
    with django_capture_on_commit_callbacks(execute=True):
        services.claim(agent, case.pk)
    return Case.objects.get(pk=case.pk)


def notices(user) -> list[Notification]:
    return list(Notification.objects.filter(user=user).order_by("id"))


def test_the_owner_hears_that_the_customer_wrote(
    agent, owned_case, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        intake.customer_reply(owned_case, body="Here is the log.", via=Case.Channel.WEB)

    [notice] = notices(agent)
    assert owned_case.tracking_number in notice.text
    assert "the customer wrote" in notice.text
    assert notice.link.startswith(f"/cases/{owned_case.pk}/#event-")
    assert notice.read_at is None


def test_a_message_from_someone_else_is_flagged_to_the_owner(
    agent, owned_case, mail_in, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        mail_in(
            f"Re: [{owned_case.tracking_number}] Export fails",
            text="I am her colleague.",
            sender="colleague@example.co.kr",
        )

    [notice] = notices(agent)
    assert "someone other than the customer wrote" in notice.text


def test_a_case_in_the_queue_tells_nobody(open_web_case, django_capture_on_commit_callbacks):
    case, _key = open_web_case()
    with django_capture_on_commit_callbacks(execute=True):
        intake.customer_reply(case, body="Anyone?", via=Case.Channel.WEB)

    assert not Notification.objects.exists()


def test_the_agent_hears_that_their_reply_could_not_be_delivered(
    agent, owned_case, smtp_sink, django_capture_on_commit_callbacks
):
    smtp_sink.reject_with = "550 5.1.1 No such user"
    with django_capture_on_commit_callbacks(execute=True):
        services.reply(agent, owned_case.pk, "Please try the new version.")

    [notice] = notices(agent)
    assert "could not be delivered" in notice.text
    assert CUSTOMER in notice.text
    assert "550" in notice.text


def test_replies_processed_in_one_batch_tell_each_owner_once_per_message(
    agent, owned_case, open_web_case, django_capture_on_commit_callbacks
):
    queued, _key = open_web_case(requester_email="lee@example.co.kr")
    support = settings.TRELLIS["MAIL"]["SUPPORT_ADDRESS"]
    raws = [
        build(f"Re: [{owned_case.tracking_number}] Export", sender=CUSTOMER, to=support),
        build(f"Re: [{queued.tracking_number}] Export", sender="lee@example.co.kr", to=support),
        build(f"Re: [{owned_case.tracking_number}] Export", sender="park@else.com", to=support),
        build(f"Re: [{owned_case.tracking_number}] Again", sender=CUSTOMER, to=support),
    ]
    ids = [inbound.store(raw, envelope_from="", recipients=[support]).pk for raw in raws]

    # The test's transaction never commits: its callbacks run at the end of the capture, and
    # are dispatched together, as the commit of the batch's own transaction would be.
    with events.dispatched_together(), django_capture_on_commit_callbacks(execute=True):
        inbound.process_batch(ids)

    texts = [notice.text for notice in notices(agent)]
    # The case in the queue tells nobody; the owner hears of each message on theirs, in order.
    assert len(texts) == 3
    assert all(owned_case.tracking_number in text for text in texts)
    assert ["someone other" in text for text in texts] == [False, True, False]
    assert Notification.objects.count() == 3
