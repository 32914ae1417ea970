"""kombu's Redis transport, with the races closed that stop Celery workers when Redis restarts.

When a worker loses Redis, Celery 5.7 tears the connection down (``collect()``, then
``close()``) while acknowledgements and message restores may still be queued on the event loop
or running on pool threads.  Some of them then reach a channel whose transport is already
detached (``channel.connection`` or ``transport.client`` is None), and building a Redis client
for it raises ``AttributeError`` in ``Channel._connparams``.  That is not one of the transport's
connection errors, so nothing handles it and Celery stops the worker with "Unrecoverable error".
Seen in ``bench chaos``: 3 of 9 Redis restarts stopped the ring worker (threads pool) in
``_connparams`` via ``restore_unacked``, and one stopped a prefork worker via a late ack
(README: restarting).

Here a detached channel raises the connection error it is: an ack that fails that way is logged
("Couldn't ack") and the message stays in Redis's unacked set until the visibility timeout puts
it back; a restore that fails leaves it there too; Celery reconnects as for any other connection
loss.  Nothing is lost: the event is in the inbox, and a task that runs again for an event that
was already processed does nothing.
"""

from __future__ import annotations

from typing import Any

import redis as redis_py
from kombu.transport import redis

# Celery's ``broker_transport`` setting: used with a redis:// broker URL (kombu honours an
# explicit transport over the URL's scheme and still reads host, port and db from the URL).
TRANSPORT = "worker.runtime.broker_transport:Transport"


class DetachedChannel(redis_py.exceptions.ConnectionError):
    """The channel's connection to Redis was already torn down."""


class Channel(redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise DetachedChannel("the channel's broker connection was closed")
        # A private method of kombu's Redis channel, absent from celery-types' stubs.
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Transport(redis.Transport):
    Channel = Channel
