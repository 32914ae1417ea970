"""The one typed configuration object, read once at start-up and passed down.

Sources, later ones winning: built-in defaults < the TOML file < ``CALLPUSH_*`` environment
variables (nested keys joined with ``__``, e.g. ``CALLPUSH_APNS__KEY_ID``).  Nothing here is read
at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "CALLPUSH_CONFIG"
DEFAULT_CONFIG_FILE = "callpush.toml"

# Used only by the embedded mode (`callpush run` / `callpush simulate`) when no Stream app is
# configured, so a fresh machine can receive a signed sample ring.  `callpush web` refuses them.
DEV_API_KEY = "callpush-dev-key"
DEV_API_SECRET = "callpush-dev-secret-not-for-production"


class StreamAppSettings(BaseModel):
    """One Stream app.  Several may be served by one deployment (e.g. dev and prod)."""

    api_key: str
    # The first secret signs our server tokens; every one is accepted on incoming webhooks so a
    # secret can be rotated without downtime (stream-protocol.md §1.2).
    api_secrets: list[SecretStr] = Field(min_length=1)
    base_url: str = "https://video.stream-io-api.com"

    @field_validator("api_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            return [s.strip() for s in raw.split(",") if s.strip()]
        return value

    @property
    def signing_secret(self) -> str:
        return self.api_secrets[0].get_secret_value()


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


class RingSettings(BaseModel):
    # Used when an event carries no call.settings.ring (stream-protocol.md §5: read the live
    # values from the event; the built-in defaults are undocumented).
    default_timeout_ms: int = 30_000
    # A ring push retried after a transient failure waits this long between attempts.
    retry_delays_ms: list[int] = [100, 300, 800]


class DeviceSettings(BaseModel):
    # "local": callpush's own registry (CLI / POST /devices).  "stream": Stream's devices API,
    # for apps whose SDKs already register devices with Stream (mirrored into the registry).
    source: Literal["local", "stream"] = "local"
    # Stream device lists are cached this long, so a fan-out does not call Stream per push.
    cache_seconds: float = 30.0


class PushTemplate(BaseModel):
    """Title and body of a push; Stream's variables, e.g. ``{{ user.display_name }}``."""

    title: str
    body: str = ""


class CallTypeSettings(BaseModel):
    """Per call type (``[call_types.default]``; ``[call_types."*"]`` applies to all)."""

    # Event types that send no push for this call type, e.g. ["call.session_started"].
    disabled_events: list[str] = []
    # Event type -> template, overriding the defaults (worker/templates.py).
    templates: dict[str, PushTemplate] = {}


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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLPUSH_", env_nested_delimiter="__", extra="forbid"
    )

    database_url: str = "sqlite:///callpush.db"
    # None = embedded: an in-process broker and worker (`callpush run`).
    broker_url: str | None = None
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

    # Environment shortcuts for the common single-app deployment.
    stream_api_key: str | None = None
    stream_api_secret: SecretStr | None = None
    stream_base_url: str | None = None

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
    def _fold_single_app_shortcut(self) -> Settings:
        if self.stream_api_key and self.stream_api_secret:
            app = StreamAppSettings(
                api_key=self.stream_api_key,
                api_secrets=self.stream_api_secret,  # type: ignore[arg-type]  # split by validator
                base_url=self.stream_base_url or StreamAppSettings.model_fields["base_url"].default,
            )
            self.apps = [app, *[a for a in self.apps if a.api_key != app.api_key]]
        return self

    @property
    def embedded(self) -> bool:
        return self.broker_url is None

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
