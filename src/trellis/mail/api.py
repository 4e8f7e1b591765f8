"""Mail endpoints for admins: incoming messages and the quarantine, failed outgoing mail.

Only mail admins (superusers and the administrator role) get answers; anyone else gets 404, as
for an endpoint or a message that does not exist. Every action is a call to ``inbound`` or
``outbound``, which check, write, audit.
"""

import datetime as dt
from collections.abc import Callable
from typing import Any, Literal

from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema
from pydantic import ConfigDict, Field

from trellis.core.api import Id, Input, json_response, refuse_unknown_params, text
from trellis.core.paging import Page

from . import inbound, outbound
from .models import InboundMessage, OutboundMessage

router = Router(tags=["Mail"])

InboundStatus = Literal[tuple(InboundMessage.Status.values)]
OutboundStatus = Literal[tuple(OutboundMessage.Status.values)]


class Output(Schema):
    model_config = ConfigDict(extra="forbid")


class RecordRef(Output):
    type: str = Field(description="The record's kind, as `app.model`, e.g. `support.case`.")
    id: int


class InboundOut(Output):
    id: int
    received_at: dt.datetime
    status: InboundStatus
    reason: str = Field(description="Why it was ignored or quarantined.")
    from_address: str
    subject: str
    message_id: str = Field(description="Without angle brackets; empty when there was none.")
    envelope_from: str
    recipients: list[str]
    size: int = Field(description="Bytes as received (before any truncation).")
    truncated: bool
    flags: list[str] = Field(description="What the parser had to guess or cut.")
    attempts: int
    processed_at: dt.datetime | None
    record: RecordRef | None = Field(description="The record the message became part of.")


class Header(Output):
    name: str
    value: str


class InboundDetailOut(InboundOut):
    peer: str = Field(description="The address of the host that sent it to us.")
    headers: list[Header] = Field(description="The message's header fields, decoded.")


