"""The ``trellis`` command: its parser and the pass-through to Django; servers are started only
where a test says so (the mail listener, on a free port)."""

import os
import smtplib
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from trellis import cli

from .. import factories


def test_manage_runs_a_django_command(capsys):
    assert cli.main(["manage", "check"]) == 0
    assert "System check identified no issues" in capsys.readouterr().out


def test_an_unknown_management_command_fails(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["manage", "no-such-command"])
    assert exit_.value.code == 1
    assert "Unknown command: 'no-such-command'" in capsys.readouterr().err


def subcommands(parser) -> set[str]:
    [action] = [a for a in parser._actions if a.dest == "command"]
    return set(action.choices)


def test_every_command_is_offered():
    assert subcommands(cli.build_parser()) == {
        "serve",
        "web",
        "worker",
        "smtpd",
        "demo",
        "manage",
    }


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        (["serve"], cli.serve),
        (["web"], cli.web),
        (["worker"], cli.worker),
        (["smtpd"], cli.smtpd),
    ],
)
def test_server_commands_dispatch_to_their_function(argv, runs):
    assert cli.build_parser().parse_args(argv).run is runs


def test_serve_options():
    args = cli.build_parser().parse_args(
        ["serve", "--bind", "0.0.0.0:9000", "--no-demo", "--demo-scale", "50"]
    )
    assert (args.bind, args.no_demo, args.demo_scale) == ("0.0.0.0:9000", True, 50)
    defaults = cli.build_parser().parse_args(["serve"])
    assert (defaults.bind, defaults.no_demo, defaults.demo_scale) == ("127.0.0.1:8000", False, 200)


def test_web_takes_its_worker_counts_from_the_environment(monkeypatch):
    monkeypatch.setenv("TRELLIS_WEB_WORKERS", "6")
    monkeypatch.setenv("TRELLIS_WEB_THREADS", "3")
    args = cli.build_parser().parse_args(["web", "--bind", "0.0.0.0:8000"])
    assert (args.bind, args.workers, args.threads) == ("0.0.0.0:8000", 6, 3)
    args = cli.build_parser().parse_args(["web", "--workers", "2"])
    assert args.workers == 2


def test_web_runs_gunicorn_with_the_wsgi_application():
    command = cli._gunicorn("0.0.0.0:8000", 4, 2)
    assert command[:4] == [sys.executable, "-m", "gunicorn", "trellis.wsgi:application"]
    options = dict(zip(command[4::2], command[5::2], strict=False))
    assert options["--bind"] == "0.0.0.0:8000"
    assert (options["--workers"], options["--threads"]) == ("4", "2")


def test_a_worker_runs_the_task_queue_and_the_timer_sweep():
    commands = [command[3:] for command in cli._worker_commands()]
    assert commands == [["manage", "db_worker"], ["manage", "sweep", "--loop"]]


def test_a_worker_runs_two_sweep_loops_or_as_many_as_asked(monkeypatch):
    args = cli.build_parser().parse_args(["worker"])
    commands = [command[3:] for command in cli._worker_commands(args.sweepers)]
    assert commands == [["manage", "db_worker"], *[["manage", "sweep", "--loop"]] * 2]
    assert cli.build_parser().parse_args(["worker", "--sweepers", "1"]).sweepers == 1
    monkeypatch.setenv("TRELLIS_SWEEPERS", "3")
    assert cli.build_parser().parse_args(["worker"]).sweepers == 3


@pytest.mark.parametrize(
    "argv",
    [[], ["nonsense"], ["web", "--workers", "many"], ["worker", "--sweepers", "0"]],
)
def test_bad_arguments_are_refused_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert "usage: trellis" in capsys.readouterr().err


def test_an_api_token_made_on_the_command_line_opens_the_api(db, client, capsys):
    factories.user("sales", username="script-owner")
    call_command("create_api_token", "script-owner", "--name", "nightly import")
    key = capsys.readouterr().out.strip()
    answer = client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    assert answer.json()["username"] == "script-owner"


def test_serve_runs_the_mail_intake_with_the_web_server_and_the_worker():
    commands = [command[3:] for command in cli._serve_commands("127.0.0.1:8000")]
    assert ["manage", "smtpd"] in commands
    assert ["manage", "db_worker"] in commands
    # One sweep loop on the embedded SQLite database, which lets one writer in at a time.
    assert commands.count(["manage", "sweep", "--loop"]) == 1
    # The worker alone does not listen for mail: production runs `trellis smtpd` on its own.
    assert ["manage", "smtpd"] not in [c[3:] for c in cli._worker_commands()]


def test_smtpd_options_default_to_the_settings():
    args = cli.build_parser().parse_args(["smtpd", "--host", "0.0.0.0", "--port", "25"])
    assert cli._smtpd_command(args.host, args.port)[3:] == [
        "manage",
        "smtpd",
        "--host",
        "0.0.0.0",
        "--port",
        "25",
    ]
    defaults = cli.build_parser().parse_args(["smtpd"])
    # Nothing given: the management command takes TRELLIS_SMTPD_HOST / _PORT from the settings.
    assert cli._smtpd_command(defaults.host, defaults.port)[3:] == ["manage", "smtpd"]


def _database_url() -> str:
    """The test database, as a URL a child process can use."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db["USER"] or ""
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{user}{password}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_trellis_smtpd_starts_and_takes_a_message():
    from trellis.mail.models import InboundMessage

    environment = {**os.environ, "DATABASE_URL": _database_url()}
    listener = subprocess.Popen(
        [sys.executable, "-m", "trellis.cli", "smtpd", "--host", "127.0.0.1", "--port", "0"],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = listener.stdout.readline()
        assert line.startswith("Trellis mail intake listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        message = (
            f"From: kim@example.co.kr\r\nTo: support@{settings.MAIL_DOMAIN}\r\n"
            "Subject: Hello from the command line\r\nMessage-ID: <cli-1@example.co.kr>\r\n"
            "\r\nHello.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
            refused = client.sendmail(
                "kim@example.co.kr", [f"anyone@{settings.MAIL_DOMAIN}"], message
            )
        assert refused == {}
        stored = InboundMessage.objects.get()
        assert stored.subject == "Hello from the command line"
    finally:
        listener.terminate()
        listener.wait(timeout=20)
    assert listener.returncode == 0
