"""When the experiment's method started, for this process: fault activities wait for their ``at``.

Set by the ``before_method_control`` below (use this module as a Chaos Toolkit control) or, when
no control ran, by the first fault activity; one value per process, shared by every thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_started: float | None = None


def method_started_at() -> float | None:
    """Wall-clock time (``time.time()``) the method started, or None when not known yet."""
    return _started


def mark_method_started(at: float | None = None) -> float:
    """Record the method start (now, unless ``at`` is given); a start already known is overwritten."""
    global _started
    with _lock:
        _started = time.time() if at is None else at
        return _started


def method_start_or_now() -> float:
    """The method start; the first caller without a known start makes it now."""
    global _started
    with _lock:
        if _started is None:
            _started = time.time()
        return _started


def reset() -> None:
    global _started
    with _lock:
        _started = None


def wait_until(offset: float, *, clock: Callable[[], float] = time.time,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Sleep until ``offset`` seconds after the method start; return the offset actually reached."""
    start = method_start_or_now()
    remaining = start + offset - clock()
    if remaining > 0:
        sleep(remaining)
    return clock() - start


def before_method_control(context: Any, **kwargs: Any) -> None:
    mark_method_started()
