"""The Locust side of a load run: CampaignUser, the shape adapter, per-second stats and metrics.

Imported only by Locust processes started by ``paychaos.load.running`` (Locust monkey-patches
the process with gevent). The run is described by the JSON file named in ``PAYCHAOS_LOAD_CONFIG``;
``PAYCHAOS_LOAD_PART`` names this process (``main``, ``master`` or ``worker-N``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import gevent
import locust.runners
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.runners import LocalRunner, MasterRunner, WorkerRunner
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from paychaos.experiments import spec
from paychaos.load import shapes
from paychaos.load.answers import STOPPED, Answer, backoff, judge, parse_retry_after
from paychaos.load.mix import app_cycle
from paychaos.load.running import RELEASE_FILE

CONFIG_ENV = "PAYCHAOS_LOAD_CONFIG"
PART_ENV = "PAYCHAOS_LOAD_PART"
PASS_HEADER = "X-Admission-Pass"
PASS_EXPIRES_HEADER = "X-Admission-Pass-Expires"

# Per-second lines on the master need per-second worker reports (Locust's default is 3 s).
locust.runners.WORKER_REPORT_INTERVAL = 1.0


def _config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else {}


CONFIG = _config()
PART = os.environ.get(PART_ENV, "main")
OUT_DIR = Path(CONFIG["out_dir"]) if CONFIG else None
LOAD = spec.Load.model_validate(CONFIG["load"]) if CONFIG else None
SHAPE = shapes.shape_for(LOAD) if LOAD else None


def record_name(kind: str, part: str) -> str:
    """``acknowledged``, ``refusals`` or ``unanswered``: ``<kind>.jsonl``, or a worker's ``<kind>.<part>.jsonl``."""
    return f"{kind}.jsonl" if part == "main" else f"{kind}.{part}.jsonl"


class ClientRecord:
    """The client-side truth, one JSON line per event flushed at once: every payment the user was
    told is final (``acknowledged``), every request the gateway's admission refused (``refusals``),
    every payment the app gave up on (``unanswered``)."""

    def __init__(self, path: Path | None) -> None:
        self.count = 0
        self.unreported = 0
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8") if path else None

    def write(self, entry: dict[str, Any]) -> None:
        if self._fh is not None:
            # No gevent switch between write and flush: a stopped user cannot leave half a line.
            self._fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._fh.flush()
        self.count += 1
        self.unreported += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _client_record(kind: str) -> ClientRecord:
    """This process's part of a record; a master sends no requests and writes none."""
    return ClientRecord(OUT_DIR / record_name(kind, PART) if OUT_DIR and PART != "master" else None)


ACKS = _client_record("acknowledged")
REFUSALS = _client_record("refusals")
UNANSWERED = _client_record("unanswered")


