"""Mail in the Django admin: to look at only.

The quarantine's actions (re-run, file into a record, dismiss) and retrying failed outgoing mail
are on the mail pages (``/mail/quarantine/``), which go through the audited services; the admin
lists here are for looking things up.
"""

from django.contrib import admin

from trellis.core.admin import ReadOnlyAdmin

from .models import InboundMessage, MessageLink, OutboundMessage


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "from_address", "subject", "status", "attempts", "size")
    list_filter = ("status", "channel", "truncated")
    search_fields = ("from_address", "envelope_from", "subject", "message_id")
    date_hierarchy = "received_at"
    show_full_result_count = False
    # The raw bytes are offered as a download on the quarantine page, not shown here.
    exclude = ("raw",)
    readonly_fields = (
        "received_at",
        "channel",
        "peer",
        "envelope_from",
        "recipients",
        "size",
        "truncated",
        "message_id",
        "from_address",
        "subject",
        "status",
        "reason",
        "flags",
        "attempts",
        "processed_at",
        "content_type",
        "object_id",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).defer("raw")


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "subject", "status", "attempts", "next_attempt_at", "sent_at")
    list_filter = ("status",)
    search_fields = ("subject", "message_id")
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = (
        "created_at",
        "from_address",
        "to",
        "reply_to",
        "subject",
        "text",
        "html",
        "message_id",
        "in_reply_to",
        "references",
        "headers",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "sent_at",
        "content_type",
        "object_id",
    )


@admin.register(MessageLink)
class MessageLinkAdmin(ReadOnlyAdmin):
    list_display = ("message_id", "content_type", "object_id", "created_at")
    search_fields = ("message_id",)
    show_full_result_count = False
    readonly_fields = ("message_id", "content_type", "object_id", "created_at")
