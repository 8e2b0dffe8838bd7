"""Gateway admission: token bucket, rotating device groups and flow passes, on a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from paychaos.platform.services.admission import (
    Admission,
    Restriction,
    TokenBucket,
    device_group,
    in_rotation,
    issue_pass,
    pass_expires,
    pass_valid,
    seconds_until_admitted,
)
from paychaos.platform.topology import AdmissionSpec

SECRET = b"test-secret"
DEVICES = [f"device-{i:05d}" for i in range(5000)]


def spec(**overrides: object) -> AdmissionSpec:
    values: dict[str, object] = {
        "enabled": True,
        "tokens_per_second": 1000,
        "burst": 100_000,
        "allowed_percent": 20,
        "rotation": timedelta(seconds=180),
        "flow_ttl": timedelta(seconds=300),
        "max_in_flight": 10,
    }
    values.update(overrides)
    return AdmissionSpec.model_validate(values)


class TestTokenBucket:
    def test_burst_then_empty(self) -> None:
        bucket = TokenBucket(rate=10, burst=5, now=0.0)
        assert [bucket.try_take(0.0) for _ in range(6)] == [True] * 5 + [False]

    def test_refills_at_rate(self) -> None:
        bucket = TokenBucket(rate=10, burst=5, now=0.0)
        for _ in range(5):
            bucket.try_take(0.0)
        assert not bucket.try_take(0.05)
        assert bucket.try_take(0.1)
        assert not bucket.try_take(0.1)

    def test_refill_never_exceeds_burst(self) -> None:
        bucket = TokenBucket(rate=10, burst=3, now=0.0)
        assert sum(bucket.try_take(1000.0) for _ in range(10)) == 3

    def test_backwards_clock_does_not_drain(self) -> None:
        bucket = TokenBucket(rate=10, burst=2, now=100.0)
        assert bucket.try_take(50.0)
        assert bucket.try_take(50.0)

    def test_time_to_next_token(self) -> None:
        bucket = TokenBucket(rate=4, burst=1, now=0.0)
        bucket.try_take(0.0)
        assert bucket.seconds_until_token(0.0) == pytest.approx(0.25)


class TestRotation:
    def test_group_is_stable_and_in_range(self) -> None:
        assert device_group("abc") == device_group("abc")
        assert {device_group(d) for d in DEVICES} == set(range(100))

    @pytest.mark.parametrize("allowed", [10, 20, 50])
    def test_admits_about_allowed_percent_per_window(self, allowed: int) -> None:
        for bucket in range(5):
            admitted = sum(in_rotation(device_group(d), bucket, allowed) for d in DEVICES)
            assert abs(admitted / len(DEVICES) * 100 - allowed) < 3

    def test_admitted_set_rotates(self) -> None:
        first = {d for d in DEVICES if in_rotation(device_group(d), 0, 20)}
        second = {d for d in DEVICES if in_rotation(device_group(d), 1, 20)}
        assert first and second and not first & second

    def test_every_group_gets_a_turn(self) -> None:
        turns = {g for g in range(100) for bucket in range(5) if in_rotation(g, bucket, 20)}
        assert turns == set(range(100))

    def test_all_and_nothing(self) -> None:
        assert all(in_rotation(g, 7, 100) for g in range(100))
        assert not any(in_rotation(g, 7, 0) for g in range(100))

    def test_seconds_until_admitted_points_at_the_next_admitting_window(self) -> None:
        group, now, rotation = 42, 1000.0, 180.0  # window 5 admits groups 0..19: 42 is out
        wait = seconds_until_admitted(group, now, rotation, 20)
        window = round((now + wait) / rotation)
        assert (now + wait) == window * rotation
        assert in_rotation(group, window, 20)
        assert not any(in_rotation(group, w, 20) for w in range(5, window))


class TestPass:
    def test_valid_until_expiry(self) -> None:
        token = issue_pass(SECRET, "dev", 100)
        assert pass_valid(SECRET, "dev", token, 99.9)
        assert not pass_valid(SECRET, "dev", token, 100.0)

    @pytest.mark.parametrize(
        "token", [None, "", "garbage", "100", "100.", "abc.def", issue_pass(b"other", "dev", 100)]
    )
    def test_rejects_forged_or_malformed(self, token: str | None) -> None:
        assert not pass_valid(SECRET, "dev", token, 0.0)

    def test_bound_to_its_device(self) -> None:
        assert not pass_valid(SECRET, "other", issue_pass(SECRET, "dev", 100), 0.0)

    def test_extended_expiry_breaks_signature(self) -> None:
        token = issue_pass(SECRET, "dev", 100)
        assert not pass_valid(SECRET, "dev", "999" + token[3:], 0.0)


class TestAdmission:
    def test_pass_holder_stays_admitted_across_rotation(self) -> None:
        admission = Admission(spec(), SECRET, now=0.0)
        device = next(d for d in DEVICES if in_rotation(device_group(d), 0, 20))
        first = admission.decide(device, None, now=170.0)
        assert first.decision == "admitted" and first.new_pass
        # Next window: the device's group is rotated out, its pass carries it through the flow.
        assert admission.decide(device, None, now=190.0).decision == "rotated_out"
        later = admission.decide(device, first.new_pass, now=190.0)
        assert later.decision == "pass" and later.admitted and later.new_pass is None

    def test_pass_expires_after_flow_ttl(self) -> None:
        admission = Admission(spec(), SECRET, now=0.0)
        device = next(d for d in DEVICES if in_rotation(device_group(d), 0, 20))
        token = admission.decide(device, None, now=0.0).new_pass
        refused = admission.decide(device, token, now=301.0)
        assert refused.decision == "rotated_out"
        assert refused.retry_after >= 1

    def test_rotated_out_device_told_when_to_return(self) -> None:
        admission = Admission(spec(), SECRET, now=0.0)
        device = next(d for d in DEVICES if not in_rotation(device_group(d), 0, 20))
        verdict = admission.decide(device, None, now=10.0)
        assert verdict.decision == "rotated_out" and not verdict.admitted
        assert in_rotation(device_group(device), int((10.0 + verdict.retry_after) // 180), 20)

    def test_pass_from_another_replica_is_accepted(self) -> None:
        one, two = Admission(spec(), SECRET, 0.0), Admission(spec(), SECRET, 0.0)
        device = next(d for d in DEVICES if in_rotation(device_group(d), 0, 20))
        token = one.decide(device, None, now=0.0).new_pass
        assert two.decide(device, token, now=200.0).decision == "pass"

    def test_empty_bucket_rate_limits_before_rotation(self) -> None:
        admission = Admission(spec(tokens_per_second=1, burst=2), SECRET, now=0.0)
        device = next(d for d in DEVICES if in_rotation(device_group(d), 0, 20))
        decisions = [admission.decide(device, None, now=0.0).decision for _ in range(3)]
        assert decisions == ["admitted", "admitted", "rate_limited"]
        assert admission.decide(device, None, now=0.0).retry_after == 1
        assert admission.decide(device, None, now=1.0).decision == "admitted"

    def test_everyone_admitted_at_100_percent(self) -> None:
        admission = Admission(spec(allowed_percent=100), SECRET, now=0.0)
        assert all(admission.decide(d, None, now=500.0).decision == "admitted" for d in DEVICES[:500])


class TestRestriction:
    """What operators switch on at noon: fewer groups, faster rotation, shorter passes, for a while."""

    def test_restricts_until_it_lapses(self) -> None:
        admission = Admission(spec(allowed_percent=100), SECRET, now=0.0)
        admission.restriction = Restriction(allowed_percent=30, rotation=10.0, flow_ttl=20.0, until=100.0)
        assert admission.rules(50.0) == (30, 10.0, 20.0)
        decisions = [admission.decide(d, None, now=50.0).decision for d in DEVICES[:1000]]
        assert 200 < decisions.count("admitted") < 400 and decisions.count("rotated_out") > 600
        # Lapsed: the topology's own rules again, without anyone lifting it.
        assert admission.rules(100.0) == (100, 180.0, 300.0)
        assert all(admission.decide(d, None, now=100.0).decision == "admitted" for d in DEVICES[:200])

    def test_a_pass_issued_before_the_restriction_still_carries_its_flow(self) -> None:
        admission = Admission(spec(allowed_percent=100), SECRET, now=0.0)
        device = next(d for d in DEVICES if not in_rotation(device_group(d), 5, 30))
        token = admission.decide(device, None, now=40.0).new_pass
        assert token is not None and pass_expires(token) == 340
        admission.restriction = Restriction(allowed_percent=30, rotation=10.0, flow_ttl=20.0, until=1000.0)
        assert admission.decide(device, None, now=55.0).decision == "rotated_out"
        assert admission.decide(device, token, now=55.0).decision == "pass"

    def test_passes_issued_under_the_restriction_last_its_flow_ttl(self) -> None:
        admission = Admission(spec(), SECRET, now=0.0)
        admission.restriction = Restriction(allowed_percent=30, rotation=10.0, flow_ttl=20.0, until=1000.0)
        device = next(d for d in DEVICES if in_rotation(device_group(d), 5, 30))
        assert pass_expires(admission.decide(device, None, now=55.0).new_pass or "") == 75

    @pytest.mark.parametrize("bad", [{"allowed_percent": 101}, {"rotation": 0.0}, {"flow_ttl": -1.0}])
    def test_nonsense_is_refused(self, bad: dict[str, float]) -> None:
        values: dict[str, float] = {"allowed_percent": 30, "rotation": 10.0, "flow_ttl": 20.0, "until": 1.0, **bad}
        with pytest.raises(ValueError):
            Restriction(**values)  # type: ignore[arg-type]
