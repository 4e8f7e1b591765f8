"""The ``trellis`` command.

trellis serve            web UI, task worker, timer sweep and mail intake together (SQLite by
                         default)
trellis web              the web server alone (gunicorn), for production
trellis worker           a task worker with the timer sweep, for production
trellis smtpd            the SMTP intake listener alone (--host, --port; default from
                         TRELLIS_SMTPD_HOST / TRELLIS_SMTPD_PORT), for production
trellis demo --scale N   generate a demo dataset (and a demo support desk and tasks)
trellis manage ...       any Django management command (migrate, createsuperuser, ...)
"""

import argparse
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trellis.settings")


def _manage(*args: str) -> None:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["trellis", *args])


def _django():
    import django

    django.setup()


def _run_together(commands: list[list[str]]) -> int:
    """Start each command; stop all of them when one ends or on Ctrl-C."""
    processes = [subprocess.Popen(command) for command in commands]

    def stop(*_args):
        for process in processes:
            if process.poll() is None:
                process.terminate()

    signal.signal(signal.SIGTERM, stop)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return max((p.returncode or 0) for p in processes)


def _gunicorn(bind: str, workers: int, threads: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "trellis.wsgi:application",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "10",
    ]


def _worker_commands(sweepers: int = 1) -> list[list[str]]:
    """The task queue and ``sweepers`` sweep loops, which share each pass's due work."""
    me = [sys.executable, "-m", "trellis.cli"]
    return [[*me, "manage", "db_worker"]] + [[*me, "manage", "sweep", "--loop"]] * sweepers


def _smtpd_command(host: str | None = None, port: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "trellis.cli", "manage", "smtpd"]
    if host is not None:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return command


def _serve_commands(bind: str) -> list[list[str]]:
    # SQLite lets one writer in at a time: a second sweep loop would only wait.
    return [_gunicorn(bind, 2, 4), *_worker_commands(sweepers=1), _smtpd_command()]


def serve(args: argparse.Namespace) -> int:
    _manage("migrate", "--no-input", "-v", "0")
    _django()
    from trellis.core.models import User

    if not args.no_demo and not User.objects.exists():
        print("First start: loading demo data ...", flush=True)
        _manage("demo", "--scale", str(args.demo_scale))
        _manage("demo_support")
        _manage("demo_tasks")
    from django.conf import settings

    host, _sep, port = args.bind.rpartition(":")
    mail = settings.TRELLIS["MAIL"]
    print(
        f"\nTrellis is running at http://{host}:{port}/\n"
        "Demo login: admin / trellis-demo (administrator), minji / trellis-demo (sales), "
        "jiwon / trellis-demo (support)\n"
        f"Mail intake (SMTP): {mail['SMTPD_HOST']}:{mail['SMTPD_PORT']}\n"
        "API docs: /api/docs   Stop: Ctrl-C\n",
        flush=True,
    )
    return _run_together(_serve_commands(args.bind))


def web(args: argparse.Namespace) -> int:
    os.execv(sys.executable, _gunicorn(args.bind, args.workers, args.threads))
    return 0


def worker(args: argparse.Namespace) -> int:
    return _run_together(_worker_commands(args.sweepers))


def smtpd(args: argparse.Namespace) -> int:
    _manage(*_smtpd_command(args.host, args.port)[4:])
    return 0


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trellis", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve", help="web, worker, sweep and mail intake together")
    p.add_argument("--bind", default="127.0.0.1:8000")
    p.add_argument("--no-demo", action="store_true", help="do not load demo data")
    p.add_argument("--demo-scale", type=int, default=200, help="demo opportunities to create")
    p.set_defaults(run=serve)
    p = commands.add_parser("web", help="the web server (gunicorn)")
    p.add_argument("--bind", default="127.0.0.1:8000")
    p.add_argument("--workers", type=int, default=int(os.environ.get("TRELLIS_WEB_WORKERS", 2)))
    p.add_argument("--threads", type=int, default=int(os.environ.get("TRELLIS_WEB_THREADS", 1)))
    p.set_defaults(run=web)
    p = commands.add_parser("worker", help="a task worker and the timer sweep")
    p.add_argument(
        "--sweepers",
        type=_positive,
        default=os.environ.get("TRELLIS_SWEEPERS", "2"),
        help="sweep loops that share the due work (default 2; on SQLite, which lets one "
        "writer in at a time, 1 is enough)",
    )
    p.set_defaults(run=worker)
    p = commands.add_parser("smtpd", help="the SMTP intake listener")
    p.add_argument("--host", help="address to listen on (default: TRELLIS_SMTPD_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (default: TRELLIS_SMTPD_PORT)")
    p.set_defaults(run=smtpd)
    commands.add_parser("demo", help="generate demo data: trellis demo --scale N")
    commands.add_parser("manage", help="run a Django management command")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "manage":
        _manage(*argv[1:])
        return 0
    if argv and argv[0] == "demo":
        _manage(*argv)
        _manage("demo_support")
        _manage("demo_tasks")
        return 0
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
