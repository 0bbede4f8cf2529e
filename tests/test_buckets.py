"""The token-bucket math the fleet's rate limits rest on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobs.buckets import Amounts, BucketState, Limits, calibrate, give_back, pause, refill, try_take

LIMITS = Limits(requests=60, input_tokens=6000, output_tokens=12000)
EXACT = Amounts(1.0, 1000.0, 1000.0)


def test_a_full_bucket_admits_up_to_its_limit_then_waits_for_the_refill() -> None:
    state = BucketState.full(LIMITS, 0.0)
    state, wait = try_take(state, LIMITS, Amounts(1, 0, 12000), 0.0)
    assert wait == 0
    state, wait = try_take(state, LIMITS, Amounts(1, 0, 1000), 0.0)
    assert wait == 5.0  # 1000 output tokens at 12000/min = 200 per second
    state, wait = try_take(state, LIMITS, Amounts(1, 0, 1000), 5.0)
    assert wait == 0
    assert state.output_tokens == 0


def test_refill_is_continuous_and_capped() -> None:
    state = BucketState(0.0, 0.0, 0.0, updated_at=0.0)
    assert refill(state, LIMITS, 30.0).output_tokens == 6000
    assert refill(state, LIMITS, 600.0).output_tokens == 12000
    assert refill(state, LIMITS, 1.0).requests == 1.0


def test_unlimited_dimensions_never_wait() -> None:
    limits = Limits(output_tokens=100)
    state = BucketState.full(limits, 0.0)
    _, wait = try_take(state, limits, Amounts(10_000, 10_000_000, 50), 0.0)
    assert wait == 0


def test_a_refund_returns_the_unused_reservation() -> None:
    state = BucketState.full(LIMITS, 0.0)
    state, _ = try_take(state, LIMITS, Amounts(1, 100, 8000), 0.0)
    state = give_back(state, LIMITS, Amounts(0, 0, 7500), 0.0)  # used 500 of 8000
    assert state.output_tokens == 12000 - 500


def test_a_shortfall_is_debt() -> None:
    state = BucketState.full(LIMITS, 0.0)
    state, _ = try_take(state, LIMITS, Amounts(1, 6000, 0), 0.0)
    state = give_back(state, LIMITS, Amounts(0, -600, 0), 0.0)  # used 600 more than estimated
    assert state.input_tokens == -600
    _, wait = try_take(state, LIMITS, Amounts(0, 100, 0), 0.0)
    assert wait == 7.0  # 700 tokens at 100/s


def test_a_pause_holds_every_request() -> None:
    state = pause(BucketState.full(LIMITS, 0.0), 3.0)
    _, wait = try_take(state, LIMITS, Amounts(1, 1, 1), 1.0)
    assert wait == 2.0
    _, wait = try_take(state, LIMITS, Amounts(1, 1, 1), 3.0)
    assert wait == 0


def test_a_pause_keeps_the_reason_of_the_one_that_ends_last() -> None:
    state = pause(BucketState.full(LIMITS, 0.0), 30.0, "429 rate_limit_error")
    assert pause(state, 10.0, "529 overloaded_error").pause_reason == "429 rate_limit_error"
    longer = pause(state, 40.0, "529 overloaded_error")
    assert (longer.paused_until, longer.pause_reason) == (40.0, "529 overloaded_error")


def test_calibration_only_lowers_and_ignores_rounding_and_missing_headers() -> None:
    state = BucketState.full(LIMITS, 0.0)
    lowered = calibrate(state, LIMITS, Amounts(-1, 2000, 11500), 0.0, EXACT)
    assert lowered.input_tokens == 2000  # someone else uses the key: respect it
    assert lowered.output_tokens == 12000  # within rounding: left alone
    assert lowered.requests == 60  # not reported: left alone
    low = BucketState(10.0, 10.0, 10.0, 0.0)
    assert calibrate(low, LIMITS, Amounts(60, 6000, 12000), 0.0, EXACT) == low  # never raised


def test_a_request_larger_than_a_bucket_waits_only_for_a_full_bucket() -> None:
    state = BucketState(60.0, 6000.0, 0.0, 0.0)
    _, wait = try_take(state, LIMITS, Amounts(1, 0, 50_000), 0.0)
    assert wait == 60.0


@given(
    takes=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=30),
            st.floats(min_value=0, max_value=3000),
            st.floats(min_value=0, max_value=1),
        ),
        max_size=50,
    )
)
def test_never_more_than_the_limit_per_minute(takes: list[tuple[float, float, float]]) -> None:
    """Whatever the arrival pattern, what is admitted in any run never exceeds the bucket plus refill."""
    state = BucketState.full(LIMITS, 0.0)
    now = 0.0
    admitted = 0.0
    for gap, size, refund_share in takes:
        now += gap
        state, wait = try_take(state, LIMITS, Amounts(1, 0, size), now)
        if wait == 0:
            admitted += size * (1 - refund_share)
            state = give_back(state, LIMITS, Amounts(0, 0, size * refund_share), now)
        assert wait >= 0
    assert admitted <= LIMITS.output_tokens + now * LIMITS.output_tokens / 60 + 1e-6
