"""Would the gate catch a broken stack? Each resilience switch turned off, and each mutant.

A gate is worth its verdicts on a broken platform as much as on a healthy one. This runs the
experiments that should notice each defect, on a stack of its own started for that defect:
- `healthy`: the reference platform as shipped (every experiment named below must pass);
- `switch:<name>`: one resilience switch off in the topology (`resilience.<name>: false`);
- `mutant:<name>`: one small, realistic code bug from `benchmarks/mutants/<name>.patch`, applied
  to the working tree (the services run from it) for that stack only, and reverted after.

A patch names the experiments that should catch it in its header (`# experiments: a, b`). A
defect is caught when one of its experiments does not pass (failed, inconclusive or error). It
prints the matrix defect × experiment with the checks that did not pass, and the score (defects
caught / defects), and writes it as JSON. Not part of CI: one defect takes 2-5 minutes.

    python benchmarks/gate_sensitivity.py [--only NAME ...] [--no-switches] [--no-mutants] [--json out/sensitivity.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paychaos.platform.topology import default_topology_path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "benchmarks" / "mutants"
EXPERIMENTS = ROOT / "experiments"
PORT_OFFSET = "9000"  # beside a stack on the default ports and the test session's

# Each switch the topology has, and the experiments whose checks watch what it protects.
# An empty list is a gap: no catalogue experiment rehearses the pattern (the matrix says so).
SWITCHES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "idempotency": ({"idempotency": False}, ["pod-kill-payment"]),
    "outbox": ({"outbox": False}, ["kafka-majority-loss"]),
    "consumerDedupe": ({"consumerDedupe": False}, ["campaign-redelivery"]),
    "breaker": ({"breaker": {"enabled": False}}, ["acquirer-hang"]),
    "fallback": ({"fallback": False}, ["acquirer-slowdown"]),
    "timeouts": ({"timeouts": {"enabled": False}}, ["acquirer-hang"]),
    "producerAcks": ({"producerAcks": "1"}, ["kafka-broker-failure"]),
    "skipPoison": ({"skipPoison": False}, ["campaign-redelivery"]),
    "admission": ({"admission": {"enabled": False}}, ["noon-admission"]),
}


@dataclass
class Outcome:
    experiment: str
    verdict: str
    not_passed: list[str] = field(default_factory=list)  # checks that did not pass: label (verdict)

    @property
    def before_the_fault(self) -> bool:
        """Caught only by the steady state before any fault: the defect broke the stack in normal
        operation (a misbooked ledger, or a mutant that no longer runs at all: a method it calls
        is gone), so the fault and the checks written for it judged nothing. Worth a look."""
        return bool(self.not_passed) and all(c.startswith("steadyState.before/") for c in self.not_passed)


@dataclass
class Defect:
    name: str
    experiments: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    note: str = ""

    @property
    def caught(self) -> bool:
        return any(o.verdict != "passed" for o in self.outcomes)


def mutant_experiments(patch: Path) -> list[str]:
    for line in patch.read_text(encoding="utf-8").splitlines():
        if line.startswith("# experiments:"):
            return [name.strip() for name in line.split(":", 1)[1].split(",") if name.strip()]
    raise SystemExit(f"error: {patch} names no experiments (a `# experiments: a, b` line in its header)")


def topology_with(changes: dict[str, Any], folder: Path) -> Path:
    data = yaml.safe_load(default_topology_path().read_text(encoding="utf-8"))
    for key, value in changes.items():
        if isinstance(value, dict):
            data["resilience"].setdefault(key, {}).update(value)
        else:
            data["resilience"][key] = value
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def paychaos(env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paychaos.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)


def judge(defect: Defect, topology: Path | None, folder: Path) -> None:
    """Start a stack (with ``topology``), run the defect's experiments, stop it."""
    run_dir = folder / "run"
    env = {"PAYCHAOS_RUN_DIR": str(run_dir), "PAYCHAOS_PORT_OFFSET": PORT_OFFSET}
    up = paychaos(env, "stack", "up", "--wait", *(["--topology", str(topology)] if topology else []))
    try:
        if up.returncode != 0:
            defect.note = f"stack up failed: {up.stderr.strip().splitlines()[-1] if up.stderr.strip() else up.returncode}"
            return
        for name in defect.experiments:
            journal = folder / f"{name}.json"
            started = time.monotonic()
            paychaos(env, "run", str(EXPERIMENTS / f"{name}.yaml"), "--journal", str(journal))
            outcome = read_outcome(name, journal)
            defect.outcomes.append(outcome)
            print(f"    {name}: {outcome.verdict} in {time.monotonic() - started:.0f}s"
                  f"{'  — ' + ', '.join(outcome.not_passed) if outcome.not_passed else ''}", flush=True)
    finally:
        paychaos(env, "stack", "down", timeout=120)


