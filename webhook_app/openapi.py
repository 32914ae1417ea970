"""``GET /openapi.json``: the OpenAPI 3.1 description of callpush's HTTP endpoints.

The document is ``openapi.yaml`` beside this module (paths, responses, security schemes and the
answers' schemas, written by hand: it is the contract) with the request bodies' schemas
generated from the pydantic models that validate them (webhook_app.api_models).  The tests
validate it with openapi-spec-validator and check that every Flask route is described, so a new
route without a description fails CI.

:func:`shared_document` is the same for every deployment; what is served is
:func:`document_for`: it adds the one thing only the deployment knows, the push provider names
a device may be registered with, so that every request the document calls valid is one this
deployment accepts.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from webhook_app.api_models import component_schemas
from webhook_app.receiver import receiver
from worker.foundation.settings import Settings
from worker.foundation.version import UNKNOWN
from worker.push.base import Platform

blueprint = Blueprint("openapi", __name__)


@functools.cache
def _loaded() -> dict[str, Any]:
    text = resources.files("webhook_app").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    document["components"]["schemas"].update(component_schemas())
    return document


def shared_document() -> dict[str, Any]:
    """The document every deployment serves, but for its version and provider names (a copy:
    the caller may change it)."""
    return copy.deepcopy(_loaded())


def document_for(settings: Settings, version: str = UNKNOWN) -> dict[str, Any]:
    """The shared document with ``push_provider_name`` limited, per platform, to the names this
    deployment's apps configure (none configured: it can only be null), and the running
    ``version`` as the document's."""
    document = shared_document()
    document["info"]["version"] = version
    registration = document["components"]["schemas"]["DeviceRegistration"]
    for platform in Platform:
        names = sorted(
            {
                name
                for app in settings.apps
                for name in (app.apns_providers if platform is Platform.APNS else app.fcm_providers)
            }
        )
        registration["allOf"].append(
            {
                "if": {
                    "properties": {"platform": {"const": platform.value}},
                    "required": ["platform"],
                },
                "then": {"properties": {"push_provider_name": {"enum": [*names, None]}}},
            }
        )
    return document


@blueprint.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document_for(receiver().settings, current_app.config["CALLPUSH_VERSION"]))
