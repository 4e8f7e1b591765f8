from django.conf import settings
from django.core.management.base import BaseCommand

from trellis.mail.smtpd import run_forever


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
            "--process-threads", type=int, default=4, help="threads that process stored mail"
        )

    def handle(self, *args, host: str, port: int, process_threads: int, **options):
        def ready(server) -> None:
            self.stdout.write(f"Trellis mail intake listening on {server.host}:{server.port}")
            self.stdout.flush()

        run_forever(host, port, ready=ready, process_threads=process_threads)