def read_outcome(name: str, journal: Path) -> Outcome:
    try:
        section = json.loads(journal.read_text(encoding="utf-8"))["paychaos"]
    except (OSError, ValueError, KeyError):
        return Outcome(name, "error", ["no journal"])
    not_passed = [f"{c['phase']}/{c['kind']}/{c['name']} ({c['verdict']}{_observed(c)})"
                  for c in section["checks"] if c["verdict"] != "passed"]
    return Outcome(name, section["verdict"]["result"], not_passed)


def _observed(check: dict[str, Any]) -> str:
    """What a check that did not pass saw against its bound: how far the defect moved it."""
    if check.get("observed") is None:
        return ""
    return f": observed {check['observed']:.4g} vs {check.get('threshold', '?')}"


def git_apply(patch: Path, *, reverse: bool = False) -> None:
    subprocess.run(["git", "-C", str(ROOT), "apply", *(["-R"] if reverse else []), str(patch)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="defect names (healthy, switch:X, mutant:Y) to run")
    parser.add_argument("--no-switches", action="store_true")
    parser.add_argument("--no-mutants", action="store_true")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "sensitivity.json")
    args = parser.parse_args()

    patches = {f"mutant:{p.stem}": p for p in sorted(MUTANTS.glob("*.patch"))}
    defects: list[tuple[Defect, dict[str, Any] | None, Path | None]] = []
    named = sorted({e for _, exps in SWITCHES.values() for e in exps} | {e for p in patches.values() for e in mutant_experiments(p)})
    defects.append((Defect("healthy", named), None, None))
    if not args.no_switches:
        defects += [(Defect(f"switch:{s}", exps), changes, None) for s, (changes, exps) in SWITCHES.items()]
    if not args.no_mutants:
        defects += [(Defect(name, mutant_experiments(p)), None, p) for name, p in patches.items()]
    if args.only is not None:
        defects = [d for d in defects if d[0].name in args.only]

    def write_json() -> None:  # after each defect: a long run stopped halfway keeps what it measured
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([{"defect": d.name, "caught": d.caught, "note": d.note,
                                          "outcomes": [vars(o) for o in d.outcomes]} for d, _, _ in defects if d.outcomes or d.note],
                                        indent=2), encoding="utf-8")

    for defect, changes, patch in defects:
        print(f"== {defect.name}: {', '.join(defect.experiments) or 'no experiment rehearses it'}", flush=True)
        if not defect.experiments:
            defect.note = "no catalogue experiment rehearses it"
            continue
        with tempfile.TemporaryDirectory(prefix="paychaos-sensitivity-") as tmp:
            folder = Path(tmp)
            topology = topology_with(changes, folder) if changes else None
            if patch is not None:
                git_apply(patch)
            try:
                judge(defect, topology, folder)
            finally:
                if patch is not None:
                    git_apply(patch, reverse=True)
                write_json()

    print_matrix([d for d, _, _ in defects])
    write_json()
    healthy = next((d for d, _, _ in defects if d.name == "healthy"), None)
    broken = [d for d, _, _ in defects if d.name != "healthy"]
    return 0 if (healthy is None or not healthy.caught) and all(d.caught for d in broken if d.experiments) else 1


def print_matrix(defects: list[Defect]) -> None:
    print("\n| defect | experiment | verdict | checks that did not pass |\n|---|---|---|---|")
    for d in defects:
        if not d.outcomes:
            print(f"| {d.name} | — | — | {d.note} |")
        for o in d.outcomes:
            before = " (before any fault: broken in normal operation)" if o.before_the_fault else ""
            print(f"| {d.name} | {o.experiment} | {o.verdict}{before} | {'; '.join(o.not_passed) or '—'} |")
    broken = [d for d in defects if d.name != "healthy" and d.outcomes]
    healthy = next((d for d in defects if d.name == "healthy"), None)
    if healthy is not None and healthy.outcomes:
        print(f"\nhealthy platform: {'passed' if not healthy.caught else 'NOT passed (a false alarm)'}")
    if broken:
        print(f"score: {sum(d.caught for d in broken)}/{len(broken)} defects caught "
              f"(baseline: the healthy platform, {'passed' if healthy and not healthy.caught else 'see above'})")


if __name__ == "__main__":
    sys.exit(main())
