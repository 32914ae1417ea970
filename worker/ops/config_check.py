"""`callpush config check` without click: check that what the configuration points at works
(database, broker, credentials, URLs).  Showing the configuration is worker/ops/config_show.py.

Each check is a plain function of :class:`Settings` returning a list of :class:`Check`; a problem's
detail names the setting (``apns.key_file: /x/key.p8 is not readable``) so the operator knows
what to change.  Nothing here prints a secret: URL passwords are masked
(:func:`worker.ops.config_show.redact_url`), key files are read only to be validated, and the
command scrubs every detail with :func:`worker.ops.config_show.scrub` as a last safety net.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from worker.delivery.handlebars_templates import compile_stream_template
from worker.delivery.templates import TemplateBook, TemplateConfigError
from worker.foundation.apns_topics import bundle_id_problem
from worker.foundation.secret_sources import FileSecret
from worker.foundation.settings import (
    DEV_API_SECRET,
    ApnsSettings,
    FcmSettings,
    Settings,
)
from worker.ops.config_show import format_settings_error, redact_url
from worker.runtime.amqp_broker import is_amqp, queue_depths, queue_type_problems
from worker.runtime.tasks import BULK_QUEUE, RING_QUEUE
from worker.storage.database import STALL_GRACE_SECONDS
from worker.storage.migrations import head_revision, script_directory
from worker.stream.api import StreamApi, StreamApiError

CONNECT_TIMEOUT_SECONDS = 2
# The admin token guards replays and every device's redacted token: long enough that guessing
# it is hopeless even at the throttle's rate times every web process (README: security model).
MIN_ADMIN_TOKEN_LENGTH = 32

# Celery/kombu transports a broker_url may name (https://docs.celeryq.dev, "Brokers").
BROKER_SCHEMES = frozenset(
    {"redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp", "sqs", "memory", "filesystem"}
)
# What Google's service-account loader needs; project_id may come from fcm.project_id instead.
SERVICE_ACCOUNT_FIELDS = ("type", "private_key", "client_email", "token_uri")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    # ok but worth attention (e.g. no APNs credentials: iOS pushes go to the console).
    warning: bool = False

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        return "WARN" if self.warning else "OK"


def _ok(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _warn(name: str, detail: str) -> Check:
    return Check(name, True, detail, warning=True)


def _fail(name: str, detail: str) -> Check:
    return Check(name, False, detail)


# --------------------------------------------------------------------------------------------
# Loading the configuration


def load_settings_safely(loader: Callable[[], Settings]) -> tuple[Settings | None, Check | None]:
    """Call ``loader``; on failure return a FAIL check whose message carries no input values
    (pydantic's default message quotes the input, which may be a secret)."""
    try:
        return loader(), None
    except Exception as error:
        return None, _fail("configuration", format_settings_error(error))


# --------------------------------------------------------------------------------------------
# The checks


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    for name, check in (
        ("urls", check_urls),
        ("database", check_database),
        ("broker", check_broker),
        ("stream apps", check_apps),
        ("timeouts", check_timeouts),
        ("apns", check_apns),
        ("fcm", check_fcm),
        ("templates", check_templates),
        ("push settings", check_push_settings),
        ("deprecated settings", check_deprecated),
        ("admin access", check_admin_access),
    ):
        try:
            checks.extend(check(settings))
        except Exception as error:  # a bug in one check must not hide the others' results
            checks.append(_fail(name, f"the check itself failed: {describe_error(error)}"))
    return checks


def describe_error(error: BaseException) -> str:
    """One line: the driver's own message rather than SQLAlchemy's long wrapper."""
    original = getattr(error, "orig", None) or error
    text = " ".join(str(original).split()) or original.__class__.__name__
    return text[:300]


def _http_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as error:
        return f"{url!r} is not a valid URL ({error})"
    # http too: tests and local gateways serve fakes without TLS.
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://"
    if not parts.hostname:
        return f"{url!r} has no host"
    return None


def _broker_url_problem(url: str) -> str | None:
    try:
        parts: SplitResult = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as error:
        return f"{redact_url(url)!r} is not a valid URL ({error})"
    scheme = parts.scheme.split("+")[0]
    if scheme not in BROKER_SCHEMES:
        known = ", ".join(sorted(BROKER_SCHEMES))
        return f"{redact_url(url)!r}: unknown transport {parts.scheme!r} (known: {known})"
    # "redis+socket:///path" and the like name no host.
    needs_host = parts.scheme in {"redis", "rediss", "amqp", "amqps", "pyamqp"}
    if needs_host and not parts.hostname:
        return f"{redact_url(url)!r} has no host"
    return None


def check_urls(settings: Settings) -> list[Check]:
    from sqlalchemy.engine import make_url

    problems: list[str] = []
    try:
        url = make_url(settings.database_url)
        dialect = url.get_dialect()
    except Exception as error:
        problems.append(
            f"database_url: {redact_url(settings.database_url)!r} is not a database URL "
            f"({describe_error(error)})"
        )
    else:
        if url.get_backend_name() not in {"postgresql", "sqlite"}:
            problems.append(
                f"database_url: backend {url.get_backend_name()!r} is not supported "
                "(postgresql+psycopg:// or sqlite:///)"
            )
        else:
            try:
                dialect.import_dbapi()
            except ImportError as error:
                problems.append(
                    f"database_url: driver {url.get_driver_name()!r} is not installed ({error}); "
                    "use postgresql+psycopg://"
                )
    if settings.broker_url is not None:
        problem = _broker_url_problem(settings.broker_url)
        if problem:
            problems.append(f"broker_url: {problem}")
    for index, app in enumerate(settings.apps):
        problem = _http_url_problem(app.base_url)
        if problem:
            problems.append(f"apps[{index}].base_url: {problem}")
    if settings.stream_base_url is not None:
        problem = _http_url_problem(settings.stream_base_url)
        if problem:
            problems.append(f"stream_base_url: {problem}")
    problem = _http_url_problem(settings.fcm.endpoint)
    if problem:
        problems.append(f"fcm.endpoint: {problem}")
    if settings.apns.host is not None and (
        "/" in settings.apns.host or ":" in settings.apns.host or not settings.apns.host.strip()
    ):
        problems.append(
            f"apns.host: {settings.apns.host!r} must be a bare host name (port in apns.port)"
        )
    if settings.apns.port is not None and not 0 < settings.apns.port < 65536:
        problems.append(f"apns.port: {settings.apns.port} is not a TCP port")
    if problems:
        return [_fail("urls", problem) for problem in problems]
    return [_ok("urls", "well-formed")]


def check_database(settings: Settings) -> list[Check]:
    """Connect, ``select 1``, and compare the schema's revision with the newest migration."""
    from sqlalchemy import create_engine, pool, text
    from sqlalchemy.engine import make_url

    shown = redact_url(settings.database_url)
    try:
        url = make_url(settings.database_url)
    except Exception:
        return [_fail("database", "database_url: not a database URL (see urls)")]

    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).resolve()
            # Connecting would create an empty file: a check must not change anything.
            if not path.is_file():
                return [
                    _fail(
                        "database",
                        f"database_url: {path} does not exist (`callpush db upgrade` creates it)",
                    )
                ]
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = settings.database.connect_timeout_seconds

    from alembic.runtime.migration import MigrationContext

    try:
        engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    except Exception as error:
        return [_fail("database", f"database_url {shown}: {describe_error(error)}")]
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
            revision = MigrationContext.configure(connection).get_current_revision()
    except Exception as error:
        return [_fail("database", f"database_url {shown}: cannot connect: {describe_error(error)}")]
    finally:
        engine.dispose()

    checks = [_ok("database", f"connected to {shown}")]
    head = head_revision()
    if revision == head:
        checks.append(_ok("migrations", f"at the newest revision {head}"))
    elif revision is None:
        checks.append(
            _fail(
                "migrations",
                f"database_url: no schema yet (head is {head}): run `callpush db upgrade`",
            )
        )
    else:
        from alembic.util.exc import CommandError

        try:
            script_directory().get_revision(revision)
            known = True
        except CommandError:
            known = False
        if known:
            detail = (
                f"database_url: at revision {revision}, head is {head}: run `callpush db upgrade`"
            )
        else:
            detail = (
                f"database_url: at revision {revision}, which this version of callpush does not "
                f"know (its newest is {head}): the database is newer than the code"
            )
        checks.append(_fail("migrations", detail))
    return checks


