"""Schemathesis against callpush's own ``/openapi.json``: every operation, with valid credentials,
on PostgreSQL and Redis.

Each operation gets schema-valid and schema-violating requests (schemathesis' positive and
negative generation) carrying what that operation needs: the admin bearer token, a Stream user
or server JWT for the device API, a signature over the exact body for the webhook, a dashboard
session cookie and its CSRF field.  For each request: no 5xx, the response conforms to the
document (status, content type, headers, body schema), and a 4xx stored nothing.

HYPOTHESIS_PROFILE / FUZZ_EXAMPLES (tests/fuzz/conftest.py) set the examples per operation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance
from sqlalchemy import select
from werkzeug.serving import make_server

from tests.e2e.processes import temporary_database
from tests.fuzz._counts import count
from tests.ops_data import ADMIN_TOKEN, Seeder, notification_body, ring_body
from webhook_app import admin_auth
from webhook_app.openapi import document_for, shared_document
from worker.foundation.settings import load_settings
from worker.foundation.version import callpush_version
from worker.storage import dashboard_sessions
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import (
    DashboardSession,
    Delivery,
    Device,
    FanoutChunk,
    UserPreference,
    WebhookEvent,
)

API_KEY = "schema-key"
SECRET = "schema-secret-0123456789abcdef0123456789abcdef"
USER = "alice"
APPS = [{"api_key": API_KEY, "api_secrets": [SECRET]}]
TABLES = (WebhookEvent, Device, UserPreference, Delivery, FanoutChunk, DashboardSession)

pytestmark = [pytest.mark.services, pytest.mark.timeout(600)]


@dataclass
class World:
    """The app served over real HTTP on 127.0.0.1, its database and its broker."""

    app: Any
    db: Database
    broker: redis.Redis
    base_url: str

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: what a refused request must leave as it was."""
        state: dict[str, list[tuple[Any, ...]]] = {}
        with self.db.transaction() as session:
            for model in TABLES:
                columns = list(model.__table__.columns)
                rows = session.execute(select(*columns).order_by(*model.__table__.primary_key))
                state[model.__tablename__] = [tuple(row) for row in rows]
        state["queues"] = [(q, self.broker.llen(q)) for q in ("ring", "bulk")]  # type: ignore[misc]
        return state


@pytest.fixture(scope="module")
def world(postgres_admin_url: str, redis_server_url: str) -> Iterator[World]:
    os.environ.pop("CALLPUSH_CONFIG", None)
    name = f"callpush_test_{uuid.uuid4().hex[:12]}"
    broker = redis.Redis.from_url(redis_server_url)
    broker.flushdb()
    try:
        with temporary_database(postgres_admin_url, name) as url:
            from webhook_app import create_app
            from worker.runtime.celery_app import create_celery

            app_settings = load_settings(
                database_url=url,
                broker_url=redis_server_url,
                apps=APPS,
                admin_token=ADMIN_TOKEN,
                # Every request carries valid credentials; the throttle has its own tests.
                admin_throttle={"max_failures": 1_000_000},
            )
            upgrade_to_head(url)
            db = Database(url)
            seed = Seeder(db)
            device = seed.device(USER, "fcm", "alice-fcm-" + "a" * 40)
            ring = seed.event(ring_body("default:c1", "bob", [USER]), status="failed", reason="x")
            seed.delivery(ring, device, "failed", user_id=USER, platform="fcm", kind="data")
            seed.event(notification_body("default:c2", "bob", [USER]))
            # A ring that rang nobody: a recipient's own row (no device) and the event's reach.
            nobody = seed.event(ring_body("default:c3", "bob", [USER]), reason="rang nobody")
            seed.skipped_recipient(nobody, USER, "call pushes muted")
            app = create_app(app_settings, db=db, celery=create_celery(app_settings))
            server = make_server("127.0.0.1", 0, app, threaded=True)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            thread.start()
            try:
                base_url = f"http://127.0.0.1:{server.server_port}"
                yield World(app=app, db=db, broker=broker, base_url=base_url)
            finally:
                server.shutdown()
                thread.join(10)
            db.dispose()
    finally:
        broker.flushdb()
        broker.close()


def _schema() -> Any:
    """The document the app serves (test_the_served_document_is_the_one_tested checks that
    /openapi.json answers exactly this), loaded at collection so each operation is a test."""
    served = document_for(load_settings(apps=APPS), callpush_version())
    loaded = schemathesis.openapi.from_dict(served)
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "30")),
        deterministic=True,
        # The credentials are added per request below; schemathesis' ignored_auth check
        # still sends each operation without them (and expects 401).
        with_security_parameters=False,
    )
    return loaded


