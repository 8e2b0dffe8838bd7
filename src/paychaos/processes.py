"""Telling a live process from a dead one, shared by the reference platform's supervisor and the
fault ledger (which must not import the platform): a pid alone can be reused."""

from __future__ import annotations

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
