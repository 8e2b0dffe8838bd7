"""Throughput of the reference platform through the edge, measured with wrk.

Campaign-status reads/s and payments/s end to end, each beside a baseline measured in the same
run: the gateway's trivial `GET /health/live` through the same edge (HAProxy → uvicorn/Starlette).
Also: CPU ms per request by part of the stack (the profile of a request by hop), what
PostgreSQL spent its time on and waited for (benchmarks/_database.py), how soon a payment shows
in its user's campaign status, and every money invariant after the runs (exit 1 if one is
violated). Uses the stack in the default run dir, or starts one (and stops it
afterwards); `--replicas N` starts one with N replicas per zone of every service.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median


import httpx
import psutil
import psycopg
import yaml
from _database import DatabaseProfile, DatabaseReport, print_database  # the benchmarks folder is on sys.path
from _stack import require_wrk, running_stack  # when run as a script

from paychaos.platform.runtime.paths import RunDir
from paychaos.probes.catalogue import load_catalogue
from paychaos.probes.invariants import Acknowledged, InvariantResult, check_invariants, engine_for
from paychaos.probes.prometheus import Prometheus
from paychaos.platform.runtime.state import read_state
from paychaos.platform.topology import Topology, default_topology_path

LUA = Path(__file__).resolve().parent / "wrk"
ROOT = Path(__file__).resolve().parents[1]
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    name: str
    requests: int
    seconds: float
    rps: float
    percentiles_ms: dict[int, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    status_codes: dict[str, int] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # by part of the stack, during the run
    drain_seconds: float = 0.0  # after wrk ended, until the outbox and the campaign consumer caught up
    database: DatabaseReport | None = None  # what PostgreSQL did over the same span


class WrkOutputError(Exception):
    """wrk printed something this parser does not understand; the message carries the output."""


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk(name: str, text: str) -> WrkResult:
    """Read wrk's text report (run with --latency); fail loudly on a missing field."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    dist = re.search(r"Latency Distribution\n((?:[ \t]+\d+(?:\.\d+)?%[ \t]+[\d.]+(?:us|ms|s|m|h)[ \t]*\n)+)", text)
    if not (total and rps and dist):
        raise WrkOutputError(f"could not read the {name} wrk report:\n{text}")
    percentiles = {
        int(float(p)): _ms(v, u)
        for p, v, u in re.findall(r"(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)", dist.group(1))
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    codes = re.search(r"^status-codes:(.*)$", text, re.M)
    return WrkResult(
        name=name,
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1e3,
        rps=float(rps.group(1)),
        percentiles_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=(
            dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()))) if sockets else {}
        ),
        status_codes={k: int(v) for k, v in (part.split("=", 1) for part in codes.group(1).split())} if codes else {},
    )


class CpuMeter:
    """CPU seconds each part of the stack spent, summed over a process and its children (a
    PostgreSQL backend is a child of the postmaster), per service for the replicas and per kind
    for the rest (haproxy, postgres, kafka, toxiproxy, prometheus): where a request's cost goes."""

    def __init__(self, run_dir: RunDir) -> None:
        self.parts: list[tuple[str, psutil.Process]] = []
        state = read_state(run_dir)
        for p in state.processes if state else []:
            if p.pid is None:
                continue
            part = p.name.split("-", 1)[0] if p.kind == "service" else p.kind
            try:
                self.parts.append((part, psutil.Process(p.pid)))
            except psutil.Error:
                continue

    def sample(self) -> dict[str, float]:
        """CPU seconds so far by part: each process, its live children, and the children it has
        reaped (a PostgreSQL backend or autovacuum worker that exited between samples)."""
        totals: dict[str, float] = {}
        for part, proc in self.parts:
            try:
                procs = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            for q in procs:
                try:
                    t = q.cpu_times()
                except psutil.Error:
                    continue
                totals[part] = totals.get(part, 0.0) + t.user + t.system + t.children_user + t.children_system
        return totals


