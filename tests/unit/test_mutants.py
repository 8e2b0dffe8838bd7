"""The mutants of benchmarks/gate_sensitivity.py still apply to the code they break, and each
names a promise and the experiments that must catch it: a patch that rotted with the services
would be reported as a skipped defect only when someone ran the benchmark."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = sorted((ROOT / "benchmarks" / "mutants").glob("*.patch"))
EXPERIMENTS = {p.stem for p in (ROOT / "experiments").glob("*.yaml")}


def test_there_are_mutants() -> None:
    assert len(MUTANTS) >= 12


@pytest.mark.parametrize("patch", MUTANTS, ids=[p.stem for p in MUTANTS])
def test_a_mutant_applies_and_says_what_it_breaks_and_who_catches_it(patch: Path) -> None:
    header = [line for line in patch.read_text(encoding="utf-8").splitlines() if line.startswith("# ")]
    assert any(line.startswith("# Promise:") for line in header), "no '# Promise:' line"
    named = [line.split(":", 1)[1] for line in header if line.startswith("# experiments:")]
    assert named, "no '# experiments:' line"
    catchers = {name.strip() for name in named[0].split(",")}
    assert catchers and catchers <= EXPERIMENTS, catchers - EXPERIMENTS
    check = subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
