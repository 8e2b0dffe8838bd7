"""The repository layout keeps its promises (ARCHITECTURE §1)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_top_level_folder_is_an_importable_package() -> None:
    # A top-level `platform/__init__.py` would shadow the standard library's platform module.
    offenders = [p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert offenders == []


def test_requested_top_level_folders_exist() -> None:
    for name in ("experiments", "probes", "runbooks", "platform", "cli", "tests", "benchmarks", "src/paychaos"):
        assert (ROOT / name).is_dir(), name
