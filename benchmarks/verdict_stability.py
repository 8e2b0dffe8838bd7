"""Is the verdict stable? The same experiment N times in a row on a healthy stack.

A gate that fails a healthy stack at random is worse than none. This runs an experiment
(`acquirer-slowdown` by default) N times through `paychaos run`, one after the other on one
stack that settles in between (as the gate does), and prints each verdict with its time to
detect and recovery time, then how they spread, and every check's smallest margin over the runs
(observed against its threshold: the thinnest a healthy run came to failing it). The baseline
is the experiment's own bounds: the ratio printed is each time's median over the bound the
experiment judges it against. Several experiments run one after the other, each N times.

    python benchmarks/verdict_stability.py [--runs 10] [--experiment experiments/a.yaml experiments/b.yaml ...]
        [--json out/stability.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _stack import running_stack  # the benchmarks folder is on sys.path when run as a script

from paychaos.experiments.gating import settle
from paychaos.experiments.loading import load_experiment
from paychaos.platform.runtime.paths import RunDir
from paychaos.probes.catalogue import load_catalogue
from paychaos.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--experiment", type=Path, nargs="+", default=[ROOT / "experiments" / "acquirer-slowdown.yaml"])
    parser.add_argument("--json", type=Path, default=None, help="also write every run's verdict and margins here")
    args = parser.parse_args()
    results = {}
    with running_stack() as topology, tempfile.TemporaryDirectory(prefix="paychaos-stability-") as tmp:
        for path in args.experiment:
            results[path.stem] = stability(path, args.runs, topology, Path(tmp))
            if args.json is not None:  # after each experiment: a long run stopped halfway keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r["passed"] == r["runs"] for r in results.values()) else 1


def stability(path: Path, runs: int, topology: Any, tmp: Path) -> dict[str, Any]:
    experiment = load_experiment(path)
    bounds = {}
    for check in experiment.spec.expect:
        if check.breaker is not None and check.breaker.opens_within is not None:
            bounds["timeToDetect"] = check.breaker.opens_within.total_seconds()
    for check in experiment.spec.after:
        if check.recovery is not None:
            bounds["recoveryTime"] = check.recovery.within.total_seconds()

    rows = []
    margins: dict[str, list[tuple[float | None, Any, str]]] = {}
    run_dir = RunDir.default()
    vocabulary = load_catalogue(ROOT / "probes").vocabulary
    print(f"== {experiment.name}: {runs} runs", flush=True)
    for n in range(1, runs + 1):
        left = settle(LocalTarget(run_dir), vocabulary, 120, lambda m: print(f"  {m}", file=sys.stderr))
        if left:
            raise SystemExit(f"error: the stack did not settle: {'; '.join(left)}")
        journal = tmp / f"{experiment.name}-{n}.json"
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "paychaos.cli", "run", str(path), "--journal", str(journal)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
        )
        try:
            section = json.loads(journal.read_text(encoding="utf-8"))["paychaos"]
        except (OSError, ValueError, KeyError):
            rows.append(("error", None, None, "no journal written"))
            print(f"run {n:2d}: error   no journal written", flush=True)
            continue
        times = section["times"]
        rows.append((section["verdict"]["result"], times["timeToDetect"], times["recoveryTime"], section["verdict"]["reason"]))
        for c in section["checks"]:
            label = f"{c['phase']}/{c['kind']}/{c['name']}"
            margins.setdefault(label, []).append((c.get("margin"), c.get("observed"), c.get("threshold") or ""))
        print(f"run {n:2d}: {rows[-1][0]:<7} detect {fmt(times['timeToDetect'])}  recover {fmt(times['recoveryTime'])}"
              f"  ({time.monotonic() - started:.0f}s) {rows[-1][3] if rows[-1][0] != 'passed' else ''}", flush=True)

    passed = sum(r[0] == "passed" for r in rows)
    print(f"\n{experiment.name}: {passed}/{len(rows)} passed")
    for i, key in ((1, "timeToDetect"), (2, "recoveryTime")):
        values = [r[i] for r in rows if r[i] is not None]
        if not values:
            print(f"{key}: never measured")
            continue
        median = statistics.median(values)
        ratio = f"  median/bound {median / bounds[key]:.2f} (bound {bounds[key]:g}s)" if key in bounds else ""
        print(f"{key}: min {min(values):.2f}s  median {median:.2f}s  max {max(values):.2f}s{ratio}")
    smallest = {}
    print("smallest margin of each check (observed at that run, threshold):")
    for label, seen in margins.items():
        measured = [m for m in seen if m[0] is not None]
        if not measured:
            continue
        low = min(measured, key=lambda m: m[0])
        # Every run's figure too: the spread says more than the one smallest margin.
        smallest[label] = {"margin": low[0], "observed": low[1], "threshold": low[2], "runs": len(seen),
                           "everyRun": [m[1] for m in seen]}
        print(f"  {label:<58} {low[0]:>10.4g}   observed {low[1]}  {low[2]}")
    return {"runs": len(rows), "passed": passed, "verdicts": [r[0] for r in rows],
            "reasons": [r[3] for r in rows if r[0] != "passed"], "smallestMargins": smallest}


def fmt(value: float | None) -> str:
    return "     —" if value is None else f"{value:5.2f}s"


if __name__ == "__main__":
    sys.exit(main())
