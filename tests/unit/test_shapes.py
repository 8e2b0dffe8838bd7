"""Load shapes and payment-answer rules, without starting Locust."""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

import pytest

from paychaos.experiments.spec import Load
from paychaos.load.answers import Answer, backoff, judge
from paychaos.load.shapes import NoonSpike, Replay, Steady, TraceError, read_trace, shape_for

# A copy of the shared sample trace (a cashback campaign going live at noon).
TRACE = Path(__file__).resolve().parents[1] / "data" / "campaign-noon-trace.csv"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_shapes_module_does_not_import_locust() -> None:
    import paychaos.load.shapes  # noqa: F401

    assert "locust" not in sys.modules and "gevent.monkey" not in sys.modules


def test_steady_holds_the_baseline_and_users_follow_the_pace() -> None:
    shape = shape_for(Load(profile="steady", baseline_rps=40, duration="30s"))
    assert isinstance(shape, Steady)
    targets = [shape.target(t) for t in (0, 10, 29.9)]
    assert all(t is not None and t.rps == 40 and t.users == 40 for t in targets)


def test_a_fixed_pool_of_users_is_sized_for_the_peak() -> None:
    shape = shape_for(Load(profile="noon-spike", baseline_rps=10, peak_multiplier=10, users=50, duration="100s"))
    assert shape.pace == pytest.approx(0.5)
    peak = shape.target(30)
    assert peak is not None and peak.rps == pytest.approx(100) and peak.users == 50
    quiet = shape.target(1)
    assert quiet is not None and quiet.users == 5


def test_tick_uses_the_injected_clock_and_returns_none_after_the_duration() -> None:
    clock = FakeClock()
    shape = shape_for(Load(profile="steady", baseline_rps=5, duration="10s")).use_clock(clock)
    assert shape.tick() == (5, 5.0)
    clock.now += 9.99
    assert shape.tick() is not None
    clock.now += 0.01
    assert shape.tick() is None


def test_noon_spike_reaches_the_peak_within_the_rise_holds_and_decays() -> None:
    shape = shape_for(Load(profile="noon-spike", baseline_rps=10, peak_multiplier=100, duration="10m"))
    assert isinstance(shape, NoonSpike)
    assert shape.rate(30) == pytest.approx(10)
    spike_at = shape.spike_at
    assert shape.rate(spike_at + 8) == pytest.approx(1000)  # ×100 within 8 seconds
    assert shape.rate(spike_at + 4) is not None and 10 < shape.rate(spike_at + 4) < 1000  # type: ignore[operator]
    assert shape.rate(0.39 * 600) == pytest.approx(1000)
    decaying = [shape.rate(t) for t in range(int(0.4 * 600), int(0.8 * 600), 10)]
    assert decaying == sorted(decaying, reverse=True)  # type: ignore[type-var]
    assert shape.rate(599) == pytest.approx(200)  # an elevated plateau, a fifth of the peak
    assert shape.rate(600) is None


def test_noon_spike_spawns_fast_enough_to_follow_the_rise() -> None:
    shape = shape_for(Load(profile="noon-spike", baseline_rps=10, peak_multiplier=10, duration="100s"))
    before, after = shape.target(shape.spike_at), shape.target(shape.spike_at + shape.rise)
    assert before is not None and after is not None
    assert after.spawn_rate >= after.users - before.users  # the whole jump fits in one tick


def test_step_climbs_in_equal_stairs_to_the_peak() -> None:
    shape = shape_for(Load(profile="step", baseline_rps=10, peak_multiplier=5, duration="50s"))
    assert [shape.rate(t) for t in (0, 10, 20, 30, 49)] == pytest.approx([10, 20, 30, 40, 50])


def test_replay_follows_the_sample_trace_second_by_second() -> None:
    rows = [(int(s), float(m)) for s, m in list(csv.reader(TRACE.read_text().splitlines()))[1:]]
    shape = shape_for(Load(profile="replay", baseline_rps=2, duration="10m", trace=str(TRACE)))
    assert isinstance(shape, Replay)
    for second, multiplier in rows:
        assert shape.rate(second + 0.5) == pytest.approx(2 * multiplier)
    assert max(shape.multipliers) > 90  # the herd: about ×100
    assert shape.rate(600) is None


def test_replay_holds_the_last_value_past_a_short_trace_and_fills_gaps(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("second,multiplier\n0,1\n3,4\n")
    assert read_trace(trace) == [1, 1, 1, 4]
    shape = shape_for(Load(profile="replay", baseline_rps=1, duration="10s", trace="t.csv"), base_dir=tmp_path)
    assert shape.rate(9) == 4


@pytest.mark.parametrize("text", ["second,multiplier\n0,abc\n", "second,multiplier\n", "0,-1\n"])
def test_a_bad_trace_is_one_clear_error(tmp_path: Path, text: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(text)
    with pytest.raises(TraceError, match="bad.csv"):
        read_trace(trace)


def test_a_missing_trace_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="nope.csv"):
        read_trace(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (Answer(201, {"status": "completed", "payment_id": "p"}), "completed"),
        (Answer(402, {"error": {"code": "INSUFFICIENT_FUNDS", "status": "declined"}}), "declined"),
        (Answer(0), "retry"),
        (Answer(429, retry_after=1), "retry"),
        (Answer(503, {"error": {"code": "CARD_NETWORK_UNAVAILABLE"}}, retry_after=1), "retry"),
        (Answer(409, {"error": {"code": "PAYMENT_IN_PROGRESS"}}), "retry"),
        (Answer(409, {"error": {"code": "IDEMPOTENCY_KEY_REUSED"}}), "final"),
        (Answer(502, {"error": {"code": "PAYMENT_FAILED", "status": "failed"}}), "final"),
        (Answer(503, {"error": {"code": "X", "status": "aborted"}}, replayed=True), "final"),
        (Answer(422, {"error": {"code": "UNKNOWN_ACCOUNT"}}), "final"),
    ],
)
def test_payment_answers(answer: Answer, verdict: str) -> None:
    assert judge(answer) == verdict


def test_backoff_grows_is_capped_and_never_comes_before_retry_after() -> None:
    rng = random.Random(7)
    assert all(0 <= backoff(1, None, rng) <= 0.2 for _ in range(100))
    assert all(backoff(10, None, rng) <= 4.0 for _ in range(100))
    assert all(backoff(1, 2.0, rng) >= 2.0 for _ in range(100))
