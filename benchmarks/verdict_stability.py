"""Is the verdict stable? The same experiment N times in a row on a healthy stack.

A gate that fails a healthy stack at random is worse than none. This runs an experiment
(`acquirer-slowdown` by default) N times through `paychaos run`, one after the other on one
stack that settles in between (as the gate does), and prints each verdict with its time to
detect and recovery time, then how they spread. The baseline is the experiment's own bounds:
the ratio printed is each time's median over the bound the experiment judges it against.

    python benchmarks/verdict_stability.py [--runs 10] [--experiment experiments/acquirer-slowdown.yaml]
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

from _stack import running_stack  # the benchmarks folder is on sys.path when run as a script

from paychaos.experiments.gating import settle
from paychaos.experiments.loading import load_experiment
from paychaos.platform.runtime.paths import RunDir

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "acquirer-slowdown.yaml")
    args = parser.parse_args()
    experiment = load_experiment(args.experiment)
    bounds = {}
    for check in experiment.spec.expect:
        if check.breaker is not None and check.breaker.opens_within is not None:
            bounds["timeToDetect"] = check.breaker.opens_within.total_seconds()
    for check in experiment.spec.after:
        if check.recovery is not None:
            bounds["recoveryTime"] = check.recovery.within.total_seconds()

    rows = []
    with running_stack() as topology, tempfile.TemporaryDirectory(prefix="paychaos-stability-") as tmp:
        run_dir = RunDir.default()
        for n in range(1, args.runs + 1):
            left = settle(run_dir, topology, 120, lambda m: print(f"  {m}", file=sys.stderr))
            if left:
                print(f"error: the stack did not settle: {'; '.join(left)}", file=sys.stderr)
                return 1
            journal = Path(tmp) / f"run-{n}.json"
            started = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "paychaos.cli", "run", str(args.experiment), "--journal", str(journal)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )
            section = json.loads(journal.read_text(encoding="utf-8"))["paychaos"]
            times = section["times"]
            rows.append((section["verdict"]["result"], times["timeToDetect"], times["recoveryTime"], section["verdict"]["reason"]))
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
    return 0 if passed == len(rows) else 1


def fmt(value: float | None) -> str:
    return "     —" if value is None else f"{value:5.2f}s"


if __name__ == "__main__":
    sys.exit(main())
