"""Throttling of failed attempts at the admin token, per client address.

A client may fail ``max_failures`` times in any ``window_seconds``; after that every attempt from
it, right or wrong, is refused (429, ``Retry-After``) without looking at the token, until its
oldest failure is ``window_seconds`` old.  Refusing the right token too is what makes the throttle
work: otherwise an answer other than 429 would tell a guesser it had found the token.  Successes
do not clear the count, so a script that authenticates from the same address (a NAT, an office)
cannot be used to reset a guesser's budget.

The state is kept in memory, per web process (README: security model, for why not in the
database): at most ``max_clients`` addresses, each with at most ``max_failures`` timestamps; when
full, the address whose last failure is the oldest is forgotten.  IPv6 clients are counted per
/64, the block one host usually holds, so a host cannot rotate through its own addresses.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

IPV6_PREFIX = 64


def client_key(address: str | None) -> str:
    """The address throttled: IPv4 as is, IPv6 as its /64, anything else as given."""
    if not address:
        return "-"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


class FailureThrottle:
    """Thread-safe (gunicorn runs several request threads per process)."""

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_failures = max_failures
        self._window = window_seconds
        self._max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            failures = self._recent(client, self._clock())
            if failures is None or len(failures) < self._max_failures:
                return 0
            wait = failures[0] + self._window - self._clock()
        return max(1, math.ceil(wait))

    def record_failure(self, client: str) -> None:
        with self._lock:
            now = self._clock()
            failures = self._recent(client, now)
            if failures is None:
                failures = deque(maxlen=self._max_failures)
                self._failures[client] = failures
                while len(self._failures) > self._max_clients:
                    self._failures.popitem(last=False)
            failures.append(now)
            # Most recently failed last: the first entry is the one to forget when full.
            self._failures.move_to_end(client)

    def clients(self) -> int:
        with self._lock:
            return len(self._failures)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures
