"""The OpenAPI document (webhook_app/openapi.yaml with the schemas of webhook_app/api_models.py)
is valid OpenAPI 3.1, is served at /openapi.json, describes every route of the app with its
methods, and names the same values as the code that answers."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from tests.ops_data import API_KEY, SECRET, ops_app
from tests.project_version import pyproject_version
from webhook_app import api_models
from webhook_app.openapi import document_for, shared_document
from worker.foundation.settings import load_settings
from worker.ops import event_log
from worker.push.base import Platform, PushKind
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database

IGNORED_METHODS = {"HEAD", "OPTIONS"}
OPENAPI = shared_document()
SCHEMAS = OPENAPI["components"]["schemas"]


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
    validate(served)
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


# --- the schemas and the code agree -----------------------------------------------------------


def test_the_request_bodies_are_documented_by_their_models():
    """The schema of each body is the one its model generates, and written nowhere else."""
    generated = api_models.component_schemas()
    for model in api_models.DOCUMENTED:
        assert SCHEMAS[model.__name__] == generated[model.__name__]
    written = resources.files("webhook_app").joinpath("openapi.yaml").read_text(encoding="utf-8")
    assert not set(yaml.safe_load(written)["components"]["schemas"]) & set(generated)


def test_every_request_body_refers_to_a_model():
    bodies = {
        (method.upper(), path): operation["requestBody"]["content"]["application/json"]["schema"]
        for path, item in OPENAPI["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    documented = {f"#/components/schemas/{m.__name__}" for m in api_models.DOCUMENTED}
    # The Stream webhook's body is Stream's event, which webhook_app.stream_webhook reads.
    assert {schema["$ref"] for schema in bodies.values()} == documented | {
        "#/components/schemas/StreamEvent"
    }


def enums(node: Any, name: str = "") -> Iterator[tuple[str, list[Any]]]:
    """Every ``enum`` in the document, with the property or parameter it constrains."""
    if isinstance(node, list):
        for item in node:
            yield from enums(item, name)
    elif isinstance(node, dict):
        if "enum" in node:
            yield name, node["enum"]
        if "in" in node and "name" in node:  # a parameter
            name = node["name"]
        for key, value in node.items():
            if key == "properties":
                for prop, schema in value.items():
                    yield from enums(schema, prop)
            elif key != "enum":
                yield from enums(value, name)


def test_the_documents_enums_equal_the_codes():
    platforms = [p.value for p in Platform]
    statuses = {
        "event": list(event_log.EVENT_STATUSES),
        "delivery": sorted(event_log.DELIVERY_STATUSES),
    }
    call_pushes = list(
        typing.get_args(api_models.PreferenceChange.model_fields["call_pushes"].annotation)
    )
    assert SCHEMAS["Platform"]["enum"] == platforms
    found = list(enums(OPENAPI))
    checked = 0
    for name, values in found:
        if name == "platform":  # a recipient's own row (no device) has none: ""
            assert values in (platforms, [*platforms, ""]), values
        elif name in ("kind", "push_kind") and "voip" in values:
            assert values in ([k.value for k in PushKind], [*[k.value for k in PushKind], ""])
        elif name == "call_pushes":
            assert values == call_pushes
        elif "received" in values:
            assert values == statuses["event"], name
        elif "token_invalid" in values:
            assert sorted(values) == statuses["delivery"], name
        else:
            continue
        checked += 1
    # Device, DeviceSummary, Receipt, Delivery and the models' platforms; the event statuses of
    # four answers and a filter; the delivery statuses; push kinds; call_pushes in and out.
    assert checked >= 12, found
    # The answers name the models' Platform rather than repeat its values.
    for schema in ("Device", "DeviceSummary", "Receipt"):
        assert SCHEMAS[schema]["properties"]["platform"] == {
            "$ref": "#/components/schemas/Platform"
        }
