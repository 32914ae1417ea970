"""The JSON bodies the device, receipts and admin APIs take, as pydantic models.

Each model validates a request and is the OpenAPI document's schema for it
(:func:`component_schemas`, served by webhook_app.openapi), so the two cannot drift apart.  A
body that does not validate is an :class:`~webhook_app.api_errors.ApiError` 400 naming the field
(:func:`validated`), with the same messages the handlers gave when they checked by hand.

What JSON Schema cannot say is checked here too, in the model validators, and stated in the
schema with ``if``/``then`` and ``oneOf``: the token's format per platform
(worker.delivery.push_tokens), the APNs bundle id rules (worker.foundation.apns_topics), VoIP for
APNs only, ``until`` only when muting, and a replay's two ways of choosing events.  Rules that
need the deployment (a provider name, an ``app``) or the caller (``user_id``) stay in the
handlers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, SkipJsonSchema, models_json_schema
from pydantic_core import PydanticCustomError, core_schema

from webhook_app.api_errors import ApiError
from worker.delivery import push_tokens
from worker.delivery.push_tokens import token_problem
from worker.foundation.apns_topics import bundle_id_problem
from worker.foundation.settings import MAX_PROVIDER_NAME
from worker.ops import event_log
from worker.ops.replay_jobs import MAX_SELECTED
from worker.push.base import Platform
from worker.storage import preferences
from worker.storage.models import utcnow
from worker.storage.receipts import RECEIPT_ID_LENGTH

# The column sizes in worker/storage/models.py.
MAX_USER_ID = 255
MAX_DEVICE_TOKEN = 512
MAX_APP_ID = 255
MAX_API_KEY = 64

REF_TEMPLATE = "#/components/schemas/{model}"

# Push tokens, bundle ids and provider names: printable ASCII without spaces.
PRINTABLE_ASCII = "^[!-~]+$"
APNS_TOKEN_PATTERN = (
    f"^(?:[0-9A-Fa-f]{{2}}){{{push_tokens.APNS_MIN_BYTES},{push_tokens.APNS_MAX_BYTES}}}$"
)
FCM_TOKEN_PATTERN = f"^[A-Za-z0-9_:-]{{{push_tokens.FCM_MIN_LENGTH},{push_tokens.FCM_MAX_LENGTH}}}$"
# Two or more components of letters, digits and hyphens, not ending in ".voip" (any case).
BUNDLE_ID_PATTERN = r"^(?![\s\S]*\.[vV][oO][iI][pP]$)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$"
RECEIPT_ID_PATTERN = f"^[0-9a-f]{{{RECEIPT_ID_LENGTH}}}$"
# Text compared with stored text: anything but NUL, which PostgreSQL cannot store.
TEXT_PATTERN = "^[^\\u0000]*$"

# What worker.ops.event_log.parse_time takes, as a pattern a generator can follow: a duration ago
# (`30m`, `1h30m`, `2d`, `1w`; the service also takes longer ones up to year 1) or an ISO 8601
# date or time (UTC unless it has an offset).  Documented, not enforced: parse_time decides.
_DURATION = r"[1-9][0-9]{0,3}[smhdw](?:[0-9]{1,4}[smhdw]){0,3}"
_ISO_TIME = (
    r"[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9])?)?"
)
TIME_VALUE: dict[str, Any] = {
    "type": "string",
    "description": "A duration ago (`30m`, `1h`, `2d`, `1w`) or an ISO 8601 timestamp.",
    "pattern": f"^(?:{_DURATION}|{_ISO_TIME})$",
    "examples": ["1h", "2024-05-01T06:00:00Z"],
}
# The same, or empty for no bound (a query parameter's "not given").
TIME_FILTER: dict[str, Any] = {**TIME_VALUE, "pattern": f"^(?:{_DURATION}|{_ISO_TIME})?$"}


# --- the models' base and their refusals ------------------------------------------------------


class Body(BaseModel):
    """A JSON request body: unknown fields are refused, and every model validator's rule is
    stated in the schema it documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)


BodyModel = TypeVar("BodyModel", bound=Body)


def refused(message: str, field: str | None = None) -> PydanticCustomError:
    """A validator's refusal with the message the caller gets.  ``field``: the one at fault,
    for a model validator (a field validator's is its own)."""
    # The message goes in the context, never in the template, which pydantic would format.
    return PydanticCustomError("refused", "{message}", {"message": message, "field": field})


def validated(model: type[BodyModel], document: dict[str, Any]) -> BodyModel:
    """``document`` (a parsed JSON object) as ``model``, or a 400 naming the field at fault."""
    try:
        return model.model_validate(document)
    except ValidationError as invalid:
        raise _refusal(invalid) from None


