"""The OpenAPI document (webhook_app/openapi.py) is valid OpenAPI 3.1, is served at
/openapi.json, and describes every route of the app with its methods."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from tests.ops_data import API_KEY, SECRET, ops_app
from tests.project_version import pyproject_version
from webhook_app.openapi import OPENAPI, document_for
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def app(sqlite_url, monkeypatch):
    monkeypatch.delenv("CALLPUSH_CONFIG", raising=False)
    settings = load_settings(
        database_url=sqlite_url, apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}]
    )
    db = Database(sqlite_url)
    yield ops_app(settings, db, create_celery(settings))
    db.dispose()


def openapi_path(rule: str) -> str:
    """Flask's ``/admin/events/<int:event_id>`` as OpenAPI's ``/admin/events/{event_id}``."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_the_document_is_valid_openapi_3_1():
    assert OPENAPI["openapi"].startswith("3.1.")
    validate(OPENAPI)  # raises on any error


def test_it_is_served_with_the_running_version(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    served = response.get_json()
    assert served["info"]["version"] == pyproject_version()
    assert served == document_for(app.extensions["callpush"].settings, pyproject_version())


def test_the_served_document_names_the_configured_push_providers_per_platform():
    settings = load_settings(
        apps=[
            {
                "api_key": "prod",
                "api_secrets": [SECRET],
                "apns_providers": {"ios-debug": {"bundle_id": "com.example.app.debug"}},
                "fcm_providers": {"second-firebase": {}},
            },
            {"api_key": "dev", "api_secrets": [SECRET]},
        ]
    )
    document = document_for(settings)
    validate(document)
    assert provider_names(document) == {
        "apns": ["ios-debug", None],
        "fcm": ["second-firebase", None],
    }
    # Without providers a registration can only leave the name out (or null).
    bare = document_for(load_settings(apps=[{"api_key": "k", "api_secrets": [SECRET]}]))
    assert provider_names(bare) == {"apns": [None], "fcm": [None]}


def provider_names(document: dict) -> dict[str, list[str | None]]:
    """The push_provider_name values the document allows, per platform."""
    return {
        rule["if"]["properties"]["platform"]["const"]: rule["then"]["properties"][
            "push_provider_name"
        ]["enum"]
        for rule in document["components"]["schemas"]["DeviceRegistration"]["allOf"]
        if "push_provider_name" in rule.get("then", {}).get("properties", {})
    }


def test_every_route_is_described(app):
    described = {path: {m.upper() for m in item} for path, item in OPENAPI["paths"].items()}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = openapi_path(rule.rule)
        for method in sorted(set(rule.methods or ()) - IGNORED_METHODS):
            if method not in described.get(path, set()):
                missing.append(f"{method} {path}")
    assert not missing, f"routes without an OpenAPI description: {missing}"


def test_every_described_operation_exists(app):
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        routes.setdefault(openapi_path(rule.rule), set()).update(rule.methods or ())
    stale = [
        f"{method.upper()} {path}"
        for path, item in OPENAPI["paths"].items()
        for method in item
        if method.upper() not in routes.get(path, set())
    ]
    assert not stale, f"described but not served: {stale}"


def test_admin_operations_require_the_admin_token():
    for path, item in OPENAPI["paths"].items():
        if path.startswith("/admin/"):
            for operation in item.values():
                assert operation["security"] == [{"adminToken": []}], path
                assert {"401", "404"} <= set(operation["responses"]), path
