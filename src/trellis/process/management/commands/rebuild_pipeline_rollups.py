"""Recompute the daily sums of stage changes that the funnel and time-in-stage reports read.

Needed once after upgrading a database whose stage changes predate the sums, after stage
changes were loaded as rows (a bulk import), or to repair. Run it while records are not being
moved: moves made during the rebuild may be missed.
"""

import time

from django.core.management.base import BaseCommand

from trellis.process.pipelines import rollups


class Command(BaseCommand):
    help = __doc__.strip().split("\n\n")[0]

    def add_arguments(self, parser):
        parser.add_argument(
            "--pipeline", type=int, action="append", help="only this pipeline (repeatable)"
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        read = rollups.rebuild(options["pipeline"])
        self.stdout.write(f"{read} stage changes summed in {time.monotonic() - started:.1f} s.")
