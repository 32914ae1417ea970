"""The one typed configuration object, read once at start-up and passed down.

Sources, later ones winning: built-in defaults < the TOML file < ``CALLPUSH_*`` environment
variables (nested keys joined with ``__``, e.g. ``CALLPUSH_APNS__KEY_ID``).  Nothing here is read
at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.foundation.apns_topics import bundle_id_problem
from worker.foundation.secret_sources import (
    FileSecret,
    broker_url_with_password,
    database_url_with_password,
    one_source,
    read_secret_file,
    read_secret_lines,
)

CONFIG_ENV = "CALLPUSH_CONFIG"
DEFAULT_CONFIG_FILE = "callpush.toml"

# Used only by the embedded mode (`callpush run` / `callpush simulate`) when no Stream app is
# configured, so a fresh machine can receive a signed sample ring.  `callpush web` refuses them.
DEV_API_KEY = "callpush-dev-key"
DEV_API_SECRET = "callpush-dev-secret-not-for-production"

# Stream's push provider names are 1-36 characters (PushProviderRequest.name in
# https://github.com/GetStream/protocol/blob/main/openapi/v2/video-serverside-api.yaml).
MAX_PROVIDER_NAME = 36
# The non-ring event types that send pushes, and those whose FCM message goes out at high
# priority by default: the ones Stream's Android SDK shows a notification for (its
# VideoPushDelegate handles call.ring, call.missed, call.notification and call.live_started and
# drops call.session_started:
# https://github.com/GetStream/stream-video-android/blob/8fbaea45804cb3276b3dc41d6f8a55a07cfdf3b6/stream-video-android-core/src/main/kotlin/io/getstream/video/android/core/notifications/internal/VideoPushDelegate.kt).
# Firebase lowers an app's high-priority messages to normal when they do not end in a visible
# notification, and then rings cannot wake a phone in Doze
# (https://firebase.google.com/docs/cloud-messaging/android/message-priority).
NON_RING_PUSH_EVENTS = (
    "call.notification",
    "call.missed",
    "call.live_started",
    "call.session_started",
)
DEFAULT_FCM_HIGH_PRIORITY = ["call.notification", "call.missed", "call.live_started"]


class ApnsSettings(BaseModel):
    """Token (.p8) authentication to APNs.  Unset ``key_file`` = no APNs (console provider)."""

    key_file: Path | None = None
    key_id: str = ""
    team_id: str = ""
    bundle_id: str = ""
    use_sandbox: bool = False
    # Real deployments sometimes go through a gateway; tests point this at a fake APNs.
    host: str | None = None
    port: int | None = None
    ca_file: Path | None = None
    timeout_seconds: float = 5.0
    max_connections: int = 10

    @property
    def configured(self) -> bool:
        return self.key_file is not None

    @model_validator(mode="after")
    def _complete_when_configured(self) -> ApnsSettings:
        if self.key_file is not None:
            missing = [n for n in ("key_id", "team_id", "bundle_id") if not getattr(self, n)]
            if missing:
                raise ValueError(f"apns.key_file is set but apns.{', apns.'.join(missing)} is not")
        return self


class FcmSettings(BaseModel):
    """FCM HTTP v1 with a Google service account.  Unset = no FCM (console provider)."""

    service_account_file: Path | None = None
    project_id: str | None = None
    endpoint: str = "https://fcm.googleapis.com/v1/projects"
    timeout_seconds: float = 5.0
    max_workers: int = 16

    @property
    def configured(self) -> bool:
        return self.service_account_file is not None


class ApnsProviderSettings(BaseModel):
    """One of an app's named APNs providers (in Stream: a push provider of type "apn", whose
    name devices carry as ``push_provider_name``).  Unset keys take the value of [apns]: one .p8
    key serves every app of a team, so a debug build's provider is often just its bundle_id and
    use_sandbox = true.  A key of its own comes with its key_id (team_id may be inherited)."""

    model_config = ConfigDict(extra="forbid")

    key_file: Path | None = None
    key_id: str | None = None
    team_id: str | None = None
    bundle_id: str | None = None
    use_sandbox: bool | None = None
    host: str | None = None
    port: int | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _key_with_its_id(self) -> ApnsProviderSettings:
        # A key's id is its own: one inherited from [apns] with another key_file would be wrong.
        if (self.key_file is None) != (self.key_id is None):
            raise ValueError("key_file and key_id go together: set both, or neither")
        return self

    def over(self, default: ApnsSettings) -> ApnsSettings:
        """The provider's complete settings: its own keys over [apns]'s."""
        return ApnsSettings.model_validate(
            default.model_dump() | self.model_dump(exclude_none=True)
        )


class FcmProviderSettings(BaseModel):
    """One of an app's named FCM providers (in Stream: a push provider of type "firebase"),
    e.g. a second Firebase project.  Unset keys take the value of [fcm], except project_id when
    the provider has a service account of its own."""

    model_config = ConfigDict(extra="forbid")

    service_account_file: Path | None = None
    project_id: str | None = None
    endpoint: str | None = None

    def over(self, default: FcmSettings) -> FcmSettings:
        """The provider's complete settings: its own keys over [fcm]'s.  A service account of
        its own brings its own project (from the file, unless project_id is set here)."""
        base = default.model_dump()
        if self.service_account_file is not None:
            base["project_id"] = None
        return FcmSettings.model_validate(base | self.model_dump(exclude_none=True))


class StreamAppSettings(BaseModel):
    """One Stream app.  Several may be served by one deployment (e.g. dev and prod).

    Stream holds one API secret per app: it signs the webhooks Stream sends and checks the server
    tokens of calls to Stream's API (https://getstream.io/video/docs/api/webhooks/overview/;
    stream-py's ``Stream.verify_webhook`` and ``create_token`` both use ``api_secret``,
    https://github.com/GetStream/stream-py/blob/main/getstream/stream.py).  ``api_secret`` is
    the one callpush believes Stream holds now (it signs callpush's calls to Stream);
    ``previous_api_secrets`` are still accepted on incoming webhooks and device-API tokens, and
    tried on a 401 from Stream, so a rotation breaks neither direction (README: rotating the
    API secret).

    ``api_secrets`` is the older spelling, kept working: a list (or a comma-separated string)
    whose first entry is the current secret unless ``api_secret`` is set, the rest previous
    ones.  After validation it lists every secret, the current one first.

    ``api_secret_file`` and ``previous_api_secrets_file`` (one secret per line) give the same
    secrets as files (Docker/Kubernetes secrets), read once here, at validation; a secret given
    both ways is an error (worker/foundation/secret_sources.py).
    """

    api_key: str
    api_secret: SecretStr | None = None
    api_secret_file: Path | None = None
    previous_api_secrets: list[SecretStr] = []
    previous_api_secrets_file: Path | None = None
    api_secrets: list[SecretStr] = []
    base_url: str = "https://video.stream-io-api.com"
    # Non-ring event types whose FCM data message goes out at android.priority "high"; the
    # others go out at "normal".  call.ring is always high.
    fcm_high_priority: list[str] = DEFAULT_FCM_HIGH_PRIORITY
    # Ring a phone that has no VoIP token through its regular APNs token, with a time-sensitive
    # alert (apps without CallKit).
    alert_ring: bool = True
    # Named push providers, as in the app's Stream dashboard: a device is sent through the one
    # its push_provider_name names.  Empty: every device goes through [apns] / [fcm].
    apns_providers: dict[str, ApnsProviderSettings] = {}
    fcm_providers: dict[str, FcmProviderSettings] = {}
    # The named provider for devices that name none; unset: [apns] / [fcm].
    default_apns_provider: str | None = None
    default_fcm_provider: str | None = None
    # Whether a push is sent, and its title/body: "local" = [call_types] and the built-in
    # wording; "stream" = the call type's notification_settings in Stream (per-event switches
    # and templates), read from Stream's API in the background
    # (worker/delivery/call_type_settings.py).
    push_settings_source: Literal["local", "stream"] = "local"

    @field_validator("api_secrets", "previous_api_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            return [s.strip() for s in raw.split(",") if s.strip()]
        return value

    @model_validator(mode="after")
    def _current_first(self) -> StreamAppSettings:
        self._read_secret_files()
        listed = [s for s in self.api_secrets if s.get_secret_value()]
        current = self.api_secret if self.api_secret is not None else None
        if current is None or not current.get_secret_value():
            if not listed:
                raise ValueError("api_secret (or api_secrets) is required")
            current = listed[0]
        seen = {current.get_secret_value()}
        previous: list[SecretStr] = []
        for secret in [*self.previous_api_secrets, *listed]:
            value = secret.get_secret_value()
            if value and value not in seen:
                seen.add(value)
                previous.append(secret)
        self.api_secret = current
        self.previous_api_secrets = previous
        self.api_secrets = [current, *previous]
        return self

    def _read_secret_files(self) -> None:
        # An already validated app's own values (its secret read from this very file) pass
        # again unchanged, so validating a dump of a loaded app neither fails nor re-reads.
        path = self.api_secret_file
        if path is not None and not _read_from(self.api_secret, path):
            one_source(self.api_secret, path, "api_secret", "api_secret_file")
            self.api_secret = read_secret_file("api_secret_file", path)
        path = self.previous_api_secrets_file
        previous = self.previous_api_secrets
        if path is not None and not (previous and all(_read_from(s, path) for s in previous)):
            one_source(
                self.previous_api_secrets or None,
                path,
                "previous_api_secrets",
                "previous_api_secrets_file",
            )
            self.previous_api_secrets = list(read_secret_lines("previous_api_secrets_file", path))

    @field_validator("fcm_high_priority")
    @classmethod
    def _known_event_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in NON_RING_PUSH_EVENTS and t != "call.ring"]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not an event type that sends a push "
                f"(one of {', '.join(NON_RING_PUSH_EVENTS)}; call.ring is always high)"
            )
        return value

    @model_validator(mode="after")
    def _provider_names(self) -> StreamAppSettings:
        for kind, named in (("apns", self.apns_providers), ("fcm", self.fcm_providers)):
            for name in named:
                problem = provider_name_problem(name)
                if problem:
                    raise ValueError(f"{kind}_providers: provider name {name!r} {problem}")
        for kind, default, named in (
            ("apns", self.default_apns_provider, self.apns_providers),
            ("fcm", self.default_fcm_provider, self.fcm_providers),
        ):
            if default is not None and default not in named:
                raise ValueError(
                    f"default_{kind}_provider {default!r} is not one of {kind}_providers "
                    f"({', '.join(named) or 'none configured'})"
                )
        return self

    @property
    def signing_secret(self) -> str:
        """The current secret: what callpush signs its calls to Stream with, at first."""
        return self.api_secrets[0].get_secret_value()

    def fcm_priority(self, event_type: str) -> Literal["high", "normal"]:
        if event_type == "call.ring" or event_type in self.fcm_high_priority:
            return "high"
        return "normal"


def _read_from(secret: SecretStr | None, path: Path) -> bool:
    return isinstance(secret, FileSecret) and secret.path == path


def provider_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a push provider name; None when it can."""
    if not name or len(name) > MAX_PROVIDER_NAME:
        return f"must be 1 to {MAX_PROVIDER_NAME} characters (Stream's limit)"
    if not name.isprintable() or any(c.isspace() for c in name):
        return "must be printable, without spaces"
    return None


class RingSettings(BaseModel):
    # Used when an event carries no call.settings.ring (stream-protocol.md §5: read the live
    # values from the event; the built-in defaults are undocumented).
    default_timeout_ms: int = 30_000
    # A ring push APNs/FCM certainly did not take (429, 5xx, no connection) is retried until the
    # ring is over: the first wait is retry_backoff_ms, doubling up to retry_backoff_max_ms,
    # each drawn between half and all of that (jitter), longer when Retry-After says so.
    retry_backoff_ms: Annotated[int, Field(ge=1)] = 100
    retry_backoff_max_ms: Annotated[int, Field(ge=1)] = 2_000
    # Deprecated and ignored (the fixed list of waits before this version gave up after three
    # retries); `callpush config check` warns when it is set.
    retry_delays_ms: list[int] | None = None

    @model_validator(mode="after")
    def _backoff_cap_not_below_start(self) -> RingSettings:
        if self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ValueError("ring.retry_backoff_max_ms must not be below ring.retry_backoff_ms")
        return self


class DeviceSettings(BaseModel):
    # "local": callpush's own registry (CLI / POST /devices).  "stream": Stream's devices API,
    # for apps whose SDKs already register devices with Stream (mirrored into the registry).
    source: Literal["local", "stream"] = "local"
    # Stream device lists are cached this long, so a fan-out does not call Stream per push.
    cache_seconds: float = 30.0
    # Active devices a user of an app may have in the local registry; registering one more
    # disables the one registered longest ago ("evicted").  25 is Stream's own limit.
    max_per_user: Annotated[int, Field(ge=1, le=10_000)] = 25


class PushTemplate(BaseModel):
    """Title and body of a push; Stream's variables, e.g. ``{{ user.display_name }}``."""

    title: str
    body: str = ""


class CallTypeSettings(BaseModel):
    """Per call type (``[call_types.default]``; ``[call_types."*"]`` applies to all)."""

    # Event types that send no push for this call type, e.g. ["call.session_started"].
    disabled_events: list[str] = []
    # Event type -> template, overriding the defaults (worker/delivery/templates.py).
    templates: dict[str, PushTemplate] = {}


class PushSettingsCacheSettings(BaseModel):
    """How the call types' notification_settings of apps with push_settings_source = "stream"
    are kept: fetched at worker start and refreshed in the background, never on a push's path."""

    # A fetched copy is refreshed after this long (the settings changed in Stream's dashboard
    # reach the pushes within it).
    refresh_seconds: Annotated[float, Field(gt=0)] = 300.0
    # After a failed fetch (Stream down), the next attempt waits this long; the last good copy
    # is used meanwhile.
    retry_seconds: Annotated[float, Field(gt=0)] = 30.0


class FanoutSettings(BaseModel):
    # Recipients per bulk task: big enough to batch pushes, small enough to retry cheaply.
    chunk_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    # Pushes of a chunk in flight at once, each answer recorded as it arrives: also the most a
    # worker killed mid-send can leave unrecorded (and so send again).
    send_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    # Transient failures of non-ring pushes: exponential backoff with full jitter, capped.
    max_retries: int = 6
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0


class SweeperSettings(BaseModel):
    # Every interval, inbox events still unprocessed after min_age are queued again (a broker
    # outage, a lost worker).  min_age must exceed a normal processing time.
    interval_seconds: float = 30.0
    min_age_seconds: float = 60.0
    # An event whose processing has started this many times without finishing (a worker killed
    # by it every time, say) is not queued again but marked failed.  Above fanout.max_retries + 1,
    # so a fan-out retrying Stream's API is never cut short.
    max_attempts: Annotated[int, Field(ge=1)] = 8


class IntakeSettings(BaseModel):
    """What the receiver (and `callpush events import`) refuses to process again or late."""

    # Stream's signature covers no timestamp, so a captured webhook re-sent with a new
    # X-Webhook-Id verifies.  A body the inbox already holds for the same app, received less
    # than this long ago, is answered "duplicate" and not processed again.
    dedupe_window_seconds: Annotated[float, Field(gt=0)] = 86_400.0
    # A push event (call.ring, call.notification, call.missed, call.session_started,
    # call.live_started) whose created_at is older than this when it arrives is stored as
    # ignored and never pushed.  Stream's own retries end within about 15 s; five minutes leaves
    # room for a slow delivery and clock skew, and no ring lasts longer (at most 180 s).
    max_event_age_seconds: Annotated[float, Field(gt=0)] = 300.0

    @model_validator(mode="after")
    def _window_covers_the_age(self) -> IntakeSettings:
        # Every replay is then refused by one rule or the other: within the window as a
        # duplicate, after it as too old.
        if self.dedupe_window_seconds < self.max_event_age_seconds:
            raise ValueError(
                "intake.dedupe_window_seconds must be at least intake.max_event_age_seconds"
            )
        return self


class RetentionSettings(BaseModel):
    # Events older than this many days are deleted with their delivery records by the periodic
    # purge (`callpush beat`); 0 keeps them forever.
    days: Annotated[int, Field(ge=0)] = 30
    interval_seconds: float = 3600.0


class DatabaseSettings(BaseModel):
    """Every wait on the database is bounded (README: Configuration, "Timeouts")."""

    # libpq's connect_timeout: a host that accepts TCP but never completes the handshake.
    # Whole seconds, at least 2 (https://www.postgresql.org/docs/current/libpq-connect.html).
    connect_timeout_seconds: Annotated[int, Field(ge=2, le=600)] = 2
    # PostgreSQL cancels a statement running longer (statement_timeout, set at connect time);
    # callpush closes a connection whose statement or commit got no answer 1 s after it.
    statement_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # The same bound for the web processes (webhooks, device and admin API): short enough that
    # a webhook is answered 503 well within Stream's 6 s per attempt, so Stream retries.
    web_statement_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    # Waiting for a free pooled connection.
    pool_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0
    # The web processes stop trying the database for this long after this many consecutive
    # connection failures, answering webhooks 503 at once (Stream retries), so a dead database
    # cannot hold every request thread; then one request tries again.
    breaker_failures: Annotated[int, Field(ge=1)] = 3
    breaker_reset_seconds: Annotated[float, Field(gt=0)] = 2.0


class BrokerSettings(BaseModel):
    """Publishing to the broker is bounded and guarded by a circuit breaker (README: Guarantees,
    "broker down")."""

    # Socket timeouts of the web processes' broker connections: a publish fails after about
    # twice this (one reconnect attempt) instead of hanging.
    publish_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    # After this many consecutive failed publishes (each already retried once on a fresh
    # connection), webhooks are stored and answered without a publish attempt; every
    # breaker_reset_seconds the broker is probed, and once it answers the events stored
    # meanwhile are queued at once, rings first.  One is enough: a circuit opened by a blip
    # only delays the events of the next second, which the drain then queues.
    breaker_failures: Annotated[int, Field(ge=1)] = 1
    breaker_reset_seconds: Annotated[float, Field(gt=0)] = 1.0


class CelerySettings(BaseModel):
    """What Celery's own tools see of the workers (README: watching the workers)."""

    # Workers send task events (received, started, succeeded, failed, retried) and publishers a
    # task-sent event, for `celery events` and Flower.  Off by default: each task then costs
    # a few more broker messages, and nothing reads them unless a monitor is attached.
    task_events: bool = False


class AdminThrottleSettings(BaseModel):
    # Failed attempts at the admin token (dashboard logins, admin API requests) allowed per
    # client address in any window_seconds; past that the client is answered 429 until its
    # oldest failure is window_seconds old.  Counted per web process (README: security model).
    max_failures: Annotated[int, Field(ge=1)] = 10
    window_seconds: Annotated[float, Field(gt=0)] = 300.0
    # Client addresses remembered per process; the one that failed longest ago is forgotten
    # first, so memory stays bounded whatever the number of addresses.
    max_clients: Annotated[int, Field(ge=1)] = 10_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLPUSH_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = "sqlite:///callpush.db"
    database: DatabaseSettings = DatabaseSettings()
    # None = embedded: an in-process broker and worker (`callpush run`).
    broker_url: str | None = None
    broker: BrokerSettings = BrokerSettings()
    celery: CelerySettings = CelerySettings()
    apps: list[StreamAppSettings] = []
    apns: ApnsSettings = ApnsSettings()
    fcm: FcmSettings = FcmSettings()
    ring: RingSettings = RingSettings()
    sweeper: SweeperSettings = SweeperSettings()
    intake: IntakeSettings = IntakeSettings()
    retention: RetentionSettings = RetentionSettings()
    fanout: FanoutSettings = FanoutSettings()
    devices: DeviceSettings = DeviceSettings()
    call_types: dict[str, CallTypeSettings] = {}
    push_settings: PushSettingsCacheSettings = PushSettingsCacheSettings()
    stream_api_timeout_seconds: float = 5.0
    push_provider: Literal["auto", "console"] = "auto"
    max_body_bytes: int = 1024 * 1024
    log_level: str = "INFO"
    # "json": one JSON object per line (time, level, logger, message, event_id, call_cid);
    # "text": readable lines.  Unset: text for `callpush run`, json for web, worker and beat.
    log_format: Literal["text", "json"] | None = None
    # Bearer token of the admin API (/admin/...) and the ops dashboard (/dashboard/); unset =
    # both answer 404.
    admin_token: SecretStr | None = None
    # Secrets as files (Docker/Kubernetes secrets), read once at load; each *_file is an
    # alternative to its value, never an addition (worker/foundation/secret_sources.py).
    admin_token_file: Path | None = None
    # The password of database_url / broker_url, inserted into a URL that has none.
    database_password_file: Path | None = None
    broker_password_file: Path | None = None
    admin_throttle: AdminThrottleSettings = AdminThrottleSettings()
    # Reverse proxies (load balancer, TLS terminator) in front of `callpush web`: that many
    # X-Forwarded-For / X-Forwarded-Proto entries are trusted, so the client address (for
    # throttling) and https (for the Secure cookie) are the proxy's view.  0: none trusted.
    trusted_proxies: Annotated[int, Field(ge=0, le=10)] = 0

    # Environment shortcuts for the common single-app deployment.
    stream_api_key: str | None = None
    # The current secret; a comma-separated value keeps its older meaning: the first is the
    # current one, the rest previous ones.
    stream_api_secret: SecretStr | None = None
    stream_previous_api_secrets: SecretStr | None = None  # comma-separated
    stream_api_secret_file: Path | None = None  # one secret
    stream_previous_api_secrets_file: Path | None = None  # one secret per line
    stream_base_url: str | None = None
    stream_push_settings_source: Literal["local", "stream"] | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _resolve_secrets(self) -> Settings:
        # In this order: the single-app shortcut may take its secrets from files.
        self._read_secret_files()
        self._fold_single_app_shortcut()
        return self

    def _read_secret_files(self) -> None:
        """Each ``*_file`` setting's secret, read now, into the setting it stands for."""
        for name, env in (
            ("admin_token", "CALLPUSH_ADMIN_TOKEN"),
            ("stream_api_secret", "CALLPUSH_STREAM_API_SECRET"),
        ):
            path: Path | None = getattr(self, f"{name}_file")
            if path is not None:
                value_name, file_name = f"{name} ({env})", f"{name}_file ({env}_FILE)"
                one_source(getattr(self, name), path, value_name, file_name)
                setattr(self, name, read_secret_file(f"{name}_file", path))
        path = self.stream_previous_api_secrets_file
        if path is not None:
            one_source(
                self.stream_previous_api_secrets,
                path,
                "stream_previous_api_secrets (CALLPUSH_STREAM_PREVIOUS_API_SECRETS)",
                "stream_previous_api_secrets_file (CALLPUSH_STREAM_PREVIOUS_API_SECRETS_FILE)",
            )
            lines = read_secret_lines("stream_previous_api_secrets_file", path)
            # Kept in the shortcut's comma-separated form; split again, per line, when folded.
            self.stream_previous_api_secrets = FileSecret(
                ",".join(line.get_secret_value() for line in lines), path
            )
        if self.database_password_file is not None:
            password = read_secret_file("database_password_file", self.database_password_file)
            self.database_url = database_url_with_password(
                self.database_url,
                password.get_secret_value(),
                "database_url (CALLPUSH_DATABASE_URL)",
                "database_password_file (CALLPUSH_DATABASE_PASSWORD_FILE)",
            )
        if self.broker_password_file is not None:
            if not self.broker_url:
                raise ValueError(
                    "broker_password_file (CALLPUSH_BROKER_PASSWORD_FILE) is set but broker_url "
                    "(CALLPUSH_BROKER_URL) is not: there is no broker to log in to"
                )
            password = read_secret_file("broker_password_file", self.broker_password_file)
            self.broker_url = broker_url_with_password(
                self.broker_url,
                password.get_secret_value(),
                "broker_url (CALLPUSH_BROKER_URL)",
                "broker_password_file (CALLPUSH_BROKER_PASSWORD_FILE)",
            )

    def _fold_single_app_shortcut(self) -> None:
        current = self.stream_api_secret
        if not (self.stream_api_key and current):
            return
        previous = self.stream_previous_api_secrets
        secrets: dict[str, Any] = (
            # A file holds one secret (no comma form), and keeps its path for `config check`.
            {"api_secret": current}
            if isinstance(current, FileSecret)
            else {"api_secrets": current}  # the comma form, split by the app's validator
        )
        if isinstance(previous, FileSecret):
            secrets["previous_api_secrets"] = [
                FileSecret(value, previous.path) for value in previous.get_secret_value().split(",")
            ]
        else:
            secrets["previous_api_secrets"] = previous or []
        app = StreamAppSettings(
            api_key=self.stream_api_key,
            base_url=self.stream_base_url or StreamAppSettings.model_fields["base_url"].default,
            push_settings_source=self.stream_push_settings_source or "local",
            **secrets,
        )
        self.apps = [app, *[a for a in self.apps if a.api_key != app.api_key]]

    @model_validator(mode="after")
    def _complete_push_providers(self) -> Settings:
        # Each named provider, [apns] / [fcm] filled in, must be usable: fail at start-up, with
        # the setting named, rather than at the first push through it.
        for index, app in enumerate(self.apps):
            where = f"apps[{index}]"
            for name, apns in app.apns_providers.items():
                try:
                    merged = apns.over(self.apns)
                except ValueError as error:
                    raise ValueError(
                        f"{where}.apns_providers.{name}: {_first_error(error)}"
                    ) from None
                problem = bundle_id_problem(merged.bundle_id) if merged.bundle_id else None
                if problem:
                    raise ValueError(f"{where}.apns_providers.{name}.bundle_id {problem}")
            for name, fcm in app.fcm_providers.items():
                try:
                    fcm.over(self.fcm)
                except ValueError as error:
                    raise ValueError(
                        f"{where}.fcm_providers.{name}: {_first_error(error)}"
                    ) from None
        return self

    def named_apns_providers(self) -> dict[tuple[str, str], ApnsSettings]:
        """(app api key, provider name) -> that provider's settings, [apns] filled in."""
        return {
            (app.api_key, name): named.over(self.apns)
            for app in self.apps
            for name, named in app.apns_providers.items()
        }

    def named_fcm_providers(self) -> dict[tuple[str, str], FcmSettings]:
        """(app api key, provider name) -> that provider's settings, [fcm] filled in."""
        return {
            (app.api_key, name): named.over(self.fcm)
            for app in self.apps
            for name, named in app.fcm_providers.items()
        }

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    def single_app_key(self) -> str | None:
        """The API key of the only configured Stream app; None with none or several."""
        return self.apps[0].api_key if len(self.apps) == 1 else None

    def app_for_key(self, api_key: str) -> StreamAppSettings | None:
        for app in self.apps:
            if app.api_key == api_key:
                return app
        return None

    def with_dev_app(self) -> Settings:
        """The embedded mode's fallback when no Stream app is configured."""
        if self.apps:
            return self
        dev = StreamAppSettings(api_key=DEV_API_KEY, api_secrets=[SecretStr(DEV_API_SECRET)])
        return self.model_copy(update={"apps": [dev]})


def _first_error(error: ValueError) -> str:
    """A nested model's validation error as one line, without the input values (secrets)."""
    if isinstance(error, ValidationError):
        item = error.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in item["loc"])
        return f"{where + ': ' if where else ''}{item['msg']}"
    return str(error)


def _config_path() -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{CONFIG_ENV}={explicit}: no such config file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Read the configuration once.  Keyword overrides win over every other source."""
    return Settings(**overrides)