class InboundPage(Output):
    items: list[InboundOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class OutboundOut(Output):
    id: int
    created_at: dt.datetime
    status: OutboundStatus
    from_address: str
    to: list[str]
    subject: str
    message_id: str
    attempts: int
    next_attempt_at: dt.datetime | None = Field(description="When it is tried again.")
    last_error: str
    sent_at: dt.datetime | None
    record: RecordRef | None


class OutboundPage(Output):
    items: list[OutboundOut]
    page: int
    page_size: int
    has_next: bool = Field(description="Whether another page follows.")


class InboundListParams(Input):
    status: InboundStatus | None = Field(None, description="Only messages with this status.")
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(25, ge=1, le=100)


class OutboundListParams(Input):
    status: OutboundStatus | None = Field(None, description="Only messages with this status.")
    page: int = Field(1, ge=1, le=10**9)
    page_size: int = Field(25, ge=1, le=100)


class DismissIn(Input):
    reason: text(min_length=1, max_length=500) = Field(description="Why it needs no handling.")


class FileIn(Input):
    reference: text(min_length=1, max_length=200) = Field(
        description="The record's reference, e.g. a tracking number `CS-2026-000123`."
    )


def _record(message: InboundMessage | OutboundMessage) -> dict[str, Any] | None:
    if message.content_type_id is None or message.object_id is None:
        return None
    # From ContentType's own cache: a list costs no query per row.
    content_type = ContentType.objects.get_for_id(message.content_type_id)
    return {"type": f"{content_type.app_label}.{content_type.model}", "id": message.object_id}


def _inbound(message: InboundMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "received_at": message.received_at,
        "status": message.status,
        "reason": message.reason,
        "from_address": message.from_address,
        "subject": message.subject,
        "message_id": message.message_id,
        "envelope_from": message.envelope_from,
        "recipients": message.recipients,
        "size": message.size,
        "truncated": message.truncated,
        "flags": message.flags,
        "attempts": message.attempts,
        "processed_at": message.processed_at,
        "record": _record(message),
    }


def _inbound_detail(message: InboundMessage) -> dict[str, Any]:
    headers = inbound.headers_of(bytes(message.raw))
    return {
        **_inbound(message),
        "peer": message.peer,
        "headers": [{"name": name, "value": value} for name, value in headers],
    }


def _outbound(message: OutboundMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "created_at": message.created_at,
        "status": message.status,
        "from_address": message.from_address,
        "to": message.to,
        "subject": message.subject,
        "message_id": message.message_id,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at,
        "last_error": message.last_error,
        "sent_at": message.sent_at,
        "record": _record(message),
    }


def _list(
    request: HttpRequest,
    params: InboundListParams | OutboundListParams,
    page_of: Callable[..., Page],
    present: Callable[[Any], dict[str, Any]],
) -> HttpResponse:
    """One page of ``page_of``'s messages; a query parameter the list does not take is 422."""
    refuse_unknown_params(request.GET, type(params).model_fields)
    page = page_of(request.auth, params.status, params.page, params.page_size)
    return json_response(
        {
            "items": [present(m) for m in page.items],
            "page": page.number,
            "page_size": page.size,
            "has_next": page.has_next,
        }
    )


@router.get(
    "/mail/inbound",
    response=InboundPage,
    operation_id="list_inbound_mail",
    summary="List incoming messages",
    description="Newest first, a page at a time; `status=quarantined` is the quarantine. "
    "Administrators only.",
)
def list_inbound(request: HttpRequest, params: Query[InboundListParams]) -> HttpResponse:
    return _list(request, params, inbound.page_of, _inbound)


@router.get(
    "/mail/inbound/{id}",
    response=InboundDetailOut,
    operation_id="get_inbound_mail",
    summary="Read an incoming message",
    description="With its decoded headers; the raw message is on the quarantine page.",
)
def get_inbound(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_inbound_detail(inbound.get(request.auth, id)))


@router.post(
    "/mail/inbound/{id}/rerun",
    response=InboundOut,
    operation_id="rerun_inbound_mail",
    summary="Process an incoming message again",
    description="For a quarantined or ignored message (409 otherwise), e.g. after a new mailbox "
    "was set up. The answer says what became of it; it may be quarantined again.",
)
def rerun_inbound(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_inbound(inbound.rerun(request.auth, id)))


@router.post(
    "/mail/inbound/{id}/dismiss",
    response=InboundOut,
    operation_id="dismiss_inbound_mail",
    summary="Dismiss a quarantined message",
    description="The message is kept, marked ignored, with your reason. Quarantined messages "
    "only (409 otherwise).",
)
def dismiss_inbound(request: HttpRequest, id: Id, payload: DismissIn) -> HttpResponse:
    return json_response(_inbound(inbound.dismiss(request.auth, id, payload.reason)))


@router.post(
    "/mail/inbound/{id}/file",
    response=InboundOut,
    operation_id="file_inbound_mail",
    summary="File an incoming message into a record",
    description="Hands a quarantined or ignored message to the record `reference` names, as a "
    "reply to it. An unknown reference is 422; a record that does not take it, 409.",
)
def file_inbound(request: HttpRequest, id: Id, payload: FileIn) -> HttpResponse:
    return json_response(_inbound(inbound.file_into(request.auth, id, payload.reference)))


@router.get(
    "/mail/outbound",
    response=OutboundPage,
    operation_id="list_outbound_mail",
    summary="List outgoing messages",
    description="Newest first, a page at a time; `status=failed` lists those that failed every "
    "attempt. Administrators only.",
)
def list_outbound(request: HttpRequest, params: Query[OutboundListParams]) -> HttpResponse:
    return _list(request, params, outbound.page_of, _outbound)


@router.post(
    "/mail/outbound/{id}/retry",
    response=OutboundOut,
    operation_id="retry_outbound_mail",
    summary="Send a failed message again",
    description="Queues it now with a fresh round of attempts. Failed messages only (409 "
    "otherwise).",
)
def retry_outbound(request: HttpRequest, id: Id) -> HttpResponse:
    return json_response(_outbound(outbound.retry(request.auth, id)))
