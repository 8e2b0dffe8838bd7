"""The supervisor's restart back-off: none after a stable run, doubling while a process keeps failing."""

from __future__ import annotations

from paychaos.platform.runtime.supervisor import restart_delay


def test_a_replica_that_was_stable_restarts_at_once() -> None:
    assert restart_delay(0, 1.0, 10.0) == 0.0


def test_a_crash_loop_backs_off_doubling_up_to_the_cap() -> None:
    assert [restart_delay(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
