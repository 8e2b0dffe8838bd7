"""The readiness gate: a suite's experiments in order on one stack, with thresholds on top.

Each experiment runs as its own ``paychaos run`` process: one that crashes or is killed takes
only itself down, its faults are still reverted (by its own handlers, or by ``halt`` here), and
the gate goes on to judge the others. Between two experiments the stack must settle back to
healthy, so that one experiment's aftermath is never blamed on the next.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paychaos.experiments.journal import CheckRecord, Section, Verdict
from paychaos.experiments.suites import Planned, Suite, Thresholds
from paychaos.faults import records
from paychaos.probes.series import Vocabulary
from paychaos.probes.verdicts import CheckResult
from paychaos.targets import Target

Progress = Callable[[str], None]


@dataclass
class GateEntry:
    name: str
    journal: dict[str, Any] | None
    verdict: str  # the run's own: passed | failed | inconclusive | aborted | error
    reason: str
    gate_checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "passed" and all(c.verdict == "passed" for c in self.gate_checks)

    def gated_journal(self) -> dict[str, Any]:
        """The journal with the gate's threshold checks and verdict folded in: what the reports
        read. Derived: the run's own journal is left as it was written."""
        if self.verdict == "passed" and not self.passed:
            missed = ", ".join(c.name for c in self.gate_checks if c.verdict != "passed")
            verdict = Verdict(result="failed", reason=f"passed its own checks, but not the gate's thresholds on {missed}")
        else:
            verdict = Verdict(result=self.verdict, reason=self.reason)  # type: ignore[arg-type]
        own = self.journal.get("paychaos") if self.journal else None
        section = Section.model_validate(own) if own else Section(experiment=self.name, verdict=verdict)
        gated = section.model_copy(update={"checks": [*section.checks, *map(CheckRecord.of, self.gate_checks)], "verdict": verdict})
        return {**(self.journal or {}), "paychaos": gated.to_json()}


def threshold_checks(times: dict[str, float | None], thresholds: Thresholds) -> list[CheckResult]:
    """The suite's demands on the times an experiment measured; a time not measured fails."""
    out = []
    for key, bound, missing in (
        ("timeToDetect", thresholds.time_to_detect, "no probe saw the fault"),
        ("recoveryTime", thresholds.recovery_time, "the SLOs were not back within objective before the run ended"),
    ):
        if bound is None:
            continue
        limit = bound.total_seconds()
        observed = times.get(key)
        if observed is None:
            out.append(CheckResult("gate", "threshold", key, "failed", None, f"<= {limit:g}s", missing))
        else:
            ok = observed <= limit
            out.append(CheckResult("gate", "threshold", key, "passed" if ok else "failed", observed, f"<= {limit:g}s",
                                   f"{key} {observed:g}s"))
    return out


def gate_passed(entries: list[GateEntry]) -> bool:
    return bool(entries) and all(e.passed for e in entries)


# -- settling -----------------------------------------------------------------------------------


def settle(target: Target, vocabulary: Vocabulary, within: float, progress: Progress) -> list[str]:
    """Wait until nothing is unsettled on the target; what still is after ``within`` seconds."""
    deadline = time.monotonic() + within
    reported: list[str] = []
    while (problems := target.unsettled(vocabulary)) and time.monotonic() < deadline:
        if problems != reported:
            progress(f"settling: {'; '.join(problems)}")
            reported = problems
        time.sleep(1)
    return problems


# -- running ------------------------------------------------------------------------------------


def run_entry(planned: Planned, target: Target, journals: Path, progress: Progress) -> GateEntry:
    """One experiment as its own ``paychaos run`` process; its journal read back."""
    name = planned.experiment.name
    journal_path = journals / f"{name}.json"
    journal_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "paychaos.cli", "run", str(planned.path), "--journal", str(journal_path),
            "--target-arguments", json.dumps(target.arguments())]
    started = time.monotonic()
    # stderr is the child's live progress: the user watches it as if they had run it themselves.
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=None, check=False)
    seconds = time.monotonic() - started
    # Whatever happened to it, nothing it injected may outlive it.
    try:
        leftovers = records.halt(target.ledger(), target.driver())
    except records.HaltIncomplete as exc:
        return GateEntry(name, _read_journal(journal_path), "error",
                         f"faults it left could not all be reverted: {exc}", seconds=seconds)
    journal = _read_journal(journal_path)
    if journal is None or "paychaos" not in journal:
        # Nothing was judged (the spec was refused, the target not ready, the run crashed): its
        # exit code cannot be a verdict, whatever it is (1 is also how a refused start exits).
        reason = f"`paychaos run` exited {proc.returncode} without a journal"
        return GateEntry(name, None, "error", reason, seconds=seconds)
    result = journal["paychaos"]["verdict"]
    entry = GateEntry(name, journal, result["result"], result["reason"], seconds=seconds)
    if leftovers:
        entry.verdict, entry.reason = "error", f"{len(leftovers)} faults outlived the run and were reverted by the gate"
    entry.gate_checks = threshold_checks(journal["paychaos"].get("times") or {}, planned.entry.thresholds)
    return entry


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_suite(suite: Suite, target: Target, vocabulary: Vocabulary, out_dir: Path, progress: Progress) -> list[GateEntry]:
    """Every experiment of the suite in order; a stack that will not settle ends the gate early."""
    journals = out_dir / "journals"
    journals.mkdir(parents=True, exist_ok=True)
    entries: list[GateEntry] = []
    within = suite.gameday.spec.settle_within.total_seconds()
    for n, planned in enumerate(suite.planned, 1):
        name = planned.experiment.name
        problems = settle(target, vocabulary, within, progress)
        if problems:
            reason = f"the stack did not settle within {within:g}s before it: {'; '.join(problems)}"
            entries.append(GateEntry(name, None, "error", reason))
            break
        progress(f"[{n}/{len(suite.planned)}] {name}")
        entry = run_entry(planned, target, journals, progress)
        entries.append(entry)
        progress(f"[{n}/{len(suite.planned)}] {name}: {entry.verdict} in {entry.seconds:.0f}s ({entry.reason})")
    return entries