def drain(prometheus_url: str, limit: float = 60.0) -> float:
    """Seconds until the work a run left queued is done (outbox rows unsent, events the campaign
    consumer has not applied, both as Prometheus last scraped them); at most ``limit``."""
    started = time.monotonic()
    with Prometheus(prometheus_url) as prometheus:
        while time.monotonic() - started < limit:
            if not any(prometheus.scalar(q) for q in ("sum(outbox_backlog)", "sum(campaign_consumer_lag)")):
                break
            time.sleep(1.0)
    return time.monotonic() - started


CASHBACK_SQL = (
    "SELECT (SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback'),"
    " (SELECT coalesce(sum(balance), 0) FROM ledger.accounts WHERE kind = 'budget')"
)


def cashback_state(dsn: str) -> tuple[int, int]:
    """Cashback transfers booked so far, and yen left in the campaign budgets."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        booked, left = conn.execute(CASHBACK_SQL).fetchone()
    return int(booked), int(left)


def run_wrk(
    name: str, url: str, args: argparse.Namespace, script: str | None = None, script_args: list[str] | None = None,
    meter: CpuMeter | None = None, prometheus_url: str | None = None, database: DatabaseProfile | None = None,
) -> WrkResult:
    """One wrk run. With ``meter``, the CPU each part spent from its start until the work it left
    queued is done (waited for through ``prometheus_url``): what its requests cost, background
    work included. With ``database``, what PostgreSQL did over the same span."""
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", f"--timeout={args.timeout}s"]
    if script:
        cmd += ["-s", str(LUA / script)]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    before = meter.sample() if meter else {}
    if database:
        database.start()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.duration + args.timeout + 30)
        if out.returncode != 0:
            raise WrkOutputError(f"wrk exited {out.returncode} for {name}: {out.stderr.strip() or out.stdout.strip()}")
        result = parse_wrk(name, out.stdout)
        if meter:
            if prometheus_url:
                result.drain_seconds = drain(prometheus_url)
            after = meter.sample()
            result.cpu_seconds = {k: after[k] - before.get(k, 0.0) for k in after}
    finally:
        report = database.stop() if database else None
    result.database = report
    return result


def _row(result: WrkResult, baseline: WrkResult | None) -> str:
    p = result.percentiles_ms
    errors = sum(result.socket_errors.values())
    ratio = f"{result.rps / baseline.rps:6.3f}" if baseline and baseline.rps else "     —"
    return (
        f"{result.name:<38} {result.rps:>10.1f} {p.get(50, float('nan')):>9.1f} {p.get(99, float('nan')):>9.1f} "
        f"{result.non_2xx:>8} {errors:>7} {ratio:>9}"
    )


def print_table(baseline: WrkResult, results: list[WrkResult]) -> None:
    print(f"{'benchmark':<38} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} {'sockerr':>7} {'× base':>9}")
    print(_row(baseline, None))
    for r in results:
        print(_row(r, baseline))
    for r in results:
        if r.status_codes:
            codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.status_codes.items()))
            print(f"  {r.name} status codes — {codes}")
    for r in (baseline, *results):
        if r.socket_errors and any(r.socket_errors.values()):
            print(f"  {r.name} socket errors — {r.socket_errors}")
    print_cpu((baseline, *results))
    for r in results:
        if r.database:
            print()
            print_database(r.name, r.database, r.requests)


def print_cashback(payments: WrkResult, before: tuple[int, int], after: tuple[int, int]) -> None:
    """How many of the run's payments cost a cashback too: a spent budget or users at their cap
    make a payment cheaper than a campaign's, and the figures above say so only here."""
    booked, left = after[0] - before[0], after[1]
    share = booked / payments.requests if payments.requests else 0.0
    print()
    print(f"cashback during {payments.name}: {booked} transfers booked for {payments.requests} payments "
          f"({share:.2f} a payment), ¥{left:,} left in the budget")
    if share < 0.5:
        print("  WARNING: most payments earned no cashback (budget spent or users at their cap): this stack "
              "measures a payment without its campaign work; stop it and let the benchmark start a fresh one")