def check_broker(settings: Settings) -> list[Check]:
    if settings.broker_url is None:
        return [_ok("broker", "embedded: in-process broker and worker (broker_url unset)")]
    url = settings.broker_url
    shown = redact_url(url)
    if _broker_url_problem(url):
        return [_fail("broker", "broker_url: not a broker URL (see urls)")]
    scheme = urlsplit(url).scheme
    try:
        if scheme in {"redis", "rediss"}:
            import redis

            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                socket_timeout=CONNECT_TIMEOUT_SECONDS,
            )
            try:
                client.ping()
            finally:
                client.close()
        elif is_amqp(url):
            return _check_amqp_broker(url, shown)
        else:
            from kombu import Connection

            with Connection(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
                connection.ensure_connection(max_retries=1, timeout=CONNECT_TIMEOUT_SECONDS)
    except Exception as error:
        return [_fail("broker", f"broker_url {shown}: unreachable: {describe_error(error)}")]
    return [_ok("broker", f"reachable at {shown}")]


def _check_amqp_broker(url: str, shown: str) -> list[Check]:
    """RabbitMQ: reachable (the vhost and credentials accepted), and the ring and bulk queues,
    where they exist already, the quorum queues callpush declares: a classic queue of the same
    name (left by an older setup) makes every worker fail to start (README: choosing a
    broker).  Queues not declared yet are fine; the first worker or publish declares them."""
    names = (RING_QUEUE, BULK_QUEUE)
    depths = queue_depths(url, names, CONNECT_TIMEOUT_SECONDS)
    problems = queue_type_problems(url, names, CONNECT_TIMEOUT_SECONDS)
    checks = [_ok("broker", f"reachable at {shown}")]
    for name in names:
        if depths[name] is None:
            detail = f"{name}: not declared yet (the first worker declares it)"
        else:
            detail = f"{name}: quorum queue, {depths[name]} messages waiting"
        mismatch = [p for p in problems if p.startswith(f"{name}:")]
        if mismatch:
            checks.append(
                _fail(
                    "broker queues",
                    f"{mismatch[0]}; callpush declares it a durable quorum queue: "
                    "drain and delete the old queue (or use a new vhost)",
                )
            )
        else:
            checks.append(_ok("broker queues", detail))
    return checks


def check_deprecated(settings: Settings) -> list[Check]:
    """A warning per deprecated setting that is still set; nothing when none is."""
    checks = []
    if settings.ring.retry_delays_ms is not None:
        checks.append(
            _warn(
                "deprecated settings",
                "ring.retry_delays_ms is ignored: ring pushes are retried until the ring is "
                "over, waiting ring.retry_backoff_ms doubling up to ring.retry_backoff_max_ms",
            )
        )
    return checks


def admin_token_problem(settings: Settings) -> str | None:
    """Why the configured admin token must not be used (None when it is unset or long enough);
    `callpush web` and `callpush run` refuse to start with it."""
    if settings.admin_token is None:
        return None
    token = settings.admin_token.get_secret_value().strip()
    if not token or len(token) >= MIN_ADMIN_TOKEN_LENGTH:
        return None
    source = (
        f"admin_token_file (CALLPUSH_ADMIN_TOKEN_FILE) {settings.admin_token.path} holds a token"
        if isinstance(settings.admin_token, FileSecret)
        else "admin_token (CALLPUSH_ADMIN_TOKEN) is"
    )
    return (
        f"{source} {len(token)} characters long: use at least "
        f"{MIN_ADMIN_TOKEN_LENGTH} random ones, e.g. "
        'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
    )


def check_admin_access(settings: Settings) -> list[Check]:
    problem = admin_token_problem(settings)
    if problem is not None:
        return [_fail("admin access", problem)]
    proxies = (
        f"trusted_proxies = {settings.trusted_proxies}"
        if settings.trusted_proxies
        else "no trusted proxy (X-Forwarded-* ignored)"
    )
    token = settings.admin_token.get_secret_value().strip() if settings.admin_token else ""
    if not token:
        return [_ok("admin access", f"admin_token unset: /admin and /dashboard are off; {proxies}")]
    limits = settings.admin_throttle
    source = (
        f"admin_token read from {settings.admin_token.path}"
        if isinstance(settings.admin_token, FileSecret)
        else "admin_token set"
    )
    return [
        _ok(
            "admin access",
            f"{source} ({len(token)} characters); {limits.max_failures} failed attempts "
            f"per client per {limits.window_seconds:g} s; {proxies}",
        )
    ]


def check_templates(settings: Settings) -> list[Check]:
    """Every push template compiles (worker/delivery/templates.py), as the workers require at
    start-up."""
    try:
        TemplateBook.from_settings(settings)
    except TemplateConfigError as error:
        return [_fail("templates", problem) for problem in error.problems]
    configured = sum(len(c.templates) for c in settings.call_types.values())
    return [_ok("templates", f"{configured} configured, the rest Stream's default wording")]


def check_push_settings(settings: Settings) -> list[Check]:
    """Where each app's push switches and wording come from; for ``push_settings_source =
    "stream"``, what Stream's call types say (worker/delivery/call_type_settings.py)."""
    checks: list[Check] = []
    for index, app in enumerate(settings.apps):
        where = f"apps[{index}] ({app.api_key})"
        if app.push_settings_source == "local":
            checks.append(_ok("push settings", f"{where}: local ([call_types], built-in wording)"))
        else:
            checks.extend(_check_stream_push_settings(settings, app, where))
    return checks


def _check_stream_push_settings(settings: Settings, app: Any, where: str) -> list[Check]:
    api = StreamApi(app, min(settings.stream_api_timeout_seconds, 10.0))
    try:
        call_types = api.list_call_type_push_settings()
    except StreamApiError as error:
        detail = (
            f'{where}: push_settings_source = "stream", but Stream\'s call types could not be '
            f"read ({describe_error(error)}); the workers use the local settings until they can"
        )
        return [
            _warn("push settings", detail) if error.retryable else _fail("push settings", detail)
        ]
    finally:
        api.close()
    checks: list[Check] = []
    summary: list[str] = []
    for name, call_type in sorted(call_types.items()):
        off = sorted(e for e, s in call_type.events.items() if not s.enabled)
        worded = sorted(e for e, s in call_type.events.items() if s.title.strip())
        wording = ", ".join(worded) or "none"
        summary.append(f"{name} (off: {', '.join(off) or 'none'}; Stream's wording: {wording})")
        for event_type in worded:
            event = call_type.events[event_type]
            try:
                compile_stream_template(event.title, event.body, event_type)
            except ValueError as problem:
                checks.append(
                    _warn(
                        "push settings",
                        f"{where}: call type {name!r}, {event_type}: Stream's template is not "
                        f"usable ({problem}); the local one is used",
                    )
                )
        if call_type.enabled:
            checks.append(
                _warn(
                    "push settings",
                    f"{where}: call type {name!r} has Stream's own pushes on "
                    "(notification_settings.enabled = true): phones may ring twice; switch it "
                    "off in Stream (README: Pointing Stream at callpush)",
                )
            )
        if call_type.events and len(off) == len(call_type.events):
            checks.append(
                _warn(
                    "push settings",
                    f"{where}: call type {name!r} has every event switched off in Stream, so "
                    "callpush sends it no push; to stop only Stream's own pushes, switch them "
                    "on and set notification_settings.enabled = false instead",
                )
            )
    checks.insert(
        0,
        _ok(
            "push settings",
            f"{where}: following Stream's call types: {'; '.join(summary) or 'none'}",
        ),
    )
    return checks


def check_apps(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    if bool(settings.stream_api_key) != bool(settings.stream_api_secret):
        given, missing = (
            ("stream_api_key", "stream_api_secret")
            if settings.stream_api_key
            else ("stream_api_secret", "stream_api_key")
        )
        checks.append(
            _fail(
                "stream apps",
                f"{given} is set but {missing} is not (CALLPUSH_{missing.upper()}"
                f"{' or CALLPUSH_STREAM_API_SECRET_FILE' if missing == 'stream_api_secret' else ''}"
                "): the single-app shortcut needs both",
            )
        )
    if not settings.apps:
        if settings.embedded:
            checks.append(
                _warn(
                    "stream apps",
                    "none configured ([[apps]] or CALLPUSH_STREAM_API_KEY + "
                    "CALLPUSH_STREAM_API_SECRET): the embedded mode uses the built-in dev app, "
                    "which `callpush web` refuses",
                )
            )
        else:
            checks.append(
                _fail(
                    "stream apps",
                    "apps: none configured, so no webhook can be verified: set [[apps]] or "
                    "CALLPUSH_STREAM_API_KEY + CALLPUSH_STREAM_API_SECRET",
                )
            )
        return checks

    seen: set[str] = set()
    for index, app in enumerate(settings.apps):
        where = f"apps[{index}]"
        if not app.api_key.strip():
            checks.append(_fail("stream apps", f"{where}.api_key is empty"))
        elif app.api_key in seen:
            checks.append(_fail("stream apps", f"{where}.api_key {app.api_key!r} is listed twice"))
        seen.add(app.api_key)
        values = [secret.get_secret_value() for secret in app.api_secrets]
        if any(not value.strip() for value in values):
            checks.append(_fail("stream apps", f"{where}.api_secrets has an empty secret"))
        if DEV_API_SECRET in values and not settings.embedded:
            checks.append(
                _fail(
                    "stream apps",
                    f"{where}.api_secrets holds the built-in dev secret, which is not for "
                    "production",
                )
            )
    if not any(not check.ok for check in checks):
        described = ", ".join(
            f"{app.api_key} (api_secret + {len(app.previous_api_secrets)} previous)"
            for app in settings.apps
        )
        checks.append(_ok("stream apps", f"{len(settings.apps)} configured: {described}"))
    return checks


# Stream gives up on a webhook attempt after 6 s and retries
# (https://getstream.io/video/docs/api/webhooks/overview/, "Error Handling").
STREAM_WEBHOOK_TIMEOUT_SECONDS = 6.0


def webhook_worst_case_seconds(settings: Settings) -> tuple[float, float]:
    """How long a webhook can wait before it is answered (seconds): with a hanging database
    (a pooled connection or a new one, then a statement the server never answers: 503), and
    with a hanging broker (the publish, waited for that long at most: 2xx, the event kept in
    the inbox).  Once a circuit is open, webhooks no longer wait at all."""
    database = settings.database
    hanging_database = (
        max(database.pool_timeout_seconds, database.connect_timeout_seconds)
        + database.web_statement_timeout_seconds
        + STALL_GRACE_SECONDS
    )
    return hanging_database, settings.broker.publish_timeout_seconds


def check_timeouts(settings: Settings) -> list[Check]:
    database, broker = webhook_worst_case_seconds(settings)
    detail = (
        f"a webhook is answered within {database:.1f} s (503) when the database hangs and "
        f"{broker:.1f} s when the broker hangs (database.*_timeout_seconds, "
        "broker.publish_timeout_seconds)"
    )
    if max(database, broker) >= STREAM_WEBHOOK_TIMEOUT_SECONDS:
        return [
            _warn(
                "timeouts",
                f"{detail}: not within the {STREAM_WEBHOOK_TIMEOUT_SECONDS:g} s Stream waits, "
                "so Stream gives up before callpush answers",
            )
        ]
    return [_ok("timeouts", detail)]


def _read_file(setting: str, path: Path) -> tuple[bytes | None, Check | None]:
    try:
        return path.read_bytes(), None
    except OSError as error:
        reason = error.strerror or error.__class__.__name__
        return None, _fail(setting.split(".")[0], f"{setting}: {path} is not readable ({reason})")


def check_apns(settings: Settings) -> list[Check]:
    """The default APNs provider ([apns]) and every app's named one, each as it will be built:
    a named provider's unset keys come from [apns]."""
    apns = settings.apns
    if settings.push_provider == "console":
        return [_ok("apns", "push_provider = console: pushes are logged, not sent")]
    checks: list[Check] = []
    if not apns.configured or apns.key_file is None:
        checks.append(
            _warn(
                "apns",
                "not configured (apns.key_file unset): iOS pushes go to the console provider",
            )
        )
    else:
        checks += _check_apns_provider(apns, lambda key: f"apns.{key}", "")
    for index, app in enumerate(settings.apps):
        for name, named in app.apns_providers.items():
            own = named.model_dump(exclude_none=True)
            prefix = f"apps[{index}].apns_providers.{name}"

            def setting(key: str, own: dict[str, Any] = own, prefix: str = prefix) -> str:
                return f"{prefix}.{key}" if key in own else f"apns.{key}"

            merged = named.over(apns)
            if not merged.configured:
                checks.append(
                    _warn("apns", f"{prefix}: no key_file (nor apns.key_file): console provider")
                )
                continue
            # [apns]'s own host and port are checked with the other URLs.
            if named.host is not None and (
                "/" in named.host or ":" in named.host or not named.host.strip()
            ):
                checks.append(_fail("apns", f"{prefix}.host: {named.host!r} must be a bare host"))
            if named.port is not None and not 0 < named.port < 65536:
                checks.append(_fail("apns", f"{prefix}.port: {named.port} is not a TCP port"))
            checks += _check_apns_provider(merged, setting, f"{prefix}: ")
    return checks


def _check_apns_provider(
    apns: ApnsSettings, setting: Callable[[str], str], label: str
) -> list[Check]:
    """One APNs provider's settings; ``setting`` names where each key was set."""
    assert apns.key_file is not None
    checks = [
        _fail("apns", f"{setting(name)} is empty (needed with {setting('key_file')})")
        for name in ("key_id", "team_id", "bundle_id")
        if not getattr(apns, name).strip()
    ]
    bundle_problem = bundle_id_problem(apns.bundle_id) if apns.bundle_id.strip() else None
    if bundle_problem:
        checks.append(_fail("apns", f"{setting('bundle_id')} {apns.bundle_id!r} {bundle_problem}"))
    if apns.ca_file is not None:
        _, unreadable = _read_file(setting("ca_file"), apns.ca_file)
        if unreadable:
            checks.append(unreadable)

    data, unreadable = _read_file(setting("key_file"), apns.key_file)
    if unreadable:
        return [*checks, unreadable]
    assert data is not None
    key_problem = _apns_key_problem(data)
    if key_problem:
        checks.append(_fail("apns", f"{setting('key_file')}: {apns.key_file} {key_problem}"))
    if not checks:
        environment = "sandbox" if apns.use_sandbox else "production"
        checks.append(
            _ok(
                "apns",
                f"{label}key {apns.key_id} of team {apns.team_id} for {apns.bundle_id} "
                f"({environment}{f', via {apns.host}' if apns.host else ''})",
            )
        )
    return checks


def _apns_key_problem(data: bytes) -> str | None:
    """Why the bytes are not a usable APNs token key (Apple's .p8: a PKCS#8 PEM P-256 key)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"-----BEGIN" not in data:
        return "is not a PEM file (expected the .p8 key downloaded from Apple)"
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        return "holds an encrypted key; APNs keys (.p8) are not encrypted"
    except (ValueError, UnsupportedAlgorithm):
        # Deliberately not the library's message: nothing derived from the key is printed.
        return "is not a valid PEM private key"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return f"holds a {type(key).__name__.lstrip('_')} key, not an EC (P-256) key"
    if key.curve.name != "secp256r1":
        return f"holds an EC key on {key.curve.name}; APNs needs P-256 (ES256)"
    try:
        import jwt

        jwt.encode({"iss": "check", "iat": 0}, key, algorithm="ES256")
    except Exception:
        return "cannot sign an ES256 token"
    return None


def check_fcm(settings: Settings) -> list[Check]:
    """The default FCM provider ([fcm]) and every app's named one; a named provider's unset keys
    come from [fcm]."""
    fcm = settings.fcm
    if settings.push_provider == "console":
        return [_ok("fcm", "push_provider = console: pushes are logged, not sent")]
    checks: list[Check] = []
    if not fcm.configured or fcm.service_account_file is None:
        checks.append(
            _warn(
                "fcm",
                "not configured (fcm.service_account_file unset): "
                "Android pushes go to the console provider",
            )
        )
    else:
        checks.append(_check_fcm_provider(fcm, lambda key: f"fcm.{key}", ""))
    for index, app in enumerate(settings.apps):
        for name, named in app.fcm_providers.items():
            own = named.model_dump(exclude_none=True)
            if "service_account_file" in own:  # its project is not [fcm]'s
                own.setdefault("project_id", None)
            prefix = f"apps[{index}].fcm_providers.{name}"

            def setting(key: str, own: dict[str, Any] = own, prefix: str = prefix) -> str:
                return f"{prefix}.{key}" if key in own else f"fcm.{key}"

            merged = named.over(fcm)
            if not merged.configured:
                checks.append(
                    _warn(
                        "fcm",
                        f"{prefix}: no service_account_file (nor fcm.service_account_file): "
                        "console provider",
                    )
                )
                continue
            problem = _http_url_problem(named.endpoint) if named.endpoint is not None else None
            if problem:  # [fcm]'s own endpoint is checked with the other URLs
                checks.append(_fail("fcm", f"{prefix}.endpoint: {problem}"))
            checks.append(_check_fcm_provider(merged, setting, f"{prefix}: "))
    return checks


def _check_fcm_provider(fcm: FcmSettings, setting: Callable[[str], str], label: str) -> Check:
    """One FCM provider's service account; ``setting`` names where each key was set."""
    path = fcm.service_account_file
    assert path is not None
    where = setting("service_account_file")
    data, problem = _read_file(where, path)
    if problem:
        return problem
    assert data is not None
    try:
        info = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        at = (
            f" (line {error.lineno}, column {error.colno})"
            if isinstance(error, json.JSONDecodeError)
            else ""
        )
        return _fail("fcm", f"{where}: {path} is not valid JSON{at}")
    if not isinstance(info, dict):
        return _fail("fcm", f"{where}: {path} is not a JSON object")

    missing = [name for name in SERVICE_ACCOUNT_FIELDS if not info.get(name)]
    if not fcm.project_id and not info.get("project_id"):
        missing.append(f"project_id (or set {setting('project_id')})")
    if missing:
        return _fail("fcm", f"{where}: {path} lacks {', '.join(missing)}")
    if info.get("type") != "service_account":
        return _fail(
            "fcm",
            f"{where}: {path} is a {str(info.get('type'))!r} credential, not a service account key",
        )
    try:
        from google.oauth2 import service_account

        service_account.Credentials.from_service_account_info(info)
    except Exception:
        # Not the library's message: it could quote part of the key.
        return _fail("fcm", f"{where}: {path}: its private_key is not a valid PEM private key")
    project = fcm.project_id or info["project_id"]
    source = setting("project_id") if fcm.project_id else "the service account"
    return _ok(
        "fcm", f"{label}service account {info['client_email']}, project {project} ({source})"
    )


def failed(checks: Iterable[Check]) -> list[Check]:
    return [check for check in checks if not check.ok]
