"""The active-fault ledger and the experiment lock of a target.

A fault is recorded *before* it is injected and forgotten only after a successful revert, so
`paychaos halt` can undo whatever a dead run left. Where the records live is the target's
(``FaultLedger``): files in the run directory for the reference platform (``FileLedger``),
cluster objects for a Kubernetes target. The rules here (record first, revert on a failed
injection, leave a live run's faults alone, take over a dead run's lock) are the same for all.
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
from typing import Any, Protocol

import psutil
from pydantic import BaseModel

from paychaos.faults.driving import FaultDriver, InjectionFailed, RevertFailed
from paychaos.faults.planning import FaultPlan
from paychaos.processes import alive


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
        if self.host and self.host != socket.gethostname():
            # Another machine's process (a ledger in a cluster is shared): its pid means nothing
            # here, so it counts as live; `paychaos halt --force` takes its faults and lock over.
            return True
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


class FaultLedger(Protocol):
    """Where a target keeps its fault records and its experiment lock."""

    #: Says where, in messages: "the run directory .paychaos/run", "namespace payments".
    where: str

    def write(self, record: FaultRecord) -> None:
        """Store (or replace) a record durably: a reader never sees half of one."""
        ...

    def read(self, fault_id: str) -> FaultRecord | None: ...

    def records(self) -> list[FaultRecord]:
        """Every record stored, in any order."""
        ...

    def forget(self, fault_id: str) -> None: ...

    def read_lock(self) -> LockHolder | None:
        """The holder of the lock, or None when it is free (or not fully written yet)."""
        ...

    def try_lock(self, holder: LockHolder) -> bool:
        """Take the lock atomically; False when it exists already (whoever holds it)."""
        ...

    def lock_just_taken(self) -> bool:
        """The lock exists but was created an instant ago: its holder may not be written yet."""
        ...

    def unlock(self) -> None: ...


class FileLedger:
    """A ledger in a folder: ``faults/<experiment>-<index>.json`` and ``experiment.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = f"the run directory {root}"

    @property
    def faults_dir(self) -> Path:
        return self.root / "faults"

    @property
    def lock_path(self) -> Path:
        return self.root / "experiment.lock"

    def _path(self, fault_id: str) -> Path:
        return self.faults_dir / f"{fault_id}.json"

    def write(self, record: FaultRecord) -> None:
        _write_durably(self._path(record.id), record.model_dump_json(indent=2))

    def read(self, fault_id: str) -> FaultRecord | None:
        try:
            return FaultRecord.model_validate_json(self._path(fault_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def records(self) -> list[FaultRecord]:
        if not self.faults_dir.exists():
            return []
        out = []
        for path in self.faults_dir.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                out.append(FaultRecord.model_validate_json(path.read_text(encoding="utf-8")))
        return out

    def forget(self, fault_id: str) -> None:
        self._path(fault_id).unlink(missing_ok=True)

    def read_lock(self) -> LockHolder | None:
        try:
            return LockHolder.model_validate_json(self.lock_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def try_lock(self, holder: LockHolder) -> bool:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(holder.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def lock_just_taken(self) -> bool:
        try:
            return time.time() - self.lock_path.stat().st_mtime < 2
        except FileNotFoundError:
            return False

    def unlock(self) -> None:
        self.lock_path.unlink(missing_ok=True)


def _write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def active_records(ledger: FaultLedger) -> list[FaultRecord]:
    """Every fault recorded and not yet reverted, oldest first."""
    return sorted(ledger.records(), key=lambda r: (r.recorded_at, r.id))


# -- inject and revert through the ledger -----------------------------------------------------


def inject(ledger: FaultLedger, driver: FaultDriver, plan: FaultPlan) -> FaultRecord:
    """Record the plan, then inject it. A failed injection is reverted before the error propagates."""
    leftover = ledger.read(plan.id)
    if leftover is not None:
        if leftover.owner.alive() and not leftover.owner.is_me():
            raise ExperimentLocked(f"fault {plan.id} is already active, injected by pid {leftover.owner.pid} "
                                   f"at {_when(leftover.recorded_at)}")
        revert(ledger, driver, plan.id)
    record = FaultRecord(id=plan.id, experiment=plan.experiment, index=plan.index, kind=plan.kind,
                         driver=driver.name, summary=plan.headline(), plan=plan.to_dict(),
                         owner=Owner.me(), recorded_at=time.time())
    ledger.write(record)
    try:
        record = record.model_copy(update={"effect": driver.inject(plan)})
    except Exception as exc:
        _revert_after_failed_injection(ledger, driver, record)
        raise InjectionFailed(f"injecting {plan.id} ({plan.headline()}) failed and was reverted: {exc}") from exc
    except BaseException:
        _revert_after_failed_injection(ledger, driver, record)
        raise
    ledger.write(record)
    return record


def _revert_after_failed_injection(ledger: FaultLedger, driver: FaultDriver, record: FaultRecord) -> None:
    with contextlib.suppress(RevertFailed):  # the record stays for `paychaos halt`
        driver.revert(record)
        ledger.forget(record.id)


def revert(ledger: FaultLedger, driver: FaultDriver, fault_id: str) -> FaultRecord | None:
    """Revert a recorded fault and forget it; None when there is no such record (already reverted)."""
    record = ledger.read(fault_id)
    if record is None:
        return None
    driver.revert(record)
    ledger.forget(record.id)
    return record


def halt(ledger: FaultLedger, driver: FaultDriver, *, include_live: bool = False) -> list[FaultRecord]:
    """Revert every recorded fault left by a dead run or by this process, newest first.

    Faults of another live run are left to it unless ``include_live``. Raises ``HaltIncomplete``
    after trying them all when some could not be reverted.
    """
    reverted: list[FaultRecord] = []
    failures: list[tuple[FaultRecord, str]] = []
    for record in reversed(active_records(ledger)):
        if not include_live and record.owner.alive() and not record.owner.is_me():
            continue
        try:
            driver.revert(record)
        except RevertFailed as exc:
            failures.append((record, str(exc)))
            continue
        ledger.forget(record.id)
        reverted.append(record)
    holder = ledger.read_lock()
    if holder is not None and (include_live or not holder.owner.alive()):
        ledger.unlock()
    if failures:
        raise HaltIncomplete(reverted, failures)
    return reverted


def live_records(ledger: FaultLedger) -> list[FaultRecord]:
    """Faults held by another live run (what `halt` leaves alone unless forced)."""
    return [r for r in active_records(ledger) if r.owner.alive() and not r.owner.is_me()]


# -- the experiment lock ----------------------------------------------------------------------


class LockHolder(BaseModel):
    experiment: str
    started: float
    owner: Owner

    @property
    def pid(self) -> int:
        return self.owner.pid


@dataclass
class ExperimentLock:
    """One experiment at a time per target. Release it (or leave the ``with`` block) when done."""

    ledger: FaultLedger
    holder: LockHolder

    def release(self) -> None:
        current = self.ledger.read_lock()
        if current is not None and current.owner.pid == self.holder.owner.pid:
            self.ledger.unlock()

    def __enter__(self) -> ExperimentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(ledger: FaultLedger, experiment: str, driver: FaultDriver) -> ExperimentLock:
    """Take the target's experiment lock. A lock left by a dead run is taken over after its faults are halted."""
    holder = LockHolder(experiment=experiment, started=time.time(), owner=Owner.me())
    deadline = time.monotonic() + 5
    while not ledger.try_lock(holder):
        current = ledger.read_lock()
        if current is None and ledger.lock_just_taken() and time.monotonic() < deadline:
            time.sleep(0.1)  # taken by another run an instant ago and not written yet
            continue
        if current is not None and current.owner.alive():
            raise ExperimentLocked(
                f"{ledger.where} is locked by experiment {current.experiment!r} (pid {current.pid}, "
                f"{current.owner.user}@{current.owner.host}) since {_when(current.started)}: wait for it "
                "or stop it; its faults revert when it exits"
            )
        halt(ledger, driver)
        if ledger.read_lock() == current:  # still the stale one, not a lock another run just took
            ledger.unlock()
    return ExperimentLock(ledger, holder)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
