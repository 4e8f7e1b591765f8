"""Replies to task e-mail: the reply becomes a comment, and "done" / "완료" completes the task.

The mail layer routes a message to ``handle_reply`` by the task's reply address (the Reply-To
of every task e-mail) or by In-Reply-To / References, never by the subject. A reply counts when
it comes from the task's external participant or from a user who may work on the task; its
first line, if it is one of ``COMPLETION_WORDS`` (any letter case, trailing punctuation
ignored), completes the task. When completing is not possible (the task's type asks for the
next step; a queue task not claimed), the comment is kept and the sender is told why.

A reply that the task does not take (from a stranger, to a task that is done or cancelled) is
refused: the handler raises, and the mail layer keeps the message in its quarantine with the
reason, for an admin to file or dismiss. The mail layer also rolls back what the handler wrote,
so the answer to the sender is sent by a sweep (``answer_refused``), once per message; it also
answers mail to a reply address of a task that does not exist. A message an admin files into a
task by hand, or runs again, joins the task as an internal comment whoever sent it.
"""

import re
from collections.abc import Callable

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Max
from django.utils.translation import gettext as _

from trellis.core import ratelimit, sweep
from trellis.core.errors import Conflict, ServiceError, ValidationFailed
from trellis.core.models import SYSTEM_USERNAME, User
from trellis.core.services import system_user
from trellis.core.visibility import can
from trellis.mail import parsing, routing
from trellis.mail.inbound import lock_skip_locked
from trellis.mail.models import InboundMessage
from trellis.mail.parsing import ParsedMessage, Unparseable

from . import notify, queries, services
from .models import RefusedReply, Task, TaskEvent

COMPLETION_WORDS = frozenset({"done", "complete", "completed", "완료", "완료했습니다", "끝"})
_TRAILING = " \t.!?~,;:。！？…·"
MAX_BODY = services.MAX_TEXT
# How far below the newest message it has checked the refusal sweep looks again: a message
# processed late (after a newer one) is still found.
_LOOK_BACK = 10_000
# Answers to one sender in an hour at most; a forged sender must not turn us into a spammer.
_ANSWERS_PER_SENDER = (5, 3600)
_REFERENCE = re.compile(r"^\s*(?:task|업무)\s*[-#:]?\s*(\d{1,18})\s*$", re.IGNORECASE)


class ReplyRefused(Conflict):
    """The task does not take this reply; the mail layer quarantines it with this reason."""


# Other records of the engine whose refused replies this sweep answers too (approval requests):
# ``answer(record, sender, message, parsed)`` sends the answer, or returns None.
RefusalAnswer = Callable[[models.Model, str, InboundMessage, ParsedMessage], models.Model | None]
_refusal_answers: dict[type[models.Model], RefusalAnswer] = {}


def register_refusal_answer(model: type[models.Model], answer: RefusalAnswer) -> None:
    _refusal_answers[model] = answer


def is_completion(text: str) -> bool:
    """Whether the first line that is not empty is a completion word."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line.rstrip(_TRAILING).casefold() in COMPLETION_WORDS
    return False


def resolve_reference(text: str) -> Task | None:
    """For the mail layer's quarantine: the task "task 42" (or "업무 42") names."""
    match = _REFERENCE.match(text or "")
    return Task.objects.filter(pk=int(match.group(1))).first() if match else None


def _sender(parsed: ParsedMessage) -> str:
    return (parsed.from_address or "").strip().lower()


def acting_user(task: Task, sender: str) -> User | None:
    """An active user with this address who may work on the task and sees it."""
    if not sender:
        return None
    for user in (
        User.objects.filter(email__iexact=sender, is_active=True)
        .exclude(username=SYSTEM_USERNAME)
        .order_by("pk")
    ):
        if can(user, "edit", "task") and (queries.visible_tasks(user).filter(pk=task.pk).exists()):
            return user
    return None


def refusal(task: Task, sender: str) -> str:
    """Why ``task`` does not take a reply from ``sender``; "" when it does."""
    if not sender:
        return _("The message has no readable From address.")
    if task.is_closed:
        return _("The task “%(title)s” is %(status)s and takes no more replies.") % {
            "title": task.title,
            "status": Task.Status(task.status).label,
        }
    if task.assignee_kind == Task.Assignee.EXTERNAL and sender == task.external_email:
        return ""
    if acting_user(task, sender) is None:
        return _("%(sender)s is not a participant of the task “%(title)s”.") % {
            "sender": sender,
            "title": task.title,
        }
    return ""


