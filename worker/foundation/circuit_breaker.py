"""A small thread-safe circuit breaker (Nygard, "Release It!"): after ``failure_threshold``
consecutive failures of a dependency the circuit opens and callers skip the dependency at once;
after ``reset_seconds`` one trial is let through (half-open): its success closes the circuit, its
failure opens it again for another ``reset_seconds``.

Why not pybreaker: its ``CircuitBreaker.call`` holds the breaker's lock while the guarded call
runs (https://github.com/danielfm/pybreaker/blob/main/src/pybreaker/__init__.py), so every
publish of a process would wait in line behind one that hangs, which is what this is for.  Here
the lock guards only the state, never the call, and the caller reports the outcome
(:meth:`allow`, then :meth:`record_success` or :meth:`record_failure`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

log = logging.getLogger("callpush.circuit_breaker")


class CircuitState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"

    @property
    def severity(self) -> int:
        """0 closed, 1 half-open, 2 open: the value of the state gauge (worst wins)."""
        return {"closed": 0, "half-open": 1, "open": 2}[self.value]


StateListener = Callable[["CircuitBreaker", CircuitState, CircuitState], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        reset_seconds: float,
        on_state_change: StateListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_seconds <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_seconds > 0")
        self.name = name
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._listener = on_state_change
        self._clock = clock
        # Re-entrant: a listener, called under it, may read the state.
        self._lock = threading.RLock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state

    def allow(self) -> bool:
        """May the caller try the dependency now?  Closed: yes.  Open: no, until
        ``reset_seconds`` have passed; then exactly one caller gets True (the half-open trial)
        and must report its outcome."""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return True
            if self._state is CircuitState.OPEN:
                if self._clock() - self._opened_at < self._reset:
                    return False
                self._set(CircuitState.HALF_OPEN)
            if self._trial_running:
                return False
            self._trial_running = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_running = False
            self._set(CircuitState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            opens = self._state is CircuitState.HALF_OPEN or (
                self._state is CircuitState.CLOSED and self._failures >= self._threshold
            )
            if opens:
                self._opened_at = self._clock()
                self._trial_running = False
                self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        """Change the state (under the lock) and tell the listener, in order: listeners must be
        quick; they may read the breaker's properties, nothing more."""
        old, self._state = self._state, state
        if old is state:
            return
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit %s: %s -> %s", self.name, old.value, state.value)
        if self._listener is not None:
            self._listener(self, old, state)
