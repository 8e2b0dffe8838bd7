"""The load generator itself: requests/s per CPU-second, and how fast it follows a ×10 jump.

1. `GET /v1/campaign/status?user_id=u00001` through the edge, at full speed, by our CampaignUser
   (every step a status read, no pacing), by a plain Locust FastHttpUser and by wrk; each figure
   is requests per CPU-second of the generator (CPU from getrusage of the child, less the CPU of
   an idle start-up), so a result does not depend on how many cores the platform left it.
   Ratios are to wrk and to the plain FastHttpUser. Then CampaignUser again as a master and
   ``--workers`` local worker processes (what ``paychaos load --workers`` and an experiment's
   ``load.workers`` run): requests/s per worker, and its ratio to plain FastHttpUser.
2. A ×10 jump of the target rate through `LoadRunner` (the real campaign mix): seconds until the
   achieved rate is within 90 % of the target, and the rate error while holding.
Uses the stack in the default run dir, or starts one (and stops it afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from paychaos.experiments.spec import Load
from paychaos.load.running import LoadRunner, free_port

from _stack import require_wrk, running_stack  # the benchmarks folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
PATH = "/v1/campaign/status?user_id=u00001"


@dataclass
class Throughput:
    name: str
    requests: int
    non_ok: int
    seconds: float
    cpu_seconds: float
    processes: int = 1  # generator processes doing requests (Locust workers), not counting a master

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.requests / self.cpu_seconds if self.cpu_seconds else float("nan")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measured(
    name: str, cmd: list[str], seconds: float, timeout: float, helpers: list[list[str]] | None = None
) -> tuple[Throughput, str]:
    """Run ``cmd`` (and ``helpers`` beside it, such as Locust workers, waited for after it):
    its stdout, and the CPU all of them spent."""
    cpu0 = _children_cpu()
    started = [subprocess.Popen(h, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for h in helpers or []]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        for proc in started:
            try:
                proc.wait(timeout=30)  # a worker quits when its master does
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{name}: a worker was still running 30 s after its master ended") from None
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    cpu = _children_cpu() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"{name} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    return Throughput(name, 0, 0, seconds, cpu), out.stdout


def run_wrk(edge: str, args: argparse.Namespace) -> Throughput:
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-H", "X-Device-Id: device-wrk", f"{edge}{PATH}"]
    result, text = _measured("wrk (1 thread)", cmd, args.duration, args.duration + 60)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)s", text, re.M)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if not total:
        raise RuntimeError(f"could not read the wrk report:\n{text}")
    result.requests, result.seconds = int(total.group(1)), float(total.group(2))
    result.non_ok = int(non_2xx.group(1)) if non_2xx else 0
    return result


def run_locust(
    name: str, locustfile: Path, user_class: str, edge: str, args: argparse.Namespace, workers: int = 0
) -> Throughput:
    """One Locust run; with ``workers``, a master and that many local worker processes, as
    ``paychaos load --workers`` and an experiment's ``load.workers`` run it."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(locustfile), user_class, "--headless", "--host", edge,
        "-u", str(args.connections), "-r", str(args.connections), "-t", f"{args.duration}s",
        "--only-summary", "--json", "--loglevel", "ERROR", "--exit-code-on-error", "0", "--stop-timeout", "0",
    ]
    port = free_port()
    if workers:
        cmd += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                "--expect-workers", str(workers), "--expect-workers-max-wait", "60"]
    worker = [sys.executable, "-m", "locust", "-f", str(locustfile), user_class, "--worker",
              "--master-host", "127.0.0.1", "--master-port", str(port), "--loglevel", "ERROR"]
    # Python and Locust start-up costs about a CPU-second a process: measured with no users, then
    # taken off (the users are spread only once every worker is in, so the wait costs nothing).
    idle = [*cmd]
    idle[idle.index("-u") + 1], idle[idle.index("-t") + 1] = "0", "1s"
    startup, _ = _measured(f"{name} start-up", idle, 1, 90, [worker] * workers)
    result, text = _measured(name, cmd, args.duration, args.duration + 90, [worker] * workers)
    result.cpu_seconds = max(result.cpu_seconds - startup.cpu_seconds, 1e-3)
    result.processes = max(1, workers)
    stats = json.loads(text)
    result.requests = sum(s["num_requests"] for s in stats)
    result.non_ok = sum(s["num_failures"] for s in stats)
    return result


@dataclass
class Jump:
    baseline: float
    target: float
    seconds_to_90: float | None
    hold_error: float
    hold_rate: float


def run_jump(edge: str, args: argparse.Namespace, seed_users: int, merchants: int) -> Jump:
    with tempfile.TemporaryDirectory(prefix="paychaos-bench-") as tmp:
        trace = Path(tmp) / "jump.csv"
        quiet, held = 10, args.hold
        trace.write_text("second,multiplier\n" + "".join(f"{s},{1 if s < quiet else 10}\n" for s in range(quiet + held)))
        load = Load(profile="replay", baseline_rps=args.jump_baseline, duration=f"{quiet + held}s", trace=str(trace))
        runner = LoadRunner(edge, load, Path(tmp) / "out", app_users=seed_users, merchants=merchants)
        runner.start()
        runner.wait(timeout=quiet + held + 60)
        lines = [json.loads(line) for line in runner.stats_path.read_text().splitlines()]
    low, high = float(args.jump_baseline), 10.0 * args.jump_baseline
    jumped = next((line for line in lines if (line.get("target_rps") or 0) >= high), None)
    if jumped is None:
        raise RuntimeError("the target never reached ×10: see the stats lines")
    after = [line for line in lines if line["t"] >= jumped["t"] and line.get("target_rps")]
    reached = next((line for line in after if line["rps"] >= 0.9 * high), None)
    seconds_to_90 = reached["t"] - jumped["t"] + 1.0 if reached else None  # a line covers the second before it
    holding = [line for line in after if reached and line["t"] >= reached["t"] + 2]
    error = mean(abs(line["rps"] - high) / high for line in holding) if holding else float("nan")
    rate = mean(line["rps"] for line in holding) if holding else float("nan")
    return Jump(low, high, seconds_to_90, error, rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per throughput run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="connections (wrk) / users (Locust)")
    parser.add_argument("--jump-baseline", type=int, default=8, help="rate before the ×10 jump (default 8/s: 80/s fits a 2-core platform)")
    parser.add_argument("--hold", type=int, default=20, help="seconds held at ×10 (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="Locust workers of the distributed run (default 2)")
    args = parser.parse_args()
    require_wrk()
    try:
        with running_stack() as topology:
            edge = topology.edge_url
            results = [
                run_wrk(edge, args),
                run_locust("plain FastHttpUser", HERE / "locust" / "plain_status.py", "PlainStatusUser", edge, args),
                run_locust("CampaignUser (reads only)", HERE / "locust" / "campaign_status.py", "CampaignStatusUser", edge, args),
                run_locust(f"CampaignUser, {args.workers} workers", HERE / "locust" / "campaign_status.py",
                           "CampaignStatusUser", edge, args, workers=args.workers),
            ]
            jump = run_jump(edge, args, topology.seed.users, topology.seed.merchants)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wrk = results[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs: GET {PATH} through the edge {edge}, "
          f"{args.connections} connections/users, {args.duration}s each")
    print(f"{'generator':<28} {'req/s':>9} {'per worker':>10} {'non-ok':>7} {'CPU s':>7} {'req/CPU-s':>10} "
          f"{'× wrk':>7} {'× plain':>8}")
    plain = results[1]
    for r in results:
        print(f"{r.name:<28} {r.rps:>9.1f} {r.rps / r.processes:>10.1f} {r.non_ok:>7} {r.cpu_seconds:>7.2f} "
              f"{r.per_cpu_second:>10.1f} {r.per_cpu_second / wrk.per_cpu_second:>7.3f} "
              f"{r.per_cpu_second / plain.per_cpu_second:>8.3f}")
    campaign, distributed = results[2], results[3]
    print(f"CampaignUser / plain FastHttpUser per CPU-second: {campaign.per_cpu_second / plain.per_cpu_second:.3f}; "
          f"with {args.workers} workers: {distributed.per_cpu_second / plain.per_cpu_second:.3f} "
          f"({distributed.rps / distributed.processes:.1f} req/s per worker, against {plain.rps:.1f} from one plain process)")
    reached = f"{jump.seconds_to_90:.0f}s" if jump.seconds_to_90 is not None else "never"
    print(f"×10 jump {jump.baseline:.0f}/s → {jump.target:.0f}/s (CampaignUser mix, 1 req/s per user): "
          f"90 % of target after {reached}; holding {jump.hold_rate:.1f}/s, mean rate error {100 * jump.hold_error:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
