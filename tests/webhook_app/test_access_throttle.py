"""webhook_app.access_throttle: failed admin-token attempts per client, in bounded memory."""

from __future__ import annotations

import threading

import pytest

from webhook_app.access_throttle import FailureThrottle, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_may_fail_max_failures_times_in_any_window():
    clock = Clock()
    throttle = FailureThrottle(max_failures=3, window_seconds=60, max_clients=100, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") == 0
        throttle.record_failure("10.0.0.1")
        clock.now += 10
    # Three failures at t=1000, 1010, 1020; now 1030: blocked until the first is 60 s old.
    assert throttle.retry_after("10.0.0.1") == 30
    assert throttle.retry_after("10.0.0.2") == 0  # others are not affected
    clock.now = 1059.5
    assert throttle.retry_after("10.0.0.1") == 1
    clock.now = 1060.0
    assert throttle.retry_after("10.0.0.1") == 0  # one more attempt...
    throttle.record_failure("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 10  # ...then wait for the next oldest
    clock.now = 1200.0
    assert throttle.retry_after("10.0.0.1") == 0
    assert throttle.clients() == 0  # forgotten once every failure is out of the window


def test_memory_is_bounded_by_max_clients_forgetting_the_oldest_failure():
    clock = Clock()
    throttle = FailureThrottle(max_failures=1, window_seconds=600, max_clients=50, clock=clock)
    for n in range(10_000):
        throttle.record_failure(f"client-{n}")
        clock.now += 0.001
    assert throttle.clients() == 50
    assert throttle.retry_after("client-9999") > 0
    assert throttle.retry_after("client-0") == 0  # evicted: the least recent failure


def test_concurrent_failures_are_all_counted():
    throttle = FailureThrottle(max_failures=10_000, window_seconds=600, max_clients=10)
    threads = [
        threading.Thread(target=lambda: [throttle.record_failure("c") for _ in range(500)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.retry_after("c") == 0  # 4,000 of 10,000
    for _ in range(6_000):
        throttle.record_failure("c")
    assert throttle.retry_after("c") > 0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same /64: the same client
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "-"),
        ("", "-"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_key(address, key):
    assert client_key(address) == key
