"""``jobs.batches.route``: the one rule that sends a job by batch or by stream, at enqueue and again
before each batch round (``worker.batches``). Pure: every case is a value."""

from __future__ import annotations

import pytest

from jobs.batches import route

NOW = 1_750_000_000.0
HOUR = 3600.0


@pytest.mark.parametrize(
    ("mode", "deadline", "expected"),
    [
        ("stream", None, "stream"),
        ("stream", NOW + 100 * HOUR, "stream"),  # stream never becomes batch
        ("batch", None, "batch"),  # no deadline: it waits as long as a batch takes
        ("batch", NOW + 25 * HOUR, "batch"),
        ("batch", NOW + 24 * HOUR, "batch"),  # exactly the horizon still fits
        ("batch", NOW + 24 * HOUR - 1, "stream"),  # a second less does not
        ("batch", NOW + HOUR, "stream"),
        ("batch", NOW - HOUR, "stream"),  # already past: the pool reports the deadline
        ("auto", None, "stream"),  # nothing says it can wait
        ("auto", NOW + 48 * HOUR, "batch"),
        ("auto", NOW + 23 * HOUR, "stream"),
    ],
)
def test_route(mode: str, deadline: float | None, expected: str) -> None:
    assert route(mode, deadline, NOW, 24 * HOUR) == expected


def test_route_moves_with_time_and_the_horizon() -> None:
    deadline = NOW + 10 * HOUR
    assert route("batch", deadline, NOW, 6 * HOUR) == "batch"
    assert route("batch", deadline, NOW + 5 * HOUR, 6 * HOUR) == "stream"  # waited in the queue
    assert route("batch", deadline, NOW, 11 * HOUR) == "stream"  # a longer horizon
    assert route("auto", deadline, NOW, 0.0) == "batch"  # horizon 0: batch until the deadline


def test_route_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown job mode 'later'"):
        route("later", None, NOW, HOUR)
