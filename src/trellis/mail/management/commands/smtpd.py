from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from trellis.mail.smtpd import run_forever


def default_process_workers() -> int:
    """Processes on PostgreSQL, where they use every core; on SQLite, which lets one writer in
    at a time, threads of the listener do as well."""
    return 2 if connection.vendor == "postgresql" else 0


class Command(BaseCommand):
    help = (
        "Receive mail: the SMTP intake listener. Each message is stored before it is answered "
        "250, then processed. Runs until stopped (SIGTERM or Ctrl-C)."
    )

    def add_arguments(self, parser):
        mail = settings.TRELLIS["MAIL"]
        parser.add_argument("--host", default=mail["SMTPD_HOST"])
        parser.add_argument("--port", type=int, default=mail["SMTPD_PORT"], help="0: any free port")
        parser.add_argument(
            "--process-workers",
            type=int,
            default=None,
            help="processes that process stored mail (default: 2 on PostgreSQL, 0 on SQLite); "
            "0: threads of the listener's process",
        )
        parser.add_argument(
            "--process-threads",
            type=int,
            default=4,
            help="threads that process stored mail when there are no processes for it",
        )

    def handle(
        self,
        *args,
        host: str,
        port: int,
        process_workers: int | None,
        process_threads: int,
        **options,
    ):
        def ready(server) -> None:
            self.stdout.write(f"Trellis mail intake listening on {server.host}:{server.port}")
            self.stdout.flush()

        if process_workers is None:
            process_workers = default_process_workers()
        run_forever(
            host,
            port,
            ready=ready,
            process_workers=process_workers,
            process_threads=process_threads,
        )
