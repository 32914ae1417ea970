"""Celery's threads pool, with each pool thread's current app set to the worker's app.

A threads pool runs a task through ``celery.app.trace.trace_task_ret``, which looks the task up
in ``current_app`` (https://github.com/celery/celery/blob/v5.4.0/celery/app/trace.py, the
``_trace_task_ret`` function), and a new thread's current app is the process's *default* app.
``celery worker`` makes its app the default (``setup_worker_optimizations``, "only a single app
can be used for workers running in the same process"); a worker run inside a process of its own
(``callpush run``, the tests) does not, so its tasks, registered on its app alone, would not be
found, or a shared task would run with another app's services.  Setting the current app in each
pool thread as it starts makes every app's in-process worker run its own tasks.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery.concurrency import thread


class ThreadPool(thread.TaskPool):
    executor: ThreadPoolExecutor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown(wait=False)  # the base class's, not started yet: no threads
        self.executor = ThreadPoolExecutor(max_workers=self.limit, initializer=self.app.set_current)
