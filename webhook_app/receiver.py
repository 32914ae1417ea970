"""What the request handlers need (settings, database, Celery app, publisher), put on the Flask
app by the factory (webhook_app/app.py) and reached inside a request as
``receiver()``: no module globals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

from worker.foundation.settings import Settings
from worker.intake.publish_breaker import PublishBreaker
from worker.storage.database import Database

if TYPE_CHECKING:
    # For the annotation only: a module that needs the receiver (the webhook endpoint) does not
    # load the Celery app's tasks and the delivery code with it (.importlinter).
    from worker.runtime.celery_app import CallpushCelery


@dataclass
class Receiver:
    """What the request handlers need, reachable as ``receiver()`` inside a request."""

    settings: Settings
    db: Database
    celery: CallpushCelery
    # Inbox events are published through it: bounded, skipped while the broker is down.
    publisher: PublishBreaker


def receiver() -> Receiver:
    found: Receiver = current_app.extensions["callpush"]
    return found