class CampaignUser(FastHttpUser):
    """A phone in the payment app during a campaign: many status checks, a payment, a balance check.

    One request per task, paced at ``pace`` seconds, so the number of users sets the request rate.
    Each payment is made by a person drawn from the seeded users, who then checks the status and
    the wallet: a campaign's payers are many, each paying a few times. (When one person made all
    of a phone's payments, every person the load drew reached the flash campaign's per-user cap
    within some ten payments, about 20 s into a run: the payments during and after a fault earned
    no cashback, and the cashback checks of those experiments judged none.) The phone, and so
    admission's view of it, stays the same.
    """

    network_timeout = 5.0
    connection_timeout = 2.0
    pace = SHAPE.pace if SHAPE else shapes.DEFAULT_PACE
    cycle: tuple[str, ...] = app_cycle(LOAD.payment_share if LOAD else None)
    app_users = int(CONFIG.get("app_users", 2000))
    merchants = int(CONFIG.get("merchants", 50))
    max_attempts = LOAD.app_attempts if LOAD else 6

    def on_start(self) -> None:
        self.rng = random.Random()
        self.user_id = self.person()
        self.device_id = f"device-{uuid.uuid4().hex[:16]}"  # one phone, stable for the user's life
        self.admission_pass: str | None = None
        self.pass_expires: float | None = None  # when the platform said the pass lapses
        self.not_before = 0.0
        self.step_index = self.rng.randrange(len(self.cycle))  # spread payments across users
        self.next_slot = time.monotonic()

    def person(self) -> str:
        return f"u{self.rng.randint(1, self.app_users):05d}"

    def wait_time(self) -> float:
        # Fixed pacing from the previous slot; a user that fell behind starts afresh (no bursts).
        now = time.monotonic()
        self.next_slot = max(self.next_slot + self.pace, now)
        return self.next_slot - now

    @task
    def step(self) -> None:
        action = self.cycle[self.step_index % len(self.cycle)]
        self.step_index += 1
        if action == "status":
            self.call("GET", f"/v1/campaign/status?user_id={self.user_id}", "GET /v1/campaign/status")
        elif action == "wallet":
            self.call("GET", f"/v1/wallets/{self.user_id}", "GET /v1/wallets/{user_id}")
        else:
            self.pay()

    def wait_turn(self) -> None:
        wait = self.not_before - time.monotonic()
        if wait > 0:  # the platform asked this phone to come back later
            gevent.sleep(wait)

    def call(self, method: str, path: str, name: str, headers: dict[str, str] | None = None, body: Any = None) -> Answer:
        self.wait_turn()
        sent = {"X-Device-Id": self.device_id, "X-User-Id": self.user_id, **(headers or {})}
        if self.admission_pass:
            sent[PASS_HEADER] = self.admission_pass
        with self.client.request(method, path, name=name, headers=sent, json=body, catch_response=True) as r:
            status = r.status_code or 0
            got = r.headers or {}
            if got.get(PASS_HEADER):
                self.admission_pass = got[PASS_HEADER]
                self.pass_expires = _epoch(got.get(PASS_EXPIRES_HEADER))
            retry_after = parse_retry_after(got.get("Retry-After"))
            if retry_after and status in (429, 503):
                self.not_before = time.monotonic() + retry_after
            try:
                parsed = r.json() if status and r.content else None
            except ValueError:
                parsed = None
            answer = Answer(status, parsed if isinstance(parsed, dict) else None, retry_after, got.get("Idempotency-Replayed") == "true")
            if status in (429, 503) and answer.error.get("reason"):
                # Admission refused this phone: recorded with the pass it held, for flow continuity.
                REFUSALS.write({"device": self.device_id, "user": self.user_id, "route": name, "status": status,
                                "reason": answer.error["reason"], "passExpires": self.pass_expires, "at": time.time()})
            # A decline is a correct answer; refusals, errors and timeouts are failures users saw.
            if 200 <= status < 300 or status == 402:
                r.success()
            else:
                code = answer.error.get("code", "")
                r.failure(f"{status} {code}".strip() if status else f"no answer: {r.error!r}")
        return answer

    def pay(self) -> None:
        self.user_id = self.person()
        key = uuid.uuid4().hex
        body = {
            "user_id": self.user_id,
            "merchant_id": f"m{self.rng.randint(1, self.merchants):03d}",
            "amount": self.rng.randint(100, 3000),
            "method": "card" if self.rng.random() < 0.3 else "balance",
        }
        headers = {"Idempotency-Key": key}
        double_tap = LOAD is not None and self.rng.random() < LOAD.double_tap_share
        # The second tap goes out at the same moment as the first, with the same key; it is
        # answered on its own (a replay, or "in progress"), and recorded when final.
        twin = gevent.spawn(self.call, "POST", "/v1/payments", "POST /v1/payments (double tap)", headers, body) if double_tap else None
        self.attempts_sent = 0
        self.first_sent: float | None = None  # when the first attempt went out (wall clock)
        self.tries: list[tuple[float, int]] = []  # each attempt: seconds after the first went out, HTTP status (0: none)
        try:
            self.attempt_payment(key, headers, body, twin, double_tap)
        except gevent.GreenletExit:
            # The load stopped (its stop timeout ran out) while the app was still at it: nothing
            # was promised, but the payment was sent, perhaps more than once. Unrecorded, a
            # payment retried after a late fault vanished from the count of retried payments.
            self.unanswered(key, body, None, STOPPED, self.attempts_sent)
            raise

    def attempt_payment(self, key: str, headers: dict[str, str], body: dict[str, Any], twin: gevent.Greenlet | None,
                        double_tap: bool) -> None:
        """Send the payment until it has a final answer or the app gives up, recording the outcome."""
        for attempt in range(1, self.max_attempts + 1):
            self.wait_turn()
            self.attempts_sent = attempt
            sent = time.time()
            if self.first_sent is None:
                self.first_sent = sent
            answer = self.call("POST", "/v1/payments", "POST /v1/payments", headers, body)
            self.tries.append((round(sent - self.first_sent, 3), answer.status))
            verdict = judge(answer)
            if twin is not None:
                twin.join()
                if judge(twin.value) in ("completed", "declined"):
                    self.acknowledge(key, body, twin.value, judge(twin.value), 1, double_tap)
                twin = None
            if verdict in ("completed", "declined"):
                self.acknowledge(key, body, answer, verdict, attempt, double_tap)
                return
            if verdict == "final" or attempt == self.max_attempts:
                # The app shows "try again later": nothing was promised, but what it tried is recorded.
                self.unanswered(key, body, answer.status, answer.error.get("code"), attempt, gave_up=verdict != "final")
                return
            gevent.sleep(backoff(attempt, answer.retry_after, self.rng))

    def timing(self, attempts: int) -> dict[str, Any]:
        """When the payment's first attempt went out, and for a retried one when each attempt went
        out and what it heard: how long a payment the app had to retry waited for its answer."""
        out: dict[str, Any] = {"firstSent": self.first_sent}
        if attempts > 1:
            out["tries"] = self.tries
        return out

    def unanswered(self, key: str, body: dict[str, Any], status: int | None, code: str | None, attempts: int,
                   gave_up: bool = False) -> None:
        """``gave_up``: the app ran out of attempts while the platform still said "try again"; otherwise
        the platform's answer was final (no money moved) or the load stopped (``code`` STOPPED)."""
        UNANSWERED.write({"key": key, "device": self.device_id, "user": self.user_id, "amount": body["amount"],
                          "method": body["method"], "status": status, "code": code, "attempts": attempts,
                          "gaveUp": gave_up, **self.timing(attempts), "at": time.time()})

    def acknowledge(self, key: str, body: dict[str, Any], answer: Answer, verdict: str, attempts: int, double_tap: bool) -> None:
        ACKS.write({
            "key": key,
            "payment_id": (answer.body or {}).get("payment_id") or answer.error.get("payment_id"),
            "device": self.device_id,
            "user": self.user_id,
            "amount": body["amount"],
            "method": body["method"],
            "status": verdict,
            "code": answer.error.get("code"),
            "attempts": attempts,
            "doubleTap": double_tap,
            **self.timing(attempts),
            "at": time.time(),
        })


