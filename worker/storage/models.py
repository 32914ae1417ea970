"""SQLAlchemy 2 models.  The Alembic migrations in worker/storage/alembic_scripts must produce
exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations are the same on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so autoincrement works there.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EventStatus:
    RECEIVED = "received"  # stored, not yet (fully) processed
    PROCESSING = "processing"
    PROCESSED = "processed"
    IGNORED = "ignored"  # a type that needs no push, or switched off
    FAILED = "failed"  # processing or deliveries exhausted their retries


class WebhookEvent(Base):
    """The durable inbox: one row per webhook Stream delivered (retries collapse on webhook_id,
    replays of the same body under other ids on (api_key, body_digest))."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("api_key", "body_digest", name="uq_webhook_events_api_key_body_digest"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # X-Webhook-Id, or "sha256:<body digest>" when Stream sent none.
    webhook_id: Mapped[str] = mapped_column(String(128), unique=True)
    api_key: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    call_cid: Mapped[str | None] = mapped_column(String(255), index=True)
    session_id: Mapped[str | None] = mapped_column(String(128))
    event_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    body: Mapped[str] = mapped_column(Text)  # the verified, uncompressed JSON as received
    # sha256 (hex) of that body; None for rows stored before it existed, and for a row whose
    # body arrived again after the dedupe window (the newer row holds the digest then).
    body_digest: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    processing_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # An operator's `events replay --force`: re-send even what was sent, re-ring expired rings.
    replay_force: Mapped[bool] = mapped_column(Boolean, default=False)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    # An operator's import or replay with --allow-stale: push it even though Stream created it
    # longer than intake.max_event_age_seconds before it arrived.
    allow_stale: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set once a fan-out has planned all its chunks: the event is done when they all are.
    fanout_chunks: Mapped[int | None] = mapped_column(Integer)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ChunkStatus:
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class FanoutChunk(Base):
    """A slice of a big fan-out's recipients, delivered by one bulk task (loaded by id)."""

    __tablename__ = "fanout_chunks"

    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recipients: Mapped[str] = mapped_column(Text)  # JSON [[user_id, display_name], ...]
    status: Mapped[str] = mapped_column(String(16), default=ChunkStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Device(Base):
    """A push token of a user of one Stream app: an APNs token (VoIP or not) or an FCM
    registration token.

    Rows are scoped by ``api_key`` (the Stream app, as on ``webhook_events``): a webhook of one
    app never reaches another app's devices.  A token is active for at most one user of an app
    at a time (the partial unique index); a user keeps one row per token, so when a phone
    changes accounts the old owner's row is disabled (``moved_to_user_id``) and stays as the
    record of the move rather than being rewritten.
    """

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("api_key", "platform", "token", "user_id"),
        Index("ix_devices_api_key_user_id", "api_key", "user_id"),
        Index(
            "uq_devices_active_token",
            "api_key",
            "platform",
            "token",
            unique=True,
            postgresql_where=text("disabled_at IS NULL"),
            sqlite_where=text("disabled_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # The Stream app (its API key) the device was registered for.
    api_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(255))
    platform: Mapped[str] = mapped_column(String(8))  # "apns" | "fcm"
    token: Mapped[str] = mapped_column(String(512))
    voip: Mapped[bool] = mapped_column(Boolean, default=False)
    # iOS bundle id (APNs topic) or FCM project; None = the configured default.
    app_id: Mapped[str | None] = mapped_column(String(255))
    # "local" (registered with callpush) or "stream" (mirrored from Stream's devices API).
    source: Mapped[str] = mapped_column(String(16), default="local")
    # Stream's stable physical-device id: one phone with a VoIP and an FCM token rings once.
    hardware_id: Mapped[str | None] = mapped_column(String(255))
    # Which of the app's push providers the token belongs to (Stream's push_provider_name):
    # its topic, environment and credentials.  None = the app's default provider.
    push_provider_name: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The last time the token was registered (apps register at every start): the per-user
    # device cap evicts the registrations not refreshed for longest.
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    # Set when the token was registered by another user of the app (a phone that changed
    # accounts): who has it now.  Operators' data: the device API never shows it.
    moved_to_user_id: Mapped[str | None] = mapped_column(String(255))


class UserPreference(Base):
    """A user's choice about call pushes, per Stream app: off for good (muted_until = None,
    muted) or until a time."""

    __tablename__ = "user_preferences"

    api_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    muted: Mapped[bool] = mapped_column(Boolean, default=False)
    muted_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeliveryStatus:
    SENDING = "sending"  # claimed; the provider call is under way
    SENT = "sent"
    TOKEN_INVALID = "token_invalid"
    RETRY = "retry"  # a transient failure; will be tried again
    FAILED = "failed"
    EXPIRED = "expired"  # a ring that could not be sent before the ring was over
    CANCELLED = "cancelled"  # the call was accepted/rejected/ended first
    SKIPPED = "skipped"  # the user muted call pushes
    # A ring that may have reached APNs/FCM but whose answer was lost (a timeout after the
    # request was written, a worker killed mid-send): not sent again, so it never rings twice.
    UNCONFIRMED = "unconfirmed"

    FINAL = frozenset({SENT, TOKEN_INVALID, FAILED, EXPIRED, CANCELLED, SKIPPED, UNCONFIRMED})


class Delivery(Base):
    """One push for one (event, device): claimed before sending, its outcome stored after."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "device_id"),
        Index("ix_deliveries_status_created_at", "status", "created_at"),
        # A user's pushes, newest event first (worker.ops.user_events: "did Bob's phone ring?").
        Index("ix_deliveries_user_id_event_id", "user_id", "event_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    user_id: Mapped[str] = mapped_column(String(255))
    platform: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(8))  # voip | alert | data
    token_hint: Mapped[str] = mapped_column(String(32))  # redacted; never the whole token
    # "apns" / "fcm" / "console", plus ":<name>" for an app's named provider.
    provider: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.SENDING)
    reason: Mapped[str | None] = mapped_column(String(255))
    status_code: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the current attempt was claimed: a SENDING claim older than the lease belongs to a
    # worker that died mid-send and may be taken over.
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # From the webhook's arrival to the provider's answer.
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # The random id put in the push (``callpush_receipt_id``, docs/sdk-payloads.md §5) that the
    # app sends back to POST /receipts when the push reaches the phone; None on rows from before.
    receipt_id: Mapped[str | None] = mapped_column(String(32), index=True, unique=True)
    # The phone's word: when its receipt arrived (the first, a repeat changes nothing), and how
    # long after the webhook's arrival.
    phone_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    phone_latency_ms: Mapped[float | None] = mapped_column(Float)


class DashboardSession(Base):
    """A browser logged in to the ops dashboard.  The cookie holds a random value and only its
    SHA-256 is stored, so this table cannot be used to log in.  Logging out sets revoked_at: the
    cookie is refused from then on, even if it was copied."""

    __tablename__ = "dashboard_sessions"

    cookie_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # An HMAC of the admin token it was issued under: changing the token ends every session.
    token_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