schema = _schema()


def test_the_served_document_is_the_one_tested(world):
    served = world.app.test_client().get("/openapi.json")
    assert served.status_code == 200 and served.get_json() == schema.raw_schema


# --- credentials ------------------------------------------------------------------------------


def stream_token(case: schemathesis.Case) -> str:
    """A server token when the request names a user (query or body), else alice's user token."""
    named = (case.query or {}).get("user_id") is not None or (
        isinstance(case.body, dict) and case.body.get("user_id") is not None
    )
    claims = {} if named else {"user_id": USER}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def signed_webhook(case: schemathesis.Case) -> dict[str, Any]:
    """The generated event as the exact bytes Stream would sign and send."""
    if isinstance(case.body, bytes | str):  # a negative case: not a JSON document at all
        body = case.body.encode() if isinstance(case.body, str) else case.body
    else:
        body = json.dumps(case.body).encode()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Signature": signature, "X-Api-Key": API_KEY, "Content-Type": "application/json"}
    return {"data": body, "headers": headers}


def dashboard_session(world: World) -> tuple[str, str]:
    """A fresh session (a case may log it out) and the CSRF field of its forms."""
    with world.db.transaction() as session:
        cookie = dashboard_sessions.start(
            session, admin_auth.token_fingerprint(ADMIN_TOKEN), admin_auth.SESSION_LIFETIME
        )
    return cookie, admin_auth.csrf_token(ADMIN_TOKEN, cookie)


def request_kwargs(case: schemathesis.Case, world: World) -> dict[str, Any]:
    """What ``case.call`` needs besides the generated request: the credentials."""
    path = case.operation.path
    schemes = {name for item in case.operation.definition.raw.get("security", []) for name in item}
    headers: dict[str, str] = {}
    if "adminToken" in schemes:
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    if "streamToken" in schemes:
        headers["Authorization"] = f"Bearer {stream_token(case)}"
    kwargs: dict[str, Any] = {"base_url": world.base_url}
    if path == "/webhooks/stream" and not isinstance(case.body, NotSet):
        signed = signed_webhook(case)
        headers.update(signed["headers"])
        kwargs["data"] = signed["data"]
    if path.startswith("/dashboard/") and path != "/dashboard/login":
        cookie, csrf = dashboard_session(world)
        kwargs["cookies"] = {"callpush_dashboard": cookie}
        if isinstance(case.body, dict) and _is_positive(case):
            case.body["csrf"] = csrf
    if path == "/preferences" and isinstance(case.body, dict) and _is_positive(case):
        until = case.body.get("until")
        if isinstance(until, str) and until[:4].isdigit():
            # "until" must be in the future, a rule of time that no schema states: the
            # generated timestamp, moved to the year 2999 (its format kept).
            case.body["until"] = "2999" + until[4:]
    return {"headers": headers, **kwargs}


def excluded_checks(case: schemathesis.Case) -> list[Any]:
    """Two of schemathesis' checks ask more than the document can say, for two operations."""
    path, method = case.operation.path, case.operation.method.upper()
    excluded: list[Any] = []
    if path == "/webhooks/stream":
        # A schema-valid event can still be malformed for its type (a call.ring without a
        # call): the receiver answers 400, as documented.  JSON Schema cannot say which
        # fields each of Stream's event types needs.
        excluded.append(positive_data_acceptance)
    if path.startswith("/dashboard/") and method == "GET":
        # A browser without a session is sent to the login page (302), not answered 401.
        excluded.append(ignored_auth)
    return excluded


def _is_positive(case: schemathesis.Case) -> bool:
    return getattr(case.meta.generation, "mode", None) == GenerationMode.POSITIVE


# --- the test ---------------------------------------------------------------------------------


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_and_never_answers_5xx(case, world):
    count(f"schemathesis {case.operation.method.upper()} {case.operation.path}")
    kwargs = request_kwargs(case, world)
    before = world.snapshot()
    response = case.call(**kwargs)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    case.validate_response(
        response,
        headers=kwargs["headers"],
        transport_kwargs=kwargs,
        excluded_checks=excluded_checks(case),
    )
    if 400 <= response.status_code < 500:
        assert world.snapshot() == before, f"{response.status_code} changed what is stored"


def test_every_operation_is_exercised():
    """Guards the test above: a document with an operation schemathesis cannot generate for
    would silently test less."""
    operations = [op.ok() for op in schema.get_all_operations()]
    described = {
        (method.upper(), path)
        for path, item in shared_document()["paths"].items()
        for method in item
    }
    assert {(op.method.upper(), op.path) for op in operations} == described
    assert len(described) >= 20 and not any(re.search(r"\s", path) for _, path in described)