def handle_reply(task: Task, inbound: InboundMessage, parsed: ParsedMessage) -> Task:
    sender = _sender(parsed)
    # A message no longer "received" is being filed into the task, or run again, by an admin.
    by_admin = inbound.status != InboundMessage.Status.RECEIVED
    if not by_admin:
        reason = refusal(task, sender)
        if reason:
            raise ReplyRefused(reason)
    body = (parsed.text or "").strip()[:MAX_BODY] or parsed.subject or "-"
    with transaction.atomic():
        task = services.lock_unchecked(task.pk)
        external = task.assignee_kind == Task.Assignee.EXTERNAL and sender == task.external_email
        user = None if external else acting_user(task, sender)
        data = {"from": sender, "subject": parsing.one_line(parsed.subject)[:300]}
        if by_admin and not external and user is None:
            data["filed"] = True
        event = services.comment_locked(
            task,
            actor=user,
            body=body,
            public=external,
            external_email=sender if user is None else "",
            kind=TaskEvent.Kind.MAIL_REPLY,
            inbound=inbound,
            data=data,
        )
        services.save_attachments(
            task,
            event,
            parsed.attachments,
            public=external,
            uploaded_by=user,
            uploaded_by_email=sender if user is None else "",
        )
        if not by_admin and (external or user is not None) and is_completion(body):
            _complete_by_mail(task, user, sender, parsed)
    return task


def _complete_by_mail(task: Task, user: User | None, sender: str, parsed: ParsedMessage) -> None:
    """Complete the task for the sender; if it cannot be, tell them why (the comment stays)."""
    try:
        with transaction.atomic():
            if user is not None and task.assignee_kind == Task.Assignee.TEAM:
                raise Conflict(_("This task waits in a team's queue; claim it first."))
            services.complete_locked(
                task,
                actor=user or system_user(),
                by=str(user) if user else (task.external_name or sender),
                next_step=None,
                thread_finished=False,
                note="",
                external_email="" if user else sender,
            )
    except ServiceError as refused:
        reason = (
            " ".join(str(m) for messages in refused.errors.values() for m in messages)
            if isinstance(refused, ValidationFailed)
            else str(refused.detail)
        )
        language = task.language if user is None else notify.language_of(user)
        notify.completion_refused(
            sender,
            task,
            reason,
            external=user is None,
            language=language,
            in_reply_to=parsed.message_id,
        )


# Answers to refused replies, after the mail layer has quarantined them.


def answer_refused(limit: int = 50) -> int:
    """Answer the senders of quarantined replies to tasks; returns how many were answered.

    Each quarantined message is looked at once (a ``RefusedReply`` row); its row lock keeps
    two sweeps off the same message.
    """
    newest = RefusedReply.objects.aggregate(newest=Max("inbound_id"))["newest"] or 0
    candidates = (
        InboundMessage.objects.filter(
            status=InboundMessage.Status.QUARANTINED, pk__gt=newest - _LOOK_BACK
        )
        .exclude(
            pk__in=RefusedReply.objects.filter(inbound_id__gt=newest - _LOOK_BACK).values("pk")
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    answered = 0
    for pk in list(candidates):
        with transaction.atomic():
            message = lock_skip_locked(
                InboundMessage.objects.filter(pk=pk, status=InboundMessage.Status.QUARANTINED)
            ).first()
            if message is None or RefusedReply.objects.filter(inbound_id=pk).exists():
                continue
            answer = _answer(message)
            RefusedReply.objects.create(inbound=message, answer=answer)
            answered += answer is not None
    return answered


sweep.register("task-refused-replies", answer_refused)


def _answer(message: InboundMessage) -> models.Model | None:
    """The answer to a quarantined message that a task refused, if it is one."""
    try:
        parsed = parsing.parse(bytes(message.raw))
    except Unparseable:
        return None
    sender = _sender(parsed)
    if not sender or parsed.automated or services.is_ours(sender):
        return None
    route = routing.route(message, parsed)
    answer = _refusal_answers.get(type(route.record))
    if route.record is not None and answer is not None:
        return answer(route.record, sender, message, parsed)
    if isinstance(route.record, Task):
        reason = refusal(route.record, sender)
    elif route.record is None and _to_missing_task([*message.recipients, *parsed.to, *parsed.cc]):
        reason = _("There is no task with the address you wrote to.")
    else:
        return None
    if not reason or not ratelimit.hit(f"task-answer:{sender}", *_ANSWERS_PER_SENDER):
        return None
    return notify.reply_refused(
        sender,
        reason,
        parsed.subject,
        language=parsed.language,
        record=message,
        in_reply_to=parsed.message_id,
    )


def _to_missing_task(addresses: list[str]) -> bool:
    """Whether one of ``addresses`` is a genuine reply address of a task that does not exist."""
    task_type = ContentType.objects.get_for_model(Task).pk
    for address in addresses:
        local = address.strip().lower().partition("@")[0]
        parts = local.rpartition("+")[2].split("-")
        if len(parts) != 3 or parts[0] != str(task_type) or not parts[1].isdigit():
            continue
        task_id = int(parts[1])
        genuine = routing.reply_address(Task(pk=task_id)).lower() == address.strip().lower()
        if genuine and not Task.objects.filter(pk=task_id).exists():
            return True
    return False
