"""Every documented command answers --help, and user errors are one line, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from paychaos.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    "args", [[], ["stack"], ["stack", "install"], ["stack", "up"], ["stack", "status"], ["stack", "down"], ["stack", "logs"], ["stack", "wipe"]]
)
def test_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_status_without_a_stack_says_how_to_start_one(tmp_path) -> None:
    result = runner.invoke(app, ["stack", "status", "--run-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "paychaos stack up" in result.output


def test_status_json_without_a_stack(tmp_path) -> None:
    result = runner.invoke(app, ["stack", "status", "--json", "--run-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert '"running": false' in result.output


def test_logs_of_an_unknown_process_is_one_clear_line(tmp_path) -> None:
    result = runner.invoke(app, ["stack", "logs", "nope", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no log for 'nope'" in result.output and "Traceback" not in result.output
