from django.conf import settings
from django.core.management.base import BaseCommand

from trellis.core.sweep import sweep_forever, sweep_once


class Command(BaseCommand):
    help = "Fire due timers (reminders, escalations, SLA targets). --loop keeps running."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=settings.TRELLIS["SWEEP_INTERVAL"])

    def handle(self, *args, loop: bool, interval: float, **options):
        if loop:
            sweep_forever(interval)
        fired = sweep_once()
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in fired.items()) or "nothing to sweep")