def _refusal(invalid: ValidationError) -> ApiError:
    errors = invalid.errors(include_url=False)
    # An unknown field first: refused rather than ignored, as e.g. Stream's "voip_token" would
    # silently mean voip=false, and likely the reason the other fields look wrong.
    unknown = sorted((e for e in errors if e["type"] == "extra_forbidden"), key=lambda e: e["loc"])
    first = unknown[0] if unknown else errors[0]
    context = first.get("ctx", {})
    field = context.get("field") or (str(first["loc"][0]) if first["loc"] else None)
    kind = first["type"]
    if kind == "refused":
        message = context["message"]
    elif kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        message = f"unknown field {field!r}"
    elif kind == "bool_type":
        message = f"{field} must be true or false"
    elif kind == "string_type":
        message = f"{field} must be a string"
    elif kind == "string_too_short":
        message = f"{field} must be a non-empty string"
    elif kind == "string_too_long":
        message = f"{field} is longer than {context['max_length']} characters"
    elif kind in ("enum", "literal_error"):
        # pydantic's "'apns' or 'fcm'", as JSON writes the values.
        message = f"{field} must be {context['expected'].replace(chr(39), chr(34))}"
    else:
        message = f"{field}: {first['msg']}"
    return ApiError(400, message, field)


# --- value types ------------------------------------------------------------------------------


def _printable_ascii(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or not re.fullmatch(PRINTABLE_ASCII, value):
        raise refused(
            f"{info.field_name} must be a non-empty string of printable ASCII without spaces"
        )
    return value


# The pattern is checked by _printable_ascii (with its message); the length by pydantic.
DeviceToken = Annotated[
    str,
    Field(max_length=MAX_DEVICE_TOKEN, json_schema_extra={"pattern": PRINTABLE_ASCII}),
    BeforeValidator(_printable_ascii),
]
AppId = Annotated[
    str,
    Field(max_length=MAX_APP_ID, json_schema_extra={"pattern": PRINTABLE_ASCII}),
    BeforeValidator(_printable_ascii),
]
ProviderName = Annotated[
    str,
    Field(max_length=MAX_PROVIDER_NAME, json_schema_extra={"pattern": PRINTABLE_ASCII}),
    BeforeValidator(_printable_ascii),
]
UserId = Annotated[str, Field(min_length=1, max_length=MAX_USER_ID, pattern=TEXT_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]


def _event_ids(value: Any) -> list[int]:
    wrong = refused(f"event_ids must be a non-empty list of integers from 1 to {event_log.MAX_ID}")
    # JSON numbers only ("1" is text); 2.0 is an integer to JSON Schema, and here.
    if not isinstance(value, list) or not value:
        raise wrong
    if len(value) > MAX_SELECTED:
        raise refused(f"at most {MAX_SELECTED} event_ids at a time")
    ids = []
    for item in value:
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise wrong
        if not 1 <= item <= event_log.MAX_ID:
            raise wrong
        ids.append(item)
    return ids


EventId = Annotated[int, Field(ge=1, le=event_log.MAX_ID)]
EventIds = Annotated[list[EventId], Field(min_length=1, max_length=MAX_SELECTED)]


def event_log_time(value: Any, name: str) -> datetime | None:
    """The admin API's time ``name`` (worker.ops.event_log.parse_time), in a body or a query;
    empty is no bound."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string: 1h, 2d or an ISO 8601 time", name)
    try:
        return event_log.parse_time(value)
    except ValueError as error:
        raise ApiError(400, f"{name}: {error}", name) from None


def _event_log_time(value: Any, info: ValidationInfo) -> datetime | None:
    try:
        return event_log_time(value, str(info.field_name))
    except ApiError as error:
        raise refused(error.message) from None


def _rfc3339(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise refused("until must be an RFC 3339 timestamp string")
    try:
        return preferences.parse_rfc3339(value)
    except ValueError as error:
        raise refused(f"until: {error}") from None


# --- the bodies -------------------------------------------------------------------------------


class DeviceRegistration(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"voip": {"const": True}}, "required": ["voip"]},
                    "then": {"properties": {"platform": {"const": "apns"}}},
                },
                # What worker/delivery/push_tokens.py checks, per platform.
                {
                    "if": {"properties": {"platform": {"const": "apns"}}},
                    "then": {"properties": {"token": {"pattern": APNS_TOKEN_PATTERN}}},
                },
                {
                    "if": {"properties": {"platform": {"const": "fcm"}}},
                    "then": {"properties": {"token": {"pattern": FCM_TOKEN_PATTERN}}},
                },
                # And the bundle id rules of worker/foundation/apns_topics.py (an FCM app_id is
                # free).
                {
                    "if": {"properties": {"platform": {"const": "apns"}}},
                    "then": {"properties": {"app_id": {"pattern": BUNDLE_ID_PATTERN}}},
                },
            ]
        }
    )

    token: DeviceToken
    platform: Platform
    voip: StrictBool = Field(False, description="A PushKit token: APNs only.")
    app_id: AppId | None = Field(
        None,
        description="APNs: the app's bundle id (without .voip); default: its provider's bundle_id.",
    )
    push_provider_name: ProviderName | None = Field(
        None,
        description="One of the app's configured push providers of the platform; default: the "
        "app's default provider.",
    )
    user_id: UserId | None = None

    @model_validator(mode="after")
    def _platform_rules(self) -> DeviceRegistration:
        problem = token_problem(self.platform, self.token)
        if problem is not None:
            raise refused(f"token: {problem}", "token")
        if self.voip and self.platform is not Platform.APNS:
            raise refused("voip is for APNs (PushKit) tokens only", "voip")
        if self.app_id is not None and self.platform is Platform.APNS:
            problem = bundle_id_problem(self.app_id)
            if problem:
                raise refused(f"app_id (the app's bundle id) {problem}", "app_id")
        return self


class PreferenceChange(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"call_pushes": {"const": "on"}}},
            "then": {"properties": {"until": {"type": "null"}}},
        }
    )

    call_pushes: Literal["on", "off"]
    until: Annotated[
        datetime | None,
        BeforeValidator(_rfc3339),
        WithJsonSchema({"type": ["string", "null"], "format": "date-time"}),
    ] = Field(None, description="Only with `off`; in the future.")
    user_id: UserId | None = None

    @model_validator(mode="after")
    def _until_mutes(self) -> PreferenceChange:
        if self.until is None:
            return self
        if self.call_pushes != "off":
            raise refused('until is only allowed with "call_pushes": "off"', "until")
        if self.until <= utcnow():
            raise refused("until must be in the future", "until")
        return self


def _receipt_id(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(RECEIPT_ID_PATTERN, value):
        raise refused(
            f"receipt_id must be the push's callpush_receipt_id ({RECEIPT_ID_LENGTH} lowercase "
            "hex digits)"
        )
    return value


class ReceiptConfirmation(Body):
    receipt_id: Annotated[
        str,
        BeforeValidator(_receipt_id),
        WithJsonSchema({"type": "string", "pattern": RECEIPT_ID_PATTERN}),
        Field(description="The push's `callpush_receipt_id`, as it came."),
    ]


# since/until/type/app choose the events of "failed": true.
_WINDOW = ("since", "until", "type", "app")


class ReplayRequest(Body):
    """Either `event_ids`, or `"failed": true` with `since` (and optionally `until`, `type`)
    for every failed event received in that window."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["event_ids"],
                    "properties": {"failed": {"const": False}},
                    "not": {"anyOf": [{"required": [name]} for name in _WINDOW]},
                },
                {
                    "required": ["failed", "since"],
                    "properties": {"failed": {"const": True}},
                    "not": {"required": ["event_ids"]},
                },
            ]
        }
    )

    # Declared in the order they are checked: the flags, then the choice of events.
    dry_run: StrictBool = False
    force: StrictBool = False
    allow_stale: StrictBool = Field(
        False, description="Push even events that arrived stale (never pushed)."
    )
    failed: StrictBool = Field(False, description="Every failed event in a window.")
    # Optional, but not null: the validator refuses an explicit null as today's API did.
    event_ids: Annotated[EventIds | SkipJsonSchema[None], BeforeValidator(_event_ids)] = None
    since: Annotated[
        datetime | None, BeforeValidator(_event_log_time), WithJsonSchema(TIME_VALUE)
    ] = None
    until: Annotated[
        datetime | None,
        BeforeValidator(_event_log_time),
        WithJsonSchema({**TIME_FILTER, "type": ["string", "null"]}),
    ] = None
    type: Text | None = None
    app: Text | None = Field(None, description="With `failed`: one app's only.")

    @model_validator(mode="after")
    def _one_choice(self) -> ReplayRequest:
        given = self.model_fields_set
        if self.failed == ("event_ids" in given):
            raise refused('give "event_ids", or "failed": true with "since" (not both)')
        if not self.failed and given.intersection(_WINDOW):
            raise refused('since/until/type/app select events for "failed": true only')
        if self.failed and self.since is None:
            raise refused('"failed": true needs "since" (e.g. "12h")', "since")
        return self