def _epoch(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class Release:
    """When a held load's shape starts: the run time at which the engine released it (the
    method start), read from the release file the engine writes. Until then the shape holds at
    its first second: the baseline warm-up."""

    def __init__(self) -> None:
        self.offset: float | None = None if CONFIG.get("held") else 0.0

    def shape_time(self, run_time: float) -> float:
        if self.offset is None and OUT_DIR is not None:
            try:
                at = float(json.loads((OUT_DIR / RELEASE_FILE).read_text(encoding="utf-8"))["at"])
            except (OSError, ValueError, KeyError):
                return 0.0
            self.offset = run_time - (time.time() - at)
        return 0.0 if self.offset is None else max(0.0, run_time - self.offset)


RELEASE = Release()


class CampaignShape(LoadTestShape):
    """Locust's view of the pure shape: it keeps the clock, the shape decides."""

    def tick(self) -> tuple[int, float] | None:
        if SHAPE is None:
            return None
        target = SHAPE.target(RELEASE.shape_time(self.get_run_time()))
        return None if target is None else (target.users, target.spawn_rate)


# -- the master (or the single local process): per-second stats and Prometheus metrics -----------


def _percentile(hist: dict[int, int], total: int, q: float) -> float | None:
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def _entries(environment: Environment) -> Iterator[Any]:
    assert environment.runner is not None
    yield from environment.runner.stats.entries.values()


class StatsLines:
    """Every second, what changed since the last second, as one JSON line."""

    def __init__(self, environment: Environment, path: Path) -> None:
        self.env = environment
        self.fh = open(path, "a", encoding="utf-8")
        self.acknowledged = 0
        self.started = time.monotonic()
        self.last_t = 0.0
        self.last_counts: dict[str, tuple[int, int]] = {}
        self.last_hist: dict[int, int] = {}

    def line(self, final: bool = False) -> dict[str, Any]:
        assert self.env.runner is not None
        t = time.monotonic() - self.started
        counts = {e.name: (e.num_requests, e.num_failures) for e in _entries(self.env)}
        hist = dict(self.env.runner.stats.total.response_times)
        delta_hist = {k: v - self.last_hist.get(k, 0) for k, v in hist.items() if v - self.last_hist.get(k, 0) > 0}
        per_name = {
            name: {"count": n - self.last_counts.get(name, (0, 0))[0], "failures": f - self.last_counts.get(name, (0, 0))[1]}
            for name, (n, f) in counts.items()
        }
        requests = sum(v["count"] for v in per_name.values())
        failures = sum(v["failures"] for v in per_name.values())
        dt = max(t - self.last_t, 1e-6)
        target = SHAPE.rate(RELEASE.shape_time(self.env.shape_class.get_run_time())) if SHAPE and self.env.shape_class else None
        out = {
            "t": round(t, 2),
            "at": time.time(),
            "users": self.env.runner.user_count,
            "target_rps": round(target, 2) if target is not None else None,
            "rps": round(requests / dt, 2),
            "fail_ratio": round(failures / requests, 4) if requests else 0.0,
            "p50": _percentile(delta_hist, requests, 0.50),
            "p95": _percentile(delta_hist, requests, 0.95),
            "p99": _percentile(delta_hist, requests, 0.99),
            "requests": per_name,
            "acknowledged": self.acknowledged + (ACKS.count if PART == "main" else 0),
        }
        if final:
            out["final"] = True
        self.last_t, self.last_counts, self.last_hist = t, counts, hist
        return out

    def write(self, final: bool = False) -> None:
        self.fh.write(json.dumps(self.line(final), separators=(",", ":")) + "\n")
        self.fh.flush()

    def loop(self) -> None:
        while True:
            gevent.sleep(1.0 - (time.monotonic() - self.started) % 1.0)
            self.write()


class StatsCollector:
    """Client-side metrics for Prometheus, read from Locust's own (merged, on a master) stats."""

    def __init__(self, environment: Environment, lines: StatsLines) -> None:
        self.env = environment
        self.lines = lines

    def collect(self) -> Iterator[Any]:
        assert self.env.runner is not None
        requests = CounterMetricFamily("paychaos_load_requests", "Requests sent by the load generator", labels=["name"])
        failures = CounterMetricFamily("paychaos_load_failures", "Requests users saw fail (errors, refusals, timeouts)", labels=["name"])
        latency = HistogramMetricFamily("paychaos_load_latency_seconds", "Latency seen by the load generator", labels=["name"])
        bounds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
        for e in _entries(self.env):
            requests.add_metric([e.name], e.num_requests)
            failures.add_metric([e.name], e.num_failures)
            buckets, seen = [], 0
            ordered = sorted(e.response_times.items())
            i = 0
            for bound in bounds:
                while i < len(ordered) and ordered[i][0] / 1000 <= bound:
                    seen += ordered[i][1]
                    i += 1
                buckets.append((str(bound), seen))
            buckets.append(("+Inf", e.num_requests))
            latency.add_metric([e.name], buckets, e.total_response_time / 1000)
        yield requests
        yield failures
        yield latency
        yield GaugeMetricFamily("paychaos_load_users", "Simulated users running", value=self.env.runner.user_count)
        target = SHAPE.rate(RELEASE.shape_time(self.env.shape_class.get_run_time())) if SHAPE and self.env.shape_class else None
        yield GaugeMetricFamily("paychaos_load_target_rps", "Request rate the load shape asks for", value=target or 0.0)
        acked = CounterMetricFamily("paychaos_load_acknowledged_payments", "Payments users were told are final")
        acked.add_metric([], self.lines.acknowledged + (ACKS.count if PART == "main" else 0))
        yield acked


LINES: StatsLines | None = None


# The paychaos process that started this one. If it dies without stopping us (kill -9, a crash),
# nobody else would: the load would go on hammering the stack after the run is over.
PARENT = os.getppid()


def _stop_when_orphaned() -> None:
    while os.getppid() == PARENT:
        gevent.sleep(1.0)
    # The same clean stop as `paychaos` sends: users stop, the last lines and records are flushed.
    os.kill(os.getpid(), signal.SIGTERM)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    global LINES
    if OUT_DIR is None or environment.runner is None:
        return
    gevent.spawn(_stop_when_orphaned)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            data["paychaos_acknowledged"] = ACKS.unreported
            ACKS.unreported = 0

        events.report_to_master.add_listener(report)
        return
    if not isinstance(runner, (LocalRunner, MasterRunner)):
        return
    LINES = StatsLines(environment, OUT_DIR / "stats.jsonl")
    if isinstance(runner, MasterRunner):

        def collect(client_id: str, data: dict[str, Any]) -> None:
            assert LINES is not None
            LINES.acknowledged += int(data.get("paychaos_acknowledged", 0))

        events.worker_report.add_listener(collect)
    gevent.spawn(LINES.loop)
    port = CONFIG.get("metrics_port")
    if port:
        registry = CollectorRegistry()
        registry.register(StatsCollector(environment, LINES))  # type: ignore[arg-type]
        start_http_server(int(port), addr="127.0.0.1", registry=registry)


class Tally:
    """What this process's users did, kept apart from Locust's stats (a worker resets those on each report)."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, int] = {}

    def add(self, name: str, response_time: float, exception: BaseException | None) -> None:
        entry = self.requests.setdefault(name, {"count": 0, "failures": 0, "response_times": {}})
        entry["count"] += 1
        # Rounded as Locust does, so histograms from many workers add up to the same percentiles.
        ms = int(round(response_time))
        rounded = ms if ms < 100 else round(ms, -1) if ms < 1000 else round(ms, -2)
        entry["response_times"][str(rounded)] = entry["response_times"].get(str(rounded), 0) + 1
        if exception is not None:
            entry["failures"] += 1
            key = f"{name}: {exception}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def totals(self) -> dict[str, Any]:
        return {"part": PART, "acknowledged": ACKS.count, "requests": self.requests, "failures": self.errors}


TALLY = Tally()


@events.request.add_listener
def _on_request(name: str, response_time: float, exception: BaseException | None = None, **_: Any) -> None:
    TALLY.add(name, response_time, exception)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    if OUT_DIR is None or isinstance(environment.runner, MasterRunner):
        return
    # Written once the users have stopped, so no payment of this process is missing from the sums.
    tmp = OUT_DIR / f".totals.{PART}.json"
    tmp.write_text(json.dumps(TALLY.totals()), encoding="utf-8")
    tmp.replace(OUT_DIR / f"totals.{PART}.json")


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    # On a master this runs after Locust's short wait for the workers' last reports; the
    # authoritative totals are still the workers' own (summed by the parent).
    if LINES is not None:
        LINES.write(final=True)
    ACKS.close()
    REFUSALS.close()
    UNANSWERED.close()
