"""Throughput of the reference platform through the edge, measured with wrk.

Campaign-status reads/s and payments/s end to end, each beside a baseline measured in the same
run: the gateway's trivial `GET /health/live` through the same edge (HAProxy → uvicorn/Starlette).
Uses the stack in the default run dir, or starts one (and stops it afterwards).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


from _stack import require_wrk, running_stack  # the benchmarks folder is on sys.path when run as a script

LUA = Path(__file__).resolve().parent / "wrk"
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


def run_wrk(
    name: str, url: str, args: argparse.Namespace, script: str | None = None, script_args: list[str] | None = None
) -> WrkResult:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency", f"--timeout={args.timeout}s"]
    if script:
        cmd += ["-s", str(LUA / script)]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.duration + args.timeout + 30)
    if out.returncode != 0:
        raise WrkOutputError(f"wrk exited {out.returncode} for {name}: {out.stderr.strip() or out.stdout.strip()}")
    return parse_wrk(name, out.stdout)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--timeout", type=int, default=10, help="wrk request timeout in seconds")
    args = parser.parse_args()
    require_wrk()
    try:
        with running_stack() as topology:
            edge = topology.edge_url
            users, merchants = str(topology.seed.users), str(topology.seed.merchants)
            # A short warm-up so the replicas' connection pools and caches are warm before measuring.
            warm = argparse.Namespace(**{**vars(args), "duration": 2})
            run_wrk("warm-up", f"{edge}/v1/campaign/status", warm, "campaign_status.lua", [users])
            baseline = run_wrk("baseline GET /health/live (gateway)", f"{edge}/health/live", args)
            reads = run_wrk("GET /v1/campaign/status", f"{edge}/v1/campaign/status", args, "campaign_status.lua", [users])
            payments = run_wrk(
                "POST /v1/payments (¾ balance, ¼ card)", f"{edge}/v1/payments", args,
                "payments.lua", [f"bench-{uuid.uuid4().hex[:12]}", users, merchants],
            )
    except WrkOutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs: "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency through the edge {edge}"
    )
    print_table(baseline, [reads, payments])
    return 0


if __name__ == "__main__":
    sys.exit(main())
