"""The JSON error answers of the device, receipts and admin APIs, written once.

Every refusal is ``{"error": <message>}``, plus ``"field"`` naming the body or query field at
fault (the OpenAPI document's ``Error`` schema).  A handler raises :class:`ApiError` (or
``InvalidInput`` from webhook_app.operator_input, a 400); :func:`register` answers both, and a
storage failure as a 503, on the blueprint given.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from webhook_app.operator_input import InvalidInput


class ApiError(Exception):
    """A refusal: the HTTP status, a message for the caller and the field at fault, if any.

    ``retry_after`` (seconds) becomes a Retry-After header, as a 429 needs (RFC 6585 §4).
    """

    def __init__(
        self, status: int, message: str, field: str | None = None, *, retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after


def register(blueprint: Blueprint, *, log: logging.Logger, challenge: str) -> None:
    """Answer ``blueprint``'s errors as JSON.  ``challenge`` is its 401's WWW-Authenticate
    header (RFC 6750 §3: which token the caller should have sent)."""

    def api_error(error: ApiError) -> ResponseReturnValue:
        return error_response(error, challenge)

    def invalid_input(error: InvalidInput) -> ResponseReturnValue:
        return error_response(ApiError(400, error.message, error.field), challenge)

    def storage_error(error: SQLAlchemyError) -> ResponseReturnValue:
        # The class and the route only: SQLAlchemy's message carries the statement's parameters,
        # and a path can hold a whole device token (DELETE /devices/<token>).
        rule = request.url_rule.rule if request.url_rule is not None else "?"
        log.error("%s %s: storage error %s", request.method, rule, type(error).__name__)
        return jsonify(error="storage unavailable, retry later"), 503

    blueprint.register_error_handler(ApiError, api_error)
    blueprint.register_error_handler(InvalidInput, invalid_input)
    blueprint.register_error_handler(SQLAlchemyError, storage_error)


def error_response(error: ApiError, challenge: str) -> ResponseReturnValue:
    body: dict[str, Any] = {"error": error.message}
    if error.field is not None:
        body["field"] = error.field
    response = jsonify(body)
    response.status_code = error.status
    if error.status == 401:
        response.headers["WWW-Authenticate"] = challenge
    if error.retry_after:
        response.headers["Retry-After"] = str(error.retry_after)
    return response