# --- the document's schemas -------------------------------------------------------------------

DOCUMENTED: tuple[type[Body], ...] = (
    DeviceRegistration,
    PreferenceChange,
    ReceiptConfirmation,
    ReplayRequest,
)


class _DocumentSchema(GenerateJsonSchema):
    """Without pydantic's titles ("User Id"): the document names a schema by its key."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> dict[str, Any]:
        generated = super().model_schema(schema)
        generated.pop("title", None)
        return generated

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        generated = super().default_schema(schema)
        if generated.get("default", ...) is None:
            # None is "not given" here; as a default it would break a schema without null.
            del generated["default"]
        return generated

    def enum_schema(self, schema: core_schema.EnumSchema) -> dict[str, Any]:
        generated = super().enum_schema(schema)
        generated.pop("description", None)  # the enum class's docstring is about Python
        return generated


def component_schemas() -> dict[str, Any]:
    """The models' schemas (and those they refer to) for ``components/schemas``, with the
    time values the document's query parameters share."""
    _, generated = models_json_schema(
        [(model, "validation") for model in DOCUMENTED],
        ref_template=REF_TEMPLATE,
        schema_generator=_DocumentSchema,
    )
    schemas: dict[str, Any] = generated["$defs"]
    for schema in schemas.values():
        schema.pop("title", None)  # pydantic names enums in their own schema
    return {**schemas, "TimeValue": TIME_VALUE, "TimeFilter": TIME_FILTER}
