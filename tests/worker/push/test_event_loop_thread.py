"""EventLoopThread: lazy start, run with timeout, stop, and a fresh loop after fork."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading

import pytest

from worker.push.event_loop_thread import EventLoopThread


async def _whoami() -> tuple[int, int, int]:
    loop = asyncio.get_running_loop()
    return os.getpid(), threading.get_ident(), id(loop)


def test_runs_coroutines_in_one_background_thread() -> None:
    runner = EventLoopThread()
    assert not runner.started
    try:
        first = runner.run(_whoami(), timeout=5)
        second = runner.run(_whoami(), timeout=5)
        assert runner.started
        assert first == second
        assert first[1] != threading.get_ident()
    finally:
        runner.stop()
    assert not runner.started


def test_timeout_cancels_the_coroutine() -> None:
    runner = EventLoopThread()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(TimeoutError):
            runner.run(forever(), timeout=0.2)
        assert cancelled.wait(5)
    finally:
        runner.stop()


def test_run_from_the_loop_thread_is_refused() -> None:
    runner = EventLoopThread()

    async def reenter() -> None:
        runner.run(_whoami(), timeout=1)

    try:
        with pytest.raises(RuntimeError, match="deadlock"):
            runner.run(reenter(), timeout=5)
    finally:
        runner.stop()


def test_restarts_after_stop_and_stop_cancels_tasks() -> None:
    runner = EventLoopThread()
    cancelled = threading.Event()

    async def background() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    first_loop = runner.loop
    first_loop.call_soon_threadsafe(lambda: asyncio.ensure_future(background()))
    runner.run(asyncio.sleep(0), timeout=5)
    runner.stop()
    runner.stop()  # idempotent
    assert cancelled.is_set()
    assert first_loop.is_closed()
    runner.run(_whoami(), timeout=5)
    assert runner.loop is not first_loop
    runner.stop()


def _child(runner: EventLoopThread, queue: multiprocessing.Queue) -> None:
    queue.put(runner.run(_whoami(), timeout=5))
    runner.stop()


def test_fresh_loop_after_fork() -> None:
    runner = EventLoopThread()
    try:
        parent = runner.run(_whoami(), timeout=5)
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child, args=(runner, queue))
        child.start()
        pid, _, _ = queue.get(timeout=30)
        child.join(30)
        assert child.exitcode == 0
        assert pid != parent[0]
        assert runner.run(_whoami(), timeout=5) == parent  # the parent's loop is untouched
    finally:
        runner.stop()
