"""The load generator against the real platform: what it acknowledged is in the ledger, exactly once."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from paychaos.experiments.spec import Load
from paychaos.load.running import LoadRunner, read_records
from paychaos.probes.invariants import check_invariants, engine_for
from paychaos.probes.judging import judge_payments_answered

from .conftest import CATALOGUE, Stack

pytestmark = pytest.mark.integration


def run(stack: Stack, out: Path, seconds: int, rps: int, workers: int = 0, during: Any = None,
        **load: Any) -> tuple[LoadRunner, dict[str, Any]]:
    seed = stack.topology.seed
    runner = LoadRunner(stack.edge, Load(profile="steady", baseline_rps=rps, duration=f"{seconds}s", **load), out,
                        workers=workers, app_users=seed.users, merchants=seed.merchants)
    runner.start()
    if during is not None:
        during(runner)
    return runner, runner.wait(timeout=seconds + 60)


def assert_every_acknowledged_payment_is_in_the_ledger_once(stack: Stack, records: list[dict[str, Any]]) -> None:
    # Both taps of a double tap may be answered: the same payment, told twice.
    keys = Counter(r["key"] for r in records if not r.get("doubleTap"))
    assert not [k for k, n in keys.items() if n > 1], "a payment was acknowledged twice"
    taps: dict[str, set[str]] = {}
    for r in records:
        taps.setdefault(r["key"], set()).add(r["payment_id"])
    assert all(len(ids) == 1 for ids in taps.values()), "one key was answered with two payments"
    completed = [r["payment_id"] for r in records if r["status"] == "completed"]
    assert completed, "no payment completed during the run"
    settled = dict(stack.sql(
        "SELECT payment_id, count(*) FROM ledger.transfers WHERE id = ANY(%s) GROUP BY payment_id",
        [f"pay:{pid}:settle" for pid in completed],
    ))
    missing = [pid for pid in completed if settled.get(pid) != 1]
    assert not missing, f"{len(missing)} acknowledged payments not settled exactly once, e.g. {missing[:3]}"
    refunded = stack.scalar("SELECT count(*) FROM ledger.transfers WHERE id = ANY(%s)", [f"pay:{pid}:refund" for pid in completed])
    assert refunded == 0, "an acknowledged payment was refunded"
    rows = dict(stack.sql("SELECT id, status FROM payment.payments WHERE id = ANY(%s)", completed))
    assert all(rows.get(pid) == "completed" for pid in completed)
    by_key = dict(stack.sql("SELECT idempotency_key, id FROM payment.payments WHERE idempotency_key = ANY(%s)", [r["key"] for r in records]))
    assert all(by_key.get(r["key"]) == r["payment_id"] for r in records), "a record names another payment than its key's"


def test_a_steady_run_writes_per_second_stats_and_an_acknowledged_record(stack: Stack, tmp_path: Path) -> None:
    runner, summary = run(stack, tmp_path, seconds=12, rps=40)
    lines = [json.loads(line) for line in runner.stats_path.read_text().splitlines()]
    assert len(lines) >= 8
    busy = [line for line in lines if line["rps"] > 0]
    assert busy and {"t", "users", "rps", "fail_ratio", "p50", "p95", "p99", "requests"} <= set(busy[0])
    assert "POST /v1/payments" in busy[-1]["requests"] and "GET /v1/campaign/status" in busy[-1]["requests"]
    assert runner.latest() == lines[-1]
    records = read_records(runner.acknowledged_path)
    assert summary["acknowledged"] == len(records) > 0
    assert summary["parts"] == 1 and summary["requests"] > 0
    # About ten campaign reads per payment, like the app.
    by_name = summary["by_name"]
    assert by_name["GET /v1/campaign/status"]["count"] > 4 * by_name["POST /v1/payments"]["count"]
    assert {"key", "payment_id", "user", "amount", "method", "status", "at"} <= set(records[0])
    assert_every_acknowledged_payment_is_in_the_ledger_once(stack, records)


def test_double_taps_send_one_key_twice_at_once_and_are_charged_once(stack: Stack, tmp_path: Path) -> None:
    runner, summary = run(stack, tmp_path, seconds=10, rps=20, payment_share=0.5, double_tap_share=1.0)
    records = read_records(runner.acknowledged_path)
    tapped = [r for r in records if r["doubleTap"]]
    assert tapped and len(tapped) == len(records), "every payment of this run is double-tapped"
    # A phone pays as a new person each time (as a campaign's crowd of payers, where a phone that
    # paid as one person would reach the flash campaign's per-user cap within some ten payments).
    payers: dict[str, set[str]] = {}
    for r in records:
        payers.setdefault(r["device"], set()).add(r["user"])
    busy = {device: users for device, users in payers.items() if sum(r["device"] == device for r in records) >= 3}
    assert busy and all(len(users) > 1 for users in busy.values()), payers
    assert len({r["user"] for r in records}) > len(payers)
    assert summary["by_name"]["POST /v1/payments (double tap)"]["count"] > 0
    assert_every_acknowledged_payment_is_in_the_ledger_once(stack, records)
    engine = engine_for(stack.topology.postgres_dsn)
    try:
        acknowledged = {(r["key"], r["payment_id"], r["user"], r["amount"]) for r in records if r["status"] == "completed"}
        (charged,) = check_invariants(engine, {"acknowledged-charged-once": CATALOGUE.invariant("acknowledged-charged-once")},
                                      sorted(acknowledged))
    finally:
        engine.dispose()
    assert charged.holds, charged


def test_acknowledged_payments_survive_a_payment_replica_killed_mid_run(stack: Stack, tmp_path: Path) -> None:
    victim = stack.state().process("payment-az-a-1")
    assert victim is not None and victim.pid
    restarts = victim.restarts

    def kill_mid_run(runner: LoadRunner) -> None:
        stack.wait_for("load under way", lambda: (runner.latest() or {}).get("rps", 0) > 0, timeout=30)
        time.sleep(3)
        os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]

    runner, summary = run(stack, tmp_path, seconds=16, rps=40, during=kill_mid_run)
    records = read_records(runner.acknowledged_path)
    assert summary["acknowledged"] == len(records) > 0
    assert_every_acknowledged_payment_is_in_the_ledger_once(stack, records)
    stack.wait_for(
        "the supervisor to restart the killed replica",
        lambda: (p := stack.state().process("payment-az-a-1")) is not None and p.restarts > restarts and p.ready,
        timeout=60,
    )


def test_a_distributed_run_merges_every_workers_record(stack: Stack, tmp_path: Path) -> None:
    runner, summary = run(stack, tmp_path, seconds=10, rps=30, workers=2)
    parts = sorted(tmp_path.glob("acknowledged.worker-*.jsonl"))
    assert [p.name for p in parts] == ["acknowledged.worker-1.jsonl", "acknowledged.worker-2.jsonl"]
    per_worker = [read_records(p) for p in parts]
    merged = read_records(runner.acknowledged_path)
    assert all(per_worker) and len(merged) == sum(map(len, per_worker)) == summary["acknowledged"]
    assert [r["at"] for r in merged] == sorted(r["at"] for r in merged)
    assert summary["parts"] == 2 and "warning" not in summary
    worker_requests = sum(
        entry["count"] for p in tmp_path.glob("totals.worker-*.json") for entry in json.loads(p.read_text())["requests"].values()
    )
    assert summary["requests"] == worker_requests > 0
    assert any(line["rps"] > 0 for line in map(json.loads, runner.stats_path.read_text().splitlines()))
    assert_every_acknowledged_payment_is_in_the_ledger_once(stack, merged)


def test_the_cli_runs_a_short_load_and_prints_a_json_summary(stack: Stack, tmp_path: Path) -> None:
    result = stack.cli("load", "steady", "--duration", "4s", "--rps", "10", "--out", str(tmp_path), "--json", timeout=90)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["requests"] > 0 and (tmp_path / "stats.jsonl").exists()
    bad = stack.cli("load", "replay", "--duration", "4s", timeout=30)
    assert bad.returncode != 0 and "trace" in bad.stderr and "Traceback" not in bad.stderr


class _AlwaysInProgress(http.server.BaseHTTPRequestHandler):
    """A platform whose every payment stays "in progress": the app retries it until it gives up."""

    keys: ClassVar[set[str]] = set()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.keys.add(self.headers["Idempotency-Key"])
        body = json.dumps({"error": {"code": "PAYMENT_IN_PROGRESS"}}).encode()
        self.send_response(409)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Retry-After", "3")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_payment_still_being_retried_when_the_load_stops_is_recorded_unanswered(tmp_path: Path) -> None:
    # Each payment retries for some 15 s (six attempts, 3 s apart at least), longer than the 5 s
    # the load's stop timeout leaves it after a 3 s run: every payment is cut off mid-retry.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysInProgress)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        runner = LoadRunner(f"http://127.0.0.1:{server.server_address[1]}",
                            Load(profile="steady", baseline_rps=10, duration="3s", payment_share=1.0), tmp_path,
                            app_users=50, merchants=5)
        runner.start()
        runner.wait(timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    unanswered = read_records(runner.unanswered_path)
    assert not read_records(runner.acknowledged_path)
    # Every payment the platform saw is in the record, once: none vanished with the load's stop.
    keys = [r["key"] for r in unanswered]
    assert len(keys) == len(set(keys)) and _AlwaysInProgress.keys <= set(keys), (len(keys), len(_AlwaysInProgress.keys))
    assert {r["code"] for r in unanswered} == {"LOAD_STOPPED"} and all(r["status"] is None for r in unanswered), unanswered
    # Sent again and again, then stopped: retried payments, as the exercise counts them.
    retried = [r for r in unanswered if r["attempts"] > 1]
    assert len(retried) >= len(_AlwaysInProgress.keys) // 2, unanswered
    # Each with when its first attempt went out, and when every attempt went out and what it heard
    # (the last may have been cut off by the stop), the app's Retry-After of 3 s apart.
    for r in retried:
        offsets, statuses = [t for t, _ in r["tries"]], {s for _, s in r["tries"]}
        assert r["firstSent"] < r["at"] and statuses == {409} and len(offsets) in (r["attempts"] - 1, r["attempts"]), r
        assert offsets[0] == 0 and all(b - a >= 3 for a, b in zip(offsets, offsets[1:])), r
    # Unanswered 5 s or more after the first attempt (the stop timeout after a 3 s run): late.
    late = judge_payments_answered([], unanswered, 2.0, "after")
    assert late.verdict == "failed" and late.evidence["payments"] == len(unanswered), late
