"""The circuit breaker: closed, open after N failures, one half-open trial after the reset time,
and no lock held while the guarded call runs."""

from __future__ import annotations

import threading

import pytest

from worker.foundation.circuit_breaker import CircuitBreaker, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 2, reset: float = 1.0, **kwargs):  # type: ignore[no-untyped-def]
    clock = Clock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        "test",
        failure_threshold=threshold,
        reset_seconds=reset,
        clock=clock,
        on_state_change=lambda _b, old, new: changes.append((old.value, new.value)),
        **kwargs,
    )
    return breaker, clock, changes


def test_opens_after_consecutive_failures_only():
    breaker, _, changes = make(threshold=2)
    breaker.record_failure()
    breaker.record_success()  # the run is broken: start counting again
    breaker.record_failure()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    assert changes == [("closed", "open")]


def test_one_trial_after_the_reset_time_and_its_outcome_decides():
    breaker, clock, changes = make(threshold=1, reset=1.0)
    breaker.record_failure()
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.allow()  # the trial
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()  # the trial failed: open for another reset period
    assert breaker.state is CircuitState.OPEN and not breaker.allow()
    clock.now += 1.01
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()
    assert changes == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_a_late_failure_of_an_earlier_call_does_not_extend_the_open_period():
    breaker, clock, _ = make(threshold=1, reset=1.0)
    breaker.record_failure()
    clock.now += 0.9
    breaker.record_failure()  # a call started before the circuit opened
    clock.now += 0.2
    assert breaker.allow()


def test_the_guarded_call_runs_without_the_breakers_lock():
    """pybreaker holds its lock while the call runs; here a hung call must not stop others."""
    breaker, _, _ = make(threshold=5)
    inside = threading.Event()
    release = threading.Event()

    def hung_call() -> None:
        assert breaker.allow()
        inside.set()
        release.wait(5)
        breaker.record_failure()

    thread = threading.Thread(target=hung_call)
    thread.start()
    assert inside.wait(5)
    done = threading.Event()

    def other_call() -> None:
        assert breaker.allow()
        breaker.record_success()
        done.set()

    threading.Thread(target=other_call).start()
    assert done.wait(1), "a second caller waited on the hung one"
    release.set()
    thread.join(5)


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0, reset_seconds=1)
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=1, reset_seconds=0)
