"""`paychaos load` without a platform: help and the one-line errors users can cause."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from paychaos.cli.app import app


def test_load_help_lists_the_profiles_and_options() -> None:
    result = CliRunner().invoke(app, ["load", "--help"])
    assert result.exit_code == 0
    for word in ("noon-spike", "--duration", "--rps", "--peak", "--trace", "--workers", "--out", "--json"):
        assert word in result.output


def test_load_without_a_running_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["load", "steady", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "paychaos stack up --wait" in result.output


def test_load_refuses_a_trace_for_a_profile_that_does_not_replay(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["load", "steady", "--trace", "x.csv", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "applies to profile replay only" in result.output
