"""The Celery app for Celery's own command line: ``celery -A worker.runtime.celery_entry
<command>``, so ``celery inspect``, ``celery events``, ``celery report`` and Flower can watch the
workers that `callpush worker` runs (README: watching the workers).

Celery's ``-A`` option needs a module attribute holding the app (it reads ``app``, then
``celery``: ``celery.app.utils.find_app``).  Here that attribute is built on first access (a
module ``__getattr__``, https://peps.python.org/pep-0562/) from the settings, read once: importing
this module reads no configuration and connects to nothing.

Run the workers themselves with `callpush worker`, not ``celery -A ... worker``: the command also
sets up logging, the metrics' multiprocess mode and the queues' pool (README: scaling out).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

# The names Celery's find_app looks up on a module, in its order.
_APP_NAMES = ("app", "celery")


@cache
def celery_app() -> Celery:
    """The callpush Celery app of this process, configured from the settings (the config file
    and ``CALLPUSH_*`` variables, as for every `callpush` command).  Built once: a second
    ``create_celery`` would replace the first as the process's default app."""
    from worker.foundation.settings import load_settings
    from worker.runtime.celery_app import create_celery

    return create_celery(load_settings())


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        return celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