def print_cpu(results: tuple[WrkResult, ...]) -> None:
    """CPU milliseconds per request by part of the stack: the profile of one request, by hop."""
    parts = sorted({k for r in results for k in r.cpu_seconds}, key=lambda k: -max(r.cpu_seconds.get(k, 0) for r in results))
    if not parts:
        return
    print()
    print("CPU ms per request by part of the stack (each run, then until the outbox and the campaign consumer "
          "caught up: " + ", ".join(f"{r.name.split(' (')[0]} {r.drain_seconds:.1f} s" for r in results) + ")")
    print(f"{'part':<12}" + "".join(f"{r.name[:24]:>26}" for r in results))
    for part in [*parts, "total"]:
        cells = []
        for r in results:
            seconds = sum(r.cpu_seconds.values()) if part == "total" else r.cpu_seconds.get(part, 0.0)
            cells.append(f"{1e3 * seconds / r.requests:>26.3f}" if r.requests else f"{'—':>26}")
        print(f"{part:<12}" + "".join(cells))


class Freshness(threading.Thread):
    """While payments run, pays ¥100 now and then for one user the load leaves alone, and times
    how long after the 201 the user's campaign status first shows it: the read model's lag,
    payment → outbox → Kafka → campaign aggregates → status read."""

    def __init__(self, edge: str, user: str, label: str, every: float = 0.5, give_up: float = 10.0) -> None:
        super().__init__(daemon=True)
        self.edge, self.user, self.label, self.every, self.give_up = edge, user, label, every, give_up
        self.lags: list[float] = []
        self.missed = 0
        self.errors: list[str] = []
        self.acknowledged: list[Acknowledged] = []  # (key, payment id, user, yen) of each 201
        self.stop = threading.Event()

    def _value(self, client: httpx.Client) -> int:
        r = client.get("/v1/campaign/status", params={"user_id": self.user}, headers={"X-Device-Id": f"device-{self.user}"})
        r.raise_for_status()
        return int(r.json()["step"]["value"])

    def run(self) -> None:
        with httpx.Client(base_url=self.edge, timeout=5) as client:
            while not self.stop.wait(self.every):
                try:
                    self._probe(client)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def _probe(self, client: httpx.Client) -> None:
        before = self._value(client)
        key = uuid.uuid4().hex
        r = client.post("/v1/payments", json={"user_id": self.user, "merchant_id": "m001", "amount": 100, "method": "balance"},
                        headers={"Idempotency-Key": key, "X-Device-Id": f"device-{self.user}"})
        if r.status_code != 201:
            self.errors.append(f"payment answered {r.status_code}")
            return
        paid = time.perf_counter()
        self.acknowledged.append((key, r.json()["payment_id"], self.user, 100))
        while self._value(client) < before + 100:
            if self.stop.is_set():
                return  # the load ended while this one was on its way: its lag is not the load's
            if time.perf_counter() - paid > self.give_up:
                self.missed += 1
                return
            time.sleep(0.01)
        self.lags.append(time.perf_counter() - paid)

    def report(self) -> str:
        errors = f"; {len(self.errors)} probes failed, e.g. {self.errors[0]}" if self.errors else ""
        if not self.lags:
            return f"status freshness {self.label}: no payment seen in the status ({self.missed} missed{errors})"
        lags = sorted(self.lags)
        return (f"status freshness {self.label}: a payment shows in the user's status "
                f"p50 {1e3 * median(lags):.0f} ms, max {1e3 * lags[-1]:.0f} ms after its 201 "
                f"({len(lags)} payments, {self.missed} not seen within {self.give_up:.0f} s{errors})")


#: How long the invariants may take to hold after the load: the read models catch up with the
#: ledger asynchronously, and experiments give them the same bound.
SETTLE_SECONDS = 60.0


def check_money(topology: Topology, acknowledged: list[Acknowledged]) -> tuple[list[InvariantResult], float]:
    """Every invariant of the catalogue, again every 2 s until all hold or SETTLE_SECONDS pass;
    the last results and the seconds it took. The acknowledged-* invariants judge
    ``acknowledged``: the freshness probe's payments (wrk keeps no record of its own)."""
    catalogue = load_catalogue(ROOT / "probes")
    engine = engine_for(topology.postgres_dsn)
    started = time.monotonic()
    try:
        while True:
            results = check_invariants(engine, dict(catalogue.invariants), acknowledged)
            if all(r.holds for r in results) or time.monotonic() - started > SETTLE_SECONDS:
                return results, time.monotonic() - started
            time.sleep(2)
    finally:
        engine.dispose()


def print_money(results: list[InvariantResult], seconds: float, acknowledged: int) -> None:
    held = [r.name for r in results if r.holds]
    print(f"invariants after the runs: {len(held)}/{len(results)} hold, checked for {seconds:.1f} s "
          f"(at most {SETTLE_SECONDS:.0f} s for the read models to catch up); the acknowledged-* ones over the "
          f"{acknowledged} payments the freshness probe was acknowledged for (wrk records none)")
    for r in results:
        if not r.holds:
            print(f"  VIOLATED {r.name}: {r.violations} rows, e.g. {r.sample[:2]}")


def replicas_per_zone(topology: Topology) -> str:
    counts = sorted({s.replicas_per_zone for s in topology.services.values()})
    return "/".join(map(str, counts))


def scaled_topology(replicas: int) -> Path:
    """The default topology with ``replicas`` per zone of every service, as a file for `stack up`."""
    data = yaml.safe_load(default_topology_path().read_text(encoding="utf-8"))
    for service in data["services"].values():
        service["replicasPerZone"] = replicas
    path = Path(tempfile.mkdtemp(prefix="paychaos-bench-")) / f"topology-{replicas}-per-zone.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=int, default=10, help="wrk request timeout in seconds")
    parser.add_argument("--replicas", type=int, metavar="N",
                        help="start a stack with N replicas per zone of every service (none may be running)")
    args = parser.parse_args()
    require_wrk()
    topology_path = scaled_topology(args.replicas) if args.replicas else None
    try:
        with running_stack(topology_path) as topology:
            meter = CpuMeter(RunDir.default())
            database = DatabaseProfile(topology.postgres_dsn)
            edge = topology.edge_url
            users, merchants = str(topology.seed.users), str(topology.seed.merchants)
            # A short warm-up so the replicas' connection pools and caches are warm before measuring.
            warm = argparse.Namespace(**{**vars(args), "duration": 2})
            run_wrk("warm-up", f"{edge}/v1/campaign/status", warm, "campaign_status.lua", [users])
            baseline = run_wrk("baseline GET /health/live (gateway)", f"{edge}/health/live", args, meter=meter)
            reads = run_wrk("GET /v1/campaign/status", f"{edge}/v1/campaign/status", args, "campaign_status.lua", [users],
                            meter=meter, database=database)
            pay_args = [str(topology.seed.users - 1), merchants]  # the last user is the freshness probe's
            cashback_before = cashback_state(topology.postgres_dsn)
            payments = run_wrk(
                "POST /v1/payments (¾ balance, ¼ card)", f"{edge}/v1/payments", args,
                "payments.lua", [f"bench-{uuid.uuid4().hex[:12]}", *pay_args], meter=meter,
                prometheus_url=topology.prometheus_url, database=database,
            )
            cashback_after = cashback_state(topology.postgres_dsn)
            # Freshness apart from the measured runs: its status polls would count as their CPU.
            # The last seeded user is left out of the load: its status changes only by the probe's payments.
            probe_user = f"u{topology.seed.users:05d}"
            idle = Freshness(edge, probe_user, "with no other load", every=0.2)
            idle.start()
            time.sleep(args.duration)
            idle.stop.set()
            idle.join()
            freshness = Freshness(edge, probe_user, "under the payments load")
            freshness.start()
            run_wrk("payments beside the freshness probe", f"{edge}/v1/payments", args,
                    "payments.lua", [f"bench-{uuid.uuid4().hex[:12]}", *pay_args])
            freshness.stop.set()
            freshness.join()
            acknowledged = [*idle.acknowledged, *freshness.acknowledged]
            money, settled = check_money(topology, acknowledged)
    except WrkOutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs: "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency through the edge {edge}, "
        f"{replicas_per_zone(topology)} replicas per zone"
    )
    print_table(baseline, [reads, payments])
    print_cashback(payments, cashback_before, cashback_after)
    print(idle.report())
    print(freshness.report())
    print_money(money, settled, len(acknowledged))
    # Not one acknowledged payment to judge is a money check that saw nothing: not a pass.
    return 0 if acknowledged and all(r.holds for r in money) else 1


if __name__ == "__main__":
    sys.exit(main())
