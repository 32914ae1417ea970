"""Telling a database that is away from a statement it will never accept.

The first (connection lost, server restarting, lock or statement timeout, pool exhausted) is
worth a retry: the receiver answers 503 so Stream retries, a worker leaves the event for the
sweeper.  The second (a value too long for its column, NUL in text, an integer out of range, a
constraint) fails the same way every time: answering 503 would make Stream retry in vain and
look like an outage in the metrics.
"""

from __future__ import annotations

from sqlalchemy import exc

from worker.storage.database import DatabaseUnavailable


def is_transient_db_error(error: BaseException) -> bool:
    if isinstance(error, DatabaseUnavailable):  # failing fast after repeated failures
        return True
    if isinstance(
        error,
        exc.OperationalError | exc.InterfaceError | exc.TimeoutError | exc.DisconnectionError,
    ):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated
