"""The active-fault ledger and the experiment lock, both in the run directory.

A fault is recorded in ``run_dir/faults/<experiment>-<index>.json`` *before* it is injected and
forgotten only after a successful revert, so `paychaos halt` can undo whatever a dead run left.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel

from paychaos.faults.driving import FaultDriver, InjectionFailed, RevertFailed
from paychaos.faults.planning import FaultPlan
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import alive


class ExperimentLocked(Exception):
    """Another live run holds this target: wait for it, or stop it (its faults revert on exit)."""


class HaltIncomplete(Exception):
    """Some faults could not be reverted; their records are kept for the next `paychaos halt`."""

    def __init__(self, reverted: list[FaultRecord], failures: list[tuple[FaultRecord, str]]) -> None:
        self.reverted = reverted
        self.failures = failures
        detail = "; ".join(f"{r.id}: {msg}" for r, msg in failures)
        super().__init__(f"{len(failures)} fault(s) not reverted ({detail}); run `paychaos halt` again")


class Owner(BaseModel):
    """Who injected a fault or holds the lock; pid with its start time tells a live owner from a reused pid."""

    pid: int
    started: float | None = None
    user: str = ""
    host: str = ""
    command: str = ""

    @classmethod
    def me(cls) -> Owner:
        proc = psutil.Process()
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return cls(pid=proc.pid, started=proc.create_time(), user=user, host=socket.gethostname(),
                   command=" ".join(sys.argv)[:300])

    def alive(self) -> bool:
        return alive(self.pid, self.started)

    def is_me(self) -> bool:
        return self.pid == os.getpid()


class FaultRecord(BaseModel):
    """Everything needed to revert one fault without the process that injected it.

    The plan carries the targets: replica names and pids, the zone held down, the Kafka node
    held, the proxy and the names of the toxics added.
    """

    id: str
    experiment: str
    index: int
    kind: str
    driver: str
    summary: str
    plan: dict[str, Any]
    owner: Owner
    recorded_at: float
    # What the driver saw once it had injected: the replicas dead, the node held, the toxics present.
    effect: dict[str, Any] = {}

    @property
    def fault_plan(self) -> FaultPlan:
        return FaultPlan.from_dict(self.plan)


def faults_dir(run_dir: RunDir) -> Path:
    return run_dir.root / "faults"


def record_path(run_dir: RunDir, fault_id: str) -> Path:
    return faults_dir(run_dir) / f"{fault_id}.json"


def lock_path(run_dir: RunDir) -> Path:
    return run_dir.root / "experiment.lock"


def _write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_record(run_dir: RunDir, record: FaultRecord) -> None:
    _write_durably(record_path(run_dir, record.id), record.model_dump_json(indent=2))


def read_record(run_dir: RunDir, fault_id: str) -> FaultRecord | None:
    try:
        return FaultRecord.model_validate_json(record_path(run_dir, fault_id).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def active_records(run_dir: RunDir) -> list[FaultRecord]:
    """Every fault recorded and not yet reverted, oldest first."""
    folder = faults_dir(run_dir)
    if not folder.exists():
        return []
    out = []
    for path in folder.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            out.append(FaultRecord.model_validate_json(path.read_text(encoding="utf-8")))
    return sorted(out, key=lambda r: (r.recorded_at, r.id))


def forget(run_dir: RunDir, fault_id: str) -> None:
    record_path(run_dir, fault_id).unlink(missing_ok=True)


# -- inject and revert through the ledger -----------------------------------------------------


def inject(run_dir: RunDir, driver: FaultDriver, plan: FaultPlan) -> FaultRecord:
    """Record the plan, then inject it. A failed injection is reverted before the error propagates."""
    leftover = read_record(run_dir, plan.id)
    if leftover is not None:
        if leftover.owner.alive() and not leftover.owner.is_me():
            raise ExperimentLocked(f"fault {plan.id} is already active, injected by pid {leftover.owner.pid} "
                                   f"at {_when(leftover.recorded_at)}")
        revert(run_dir, driver, plan.id)
    record = FaultRecord(id=plan.id, experiment=plan.experiment, index=plan.index, kind=plan.kind,
                         driver=driver.name, summary=plan.headline(), plan=plan.to_dict(),
                         owner=Owner.me(), recorded_at=time.time())
    write_record(run_dir, record)
    try:
        record = record.model_copy(update={"effect": driver.inject(plan)})
    except Exception as exc:
        _revert_after_failed_injection(run_dir, driver, record)
        raise InjectionFailed(f"injecting {plan.id} ({plan.headline()}) failed and was reverted: {exc}") from exc
    except BaseException:
        _revert_after_failed_injection(run_dir, driver, record)
        raise
    write_record(run_dir, record)
    return record


def _revert_after_failed_injection(run_dir: RunDir, driver: FaultDriver, record: FaultRecord) -> None:
    with contextlib.suppress(RevertFailed):  # the record stays for `paychaos halt`
        driver.revert(record)
        forget(run_dir, record.id)


def revert(run_dir: RunDir, driver: FaultDriver, fault_id: str) -> FaultRecord | None:
    """Revert a recorded fault and forget it; None when there is no such record (already reverted)."""
    record = read_record(run_dir, fault_id)
    if record is None:
        return None
    driver.revert(record)
    forget(run_dir, record.id)
    return record


def halt(run_dir: RunDir, driver: FaultDriver, *, include_live: bool = False) -> list[FaultRecord]:
    """Revert every recorded fault left by a dead run or by this process, newest first.

    Faults of another live run are left to it unless ``include_live``. Raises ``HaltIncomplete``
    after trying them all when some could not be reverted.
    """
    reverted: list[FaultRecord] = []
    failures: list[tuple[FaultRecord, str]] = []
    for record in reversed(active_records(run_dir)):
        if not include_live and record.owner.alive() and not record.owner.is_me():
            continue
        try:
            driver.revert(record)
        except RevertFailed as exc:
            failures.append((record, str(exc)))
            continue
        forget(run_dir, record.id)
        reverted.append(record)
    holder = read_lock(run_dir)
    if holder is not None and not holder.owner.alive():
        lock_path(run_dir).unlink(missing_ok=True)
    if failures:
        raise HaltIncomplete(reverted, failures)
    return reverted


def live_records(run_dir: RunDir) -> list[FaultRecord]:
    """Faults held by another live run (what `halt` leaves alone unless forced)."""
    return [r for r in active_records(run_dir) if r.owner.alive() and not r.owner.is_me()]


# -- the experiment lock ----------------------------------------------------------------------


class LockHolder(BaseModel):
    experiment: str
    started: float
    owner: Owner

    @property
    def pid(self) -> int:
        return self.owner.pid


def read_lock(run_dir: RunDir) -> LockHolder | None:
    """The holder of the lock, or None when the lock is free (or not fully written yet)."""
    try:
        return LockHolder.model_validate_json(lock_path(run_dir).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


@dataclass
class ExperimentLock:
    """One experiment at a time per target. Release it (or leave the ``with`` block) when done."""

    run_dir: RunDir
    holder: LockHolder

    def release(self) -> None:
        current = read_lock(self.run_dir)
        if current is not None and current.owner.pid == self.holder.owner.pid:
            lock_path(self.run_dir).unlink(missing_ok=True)

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(run_dir: RunDir, experiment: str, driver: FaultDriver) -> ExperimentLock:
    """Take the target's experiment lock. A lock left by a dead run is taken over after its faults are halted."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = LockHolder(experiment=experiment, started=time.time(), owner=Owner.me())
    deadline = time.monotonic() + 5
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            current = read_lock(run_dir)
            if current is None and _age(path) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # created by another run an instant ago and not written yet
                continue
            if current is not None and current.owner.alive():
                raise ExperimentLocked(
                    f"{run_dir.root} is locked by experiment {current.experiment!r} (pid {current.pid}, "
                    f"{current.owner.user}@{current.owner.host}) since {_when(current.started)}: wait for it "
                    "or stop it; its faults revert when it exits"
                ) from None
            halt(run_dir, driver)
            if read_lock(run_dir) == current:  # still the stale one, not a lock another run just took
                path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(holder.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        return ExperimentLock(run_dir, holder)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
