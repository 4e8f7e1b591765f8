"""The ``trellis`` command: its parser and the pass-through to Django, without starting servers."""

import sys

import pytest
from django.core.management import call_command

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
    assert subcommands(cli.build_parser()) == {"serve", "web", "worker", "demo", "manage"}


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        (["serve"], cli.serve),
        (["web"], cli.web),
        (["worker"], cli.worker),
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


@pytest.mark.parametrize("argv", [[], ["nonsense"], ["web", "--workers", "many"]])
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
