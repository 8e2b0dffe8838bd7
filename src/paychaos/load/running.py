"""Run Locust headless in child processes and read back what it saw, without importing Locust here.

Locust monkey-patches the whole process with gevent on import, which breaks urllib3, kubernetes
and chaoslib if they were imported first; so the engine only ever starts ``locust`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from paychaos.experiments import spec
from paychaos.load import shapes

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")


RELEASE_FILE = "release.json"


class LoadError(Exception):
    """The load generator could not start or died; the message says why and where its log is."""


# The client-side records the locustfile writes (one part per worker, merged when the load stops).
CLIENT_RECORDS = ("acknowledged", "refusals", "unanswered")


class LoadRunner:
    """Locust in a child process (or a master and ``workers`` local worker processes).

    Files in ``out_dir``: ``stats.jsonl`` (one line per second), ``acknowledged.jsonl`` (every
    payment users were told is final), ``refusals.jsonl`` (every request admission refused),
    ``unanswered.jsonl`` (every payment the app gave up on, or was still retrying when the load stopped: code LOAD_STOPPED),
    ``summary.json`` (totals, written when the run ends) and
    one ``locust-<part>.log`` per process.
    """

    def __init__(
        self,
        edge_url: str,
        load: spec.Load,
        out_dir: Path,
        workers: int = 0,
        metrics_port: int | None = None,
        app_users: int = 2000,
        merchants: int = 50,
        held: bool = False,
    ) -> None:
        self.edge_url = edge_url
        self.load = load
        self.out_dir = out_dir
        self.workers = workers
        self.metrics_port = metrics_port
        self.app_users = app_users
        self.merchants = merchants
        # Held: the load warms up at its baseline and its shape's clock starts at `release()`, so
        # an experiment's times (faults `at`, the spike, the load's end) all count from the method
        # start, however long the steady state took to gather its evidence.
        self.held = held
        self._master: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._summary: dict[str, Any] | None = None
        self.started_at: float | None = None

    @property
    def stats_path(self) -> Path:
        return self.out_dir / "stats.jsonl"

    @property
    def acknowledged_path(self) -> Path:
        """The merged record; during a distributed run each worker writes its own part beside it."""
        return self.out_dir / "acknowledged.jsonl"

    @property
    def refusals_path(self) -> Path:
        """Every request admission refused, with the pass the phone held (merged like the record)."""
        return self.out_dir / "refusals.jsonl"

    @property
    def unanswered_path(self) -> Path:
        """Every payment the app gave up on without a final answer (merged like the record)."""
        return self.out_dir / "unanswered.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"

    @property
    def config_path(self) -> Path:
        return self.out_dir / "load.json"

    @property
    def release_path(self) -> Path:
        return self.out_dir / RELEASE_FILE

    def release(self, at: float | None = None) -> None:
        """Start the shape's clock now (or at the wall-clock time ``at``): a held load begins its profile."""
        tmp = self.out_dir / f".{RELEASE_FILE}"
        tmp.write_text(json.dumps({"at": time.time() if at is None else at}), encoding="utf-8")
        tmp.replace(self.release_path)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        records = [self.out_dir / f"{kind}.jsonl" for kind in CLIENT_RECORDS]
        parts = [p for kind in CLIENT_RECORDS for p in self._parts(f"{kind}.*.jsonl")]
        for stale in (self.stats_path, *records, self.summary_path, self.release_path, *parts, *self._parts("totals.*.json")):
            stale.unlink(missing_ok=True)
        load = self.load
        if load.trace:  # the child runs elsewhere: pin the trace to an absolute path, and fail here if unreadable
            load = load.model_copy(update={"trace": str(Path(load.trace).resolve())})
            shapes.read_trace(Path(load.trace))
        self.config_path.write_text(
            json.dumps({
                "load": load.model_dump(mode="json"),
                "out_dir": str(self.out_dir.resolve()),
                "metrics_port": self.metrics_port,
                "app_users": self.app_users,
                "merchants": self.merchants,
                "held": self.held,
            }),
            encoding="utf-8",
        )
        common = ["-f", str(LOCUSTFILE), "--headless", "--host", self.edge_url, "--only-summary",
                  "--stop-timeout", "5", "--exit-code-on-error", "0", "--loglevel", "WARNING"]
        self.started_at = time.time()
        if not self.workers:
            self._master = self._spawn("main", common)
            return
        port = free_port()
        self._master = self._spawn("master", [
            *common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--expect-workers", str(self.workers), "--expect-workers-max-wait", "60",
        ])
        for n in range(1, self.workers + 1):
            self._workers.append(self._spawn(f"worker-{n}", [
                "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                "--loglevel", "WARNING",
            ]))

    def _spawn(self, part: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.out_dir / f"locust-{part}.log", "wb")
        self._logs.append(log)
        env = {**os.environ, "PAYCHAOS_LOAD_CONFIG": str(self.config_path.resolve()), "PAYCHAOS_LOAD_PART": part}
        # A session of its own: a Ctrl-C in the terminal reaches the parent, which stops Locust cleanly.
        return subprocess.Popen(
            [sys.executable, "-m", "locust", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def running(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the shape ends the run (or ``timeout``); returns the summary."""
        if self._master is None:
            raise LoadError("the load was not started")
        try:
            self._master.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.stop()
        return self._finish(grace=15.0)

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """SIGTERM: Locust stops its users, writes its last lines and totals, and exits."""
        if self._master is None:
            raise LoadError("the load was not started")
        if self._master.poll() is None:
            self._master.send_signal(signal.SIGTERM)
            try:
                self._master.wait(timeout)
            except subprocess.TimeoutExpired:
                self._master.kill()
                self._master.wait()
        return self._finish(grace=timeout)

    def _finish(self, grace: float) -> dict[str, Any]:
        if self._summary is not None:
            return self._summary
        # Workers stop on the master's quit message; one that missed it gets SIGTERM, then SIGKILL.
        deadline = time.monotonic() + grace
        for proc in self._workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self._logs:
            log.close()
        if self._workers:
            for kind in CLIENT_RECORDS:
                merge_records(sorted(self._parts(f"{kind}.*.jsonl")), self.out_dir / f"{kind}.jsonl")
        self._summary = summarize(
            [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self._parts("totals.*.json"))],
            read_records(self.acknowledged_path),
            seconds=time.time() - (self.started_at or time.time()),
        )
        self._summary["exit_codes"] = {"master" if self._workers else "main": self._master.returncode if self._master else None,
                                      **{f"worker-{i}": w.returncode for i, w in enumerate(self._workers, start=1)}}
        expected = max(1, self.workers)
        if self._summary["parts"] < expected:
            self._summary["warning"] = f"only {self._summary['parts']} of {expected} Locust processes wrote totals: see {self.out_dir}/locust-*.log"
        self.summary_path.write_text(json.dumps(self._summary, indent=2), encoding="utf-8")
        return self._summary

    def _parts(self, pattern: str) -> list[Path]:
        return list(self.out_dir.glob(pattern)) if self.out_dir.exists() else []

    # -- reading ------------------------------------------------------------------------------

    def latest(self) -> dict[str, Any] | None:
        """The last per-second stats line written so far."""
        return last_line(self.stats_path)

    def failed_early(self) -> str | None:
        """When Locust exited before writing any stats: the end of its log, to show the user."""
        if self._master is None or self._master.poll() is None or self.stats_path.exists():
            return None
        log = self.out_dir / ("locust-master.log" if self._workers else "locust-main.log")
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:] if log.exists() else []
        return "\n".join(tail) or f"exit code {self._master.returncode}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def last_line(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None
    for raw in reversed(lines):
        try:
            value = json.loads(raw)
        except ValueError:
            continue  # a line being written
        if isinstance(value, dict):
            return value
    return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a torn last line (the writer was killed mid-write) is skipped, not fatal."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def merge_records(parts: list[Path], into: Path) -> int:
    """The workers' parts of a client record as one file, in time order."""
    records = [r for p in parts for r in read_records(p)]
    records.sort(key=lambda r: r.get("at", 0))
    tmp = into.with_name(f".{into.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    tmp.replace(into)
    return len(records)


def _percentile(hist: Counter[int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= q * total:
            return float(value)
    return float(max(hist))


def summarize(totals: list[dict[str, Any]], acknowledged: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Add up the totals of every Locust process that ran users (one, or each worker)."""
    by_name: dict[str, dict[str, Any]] = {}
    overall: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for part in totals:
        for name, entry in part["requests"].items():
            mine = by_name.setdefault(name, {"count": 0, "failures": 0, "hist": Counter()})
            mine["count"] += entry["count"]
            mine["failures"] += entry["failures"]
            hist = Counter({int(k): v for k, v in entry["response_times"].items()})
            mine["hist"].update(hist)
            overall.update(hist)
        errors.update(part.get("failures", {}))
    requests = sum(v["count"] for v in by_name.values())
    failures = sum(v["failures"] for v in by_name.values())
    statuses = Counter(r.get("status") for r in acknowledged)
    return {
        "parts": len(totals),
        "seconds": round(seconds, 1),
        "requests": requests,
        "failures": failures,
        "fail_ratio": round(failures / requests, 4) if requests else 0.0,
        "rps": round(requests / seconds, 1) if seconds > 0 else 0.0,
        "p50": _percentile(overall, 0.50),
        "p95": _percentile(overall, 0.95),
        "p99": _percentile(overall, 0.99),
        "by_name": {
            name: {"count": v["count"], "failures": v["failures"], "p50": _percentile(v["hist"], 0.5), "p99": _percentile(v["hist"], 0.99)}
            for name, v in sorted(by_name.items())
        },
        "errors": dict(errors.most_common(10)),
        "acknowledged": len(acknowledged),
        "acknowledged_by_status": dict(statuses),
    }
