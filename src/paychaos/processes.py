"""Telling a live process from a dead one, shared by the reference platform's supervisor, the
test cluster, the operator and the fault ledger (which must not import the platform): a pid alone
can be reused. And the last words of a process that died, from its log."""

from __future__ import annotations

from pathlib import Path

import psutil


def alive(pid: int | None, create_time: float | None) -> bool:
    """True when the pid still names the process we started (not a reused pid)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.05
    except psutil.Error:
        return False


def last_line(log: Path) -> str:
    """The last non-blank line of a process's log (300 characters at most), for one-line errors."""
    try:
        lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(empty log)"
