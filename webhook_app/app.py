"""Flask app factory (the Flask tutorial's pattern): no globals, everything from the settings."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_app import (
    admin_api,
    admin_auth,
    dashboard,
    devices_api,
    health,
    openapi,
    receipts_api,
    stream_webhook,
)
from webhook_app.receiver import Receiver
from worker.foundation.settings import Settings
from worker.foundation.version import callpush_version
from worker.intake.publish_breaker import PublishBreaker
from worker.runtime.celery_app import CallpushCelery, create_celery
from worker.runtime.inbox_sweeper import requeue_unpublished
from worker.storage.database import Database


def _publisher(settings: Settings, db: Database, celery: CallpushCelery) -> PublishBreaker:
    def drain(events: Mapping[int, str]) -> int:
        def publish(event_id: int, kind: str) -> bool:
            return celery.handoff.queue_event_guarded(breaker, event_id, kind)

        return requeue_unpublished(db, publish, events)

    breaker = PublishBreaker(celery, settings.broker, drain)
    return breaker


def create_app(
    settings: Settings, *, db: Database | None = None, celery: CallpushCelery | None = None
) -> Flask:

    app = Flask("callpush")
    # Read once: /healthz and /openapi.json answer it on every request.
    app.config["CALLPUSH_VERSION"] = callpush_version()
    # Werkzeug answers 413 itself when the body is larger, before we read it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    db = db or Database(
        settings.database_url,
        timeouts=settings.database,
        # Short enough to answer a webhook 503 well within Stream's 6 s per attempt.
        statement_timeout=settings.database.web_statement_timeout_seconds,
        fail_fast=True,
    )
    celery = celery or create_celery(settings, publisher=True)
    app.extensions["callpush"] = Receiver(
        settings=settings, db=db, celery=celery, publisher=_publisher(settings, db, celery)
    )
    app.register_blueprint(stream_webhook.blueprint)
    app.register_blueprint(devices_api.blueprint)
    app.register_blueprint(receipts_api.blueprint)  # POST /receipts, the phone's word
    app.register_blueprint(health.blueprint)  # /healthz, /readyz, /metrics
    # The operators' side, behind settings.admin_token (off, 404, when it is unset).
    admin_auth.install(app, settings)
    app.register_blueprint(admin_api.blueprint)  # /admin/...
    app.register_blueprint(dashboard.blueprint)  # /dashboard/...
    app.register_blueprint(openapi.blueprint)  # /openapi.json

    if settings.trusted_proxies:
        # The client address (throttling) and scheme (the Secure cookie) as the proxies saw
        # them: the last `trusted_proxies` X-Forwarded-For / X-Forwarded-Proto entries.
        # https://werkzeug.palletsprojects.com/en/stable/middleware/proxy_fix/
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]

    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException) -> ResponseReturnValue:
        # Short JSON errors everywhere, including werkzeug's own 404/405/413, with the headers
        # werkzeug gives them (a 405's Allow, RFC 9110 §15.5.6).
        response = jsonify(error=error.description or error.name)
        response.status_code = error.code or 500
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    return app
