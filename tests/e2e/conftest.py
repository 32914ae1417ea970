"""A whole callpush inside the test process: the real receiver served over HTTP by waitress in a
thread, a real Celery worker (`callpush run`'s in-process worker) on a real broker, PostgreSQL,
and the fakes of Stream's API, APNs and FCM driven by the real clients.

`start_stack(**settings)` starts one for a test; the settings are those of ``callpush.toml``
(``apns`` and ``fcm`` default to the fakes', the broker to the suite's Redis database)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import requests
from sqlalchemy import insert, select
from waitress.server import create_server

from tests.e2e.processes import free_port, wait_until
from tests.fakes.fake_stream_api import FakeStreamApi
from tests.fakes.stream_api_plugin import stream_app_for
from webhook_app import create_app
from worker.foundation.settings import Settings, load_settings
from worker.runtime.celery_app import CallpushCelery, create_celery
from worker.runtime.inprocess_worker import inprocess_worker
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import Delivery, Device, WebhookEvent
from worker.stream import samples as sample_events


@dataclass
class Stack:
    settings: Settings
    celery: CallpushCelery
    db: Database
    port: int
    api_key: str
    secret: str

    def post_webhook(self, event: dict[str, Any]) -> requests.Response:
        """``event`` signed as Stream signs it, posted to the receiver; its answer."""
        body, headers = sample_events.signed_request(
            event, api_key=self.api_key, secret=self.secret
        )
        return requests.post(
            f"http://127.0.0.1:{self.port}/webhooks/stream", data=body, headers=headers, timeout=10
        )

    def post(self, event: dict[str, Any]) -> int:
        """Post ``event``, which the receiver must accept for the worker; its event id."""
        response = self.post_webhook(event)
        assert response.status_code == 202, response.text
        return int(response.json()["event_id"])

    def row(self, event_id: int) -> WebhookEvent:
        with self.db.transaction() as session:
            row = session.get(WebhookEvent, event_id)
            assert row is not None, f"no event {event_id}"
            session.expunge(row)
            return row

    def wait_finished(self, event_id: int, timeout: float = 60) -> WebhookEvent:
        """The event's row once the worker is done with it (neither received nor processing)."""
        try:
            wait_until(
                lambda: self.row(event_id).status not in ("received", "processing"),
                timeout,
                message=f"event {event_id} finished",
            )
        except AssertionError:
            row = self.row(event_id)
            raise AssertionError(
                f"event {event_id} left {row.status} ({row.status_reason}) after"
                f" {row.processing_attempts} runs"
            ) from None
        return self.row(event_id)

    def deliveries(self, event_id: int) -> list[Delivery]:
        with self.db.transaction() as session:
            return list(session.scalars(select(Delivery).where(Delivery.event_id == event_id)))

    def device(self, token: str) -> Device:
        with self.db.transaction() as session:
            return session.scalars(select(Device).where(Device.token == token)).one()

    def add_devices(self, rows: list[dict[str, Any]]) -> None:
        """Devices of this app registered locally (``voip`` false unless a row says so)."""
        with self.db.transaction() as session:
            session.execute(
                insert(Device),
                [{"api_key": self.api_key, "source": "local", "voip": False} | r for r in rows],
            )

    def register(self, body: dict[str, Any]) -> requests.Response:
        """POST /devices as the app's server would, with a server token."""
        server_token = jwt.encode({"server": True}, self.secret, algorithm="HS256")
        return requests.post(
            f"http://127.0.0.1:{self.port}/devices",
            json=body,
            headers={"Authorization": f"Bearer {server_token}"},
            timeout=10,
        )


@pytest.fixture
def start_stack(
    request: pytest.FixtureRequest,
    postgres_url: str,
    fake_stream_api: FakeStreamApi,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., AbstractContextManager[Stack]]:
    """``start_stack(broker_url=..., concurrency=2, app={...}, **settings)``: a context manager
    running the stack for the one app the fake Stream API serves; ``app`` adds keys to that
    app's table."""
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)

    @contextmanager
    def start(
        *,
        broker_url: str | None = None,
        concurrency: int = 2,
        app: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Iterator[Stack]:
        # Only the fixtures a test leaves to the default are started: a test that brings its
        # own fake APNs gets no second one.
        if broker_url is None:
            broker_url = str(request.getfixturevalue("redis_url"))
        if "apns" not in settings:
            settings["apns"] = request.getfixturevalue("apns_settings").model_dump()
        if "fcm" not in settings:
            settings["fcm"] = request.getfixturevalue("fcm_settings").model_dump()
        stream_app = stream_app_for(fake_stream_api)
        secret = stream_app.signing_secret
        config = load_settings(
            database_url=postgres_url,
            broker_url=broker_url,
            apps=[
                {
                    "api_key": stream_app.api_key,
                    "api_secrets": [secret],
                    "base_url": stream_app.base_url,
                    **(app or {}),
                }
            ],
            **settings,
        )
        upgrade_to_head(postgres_url)
        db = Database(postgres_url)
        celery = create_celery(config)
        port = free_port()
        server = create_server(
            create_app(config, db=db, celery=celery), host="127.0.0.1", port=port
        )
        threading.Thread(target=server.run, daemon=True).start()
        try:
            with inprocess_worker(celery, concurrency=concurrency):
                yield Stack(config, celery, db, port, stream_app.api_key, secret)
        finally:
            server.close()
            db.dispose()

    return start
