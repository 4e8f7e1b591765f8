from django.core.management.base import BaseCommand, CommandError

from trellis.mail import imap


class Command(BaseCommand):
    help = (
        "Poll the IMAP mailbox of TRELLIS_IMAP_URL once: store its new messages, mark them "
        "read on the server, and process them. The worker's sweep does this on its own."
    )

    def handle(self, *args, **options):
        if not imap.configured():
            raise CommandError("TRELLIS_IMAP_URL is not set.")
        try:
            stored = imap.poll()
        except imap.ImapError as exc:
            raise CommandError(f"Could not poll the mailbox: {exc}") from exc
        self.stdout.write(f"{stored} new message(s) stored")
