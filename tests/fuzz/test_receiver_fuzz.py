"""Bad input to POST /webhooks/stream (issue 7 item 7, issue 11 item 7), against the real
Flask app on SQLite and on PostgreSQL with the in-memory Celery broker: wrong or missing
signatures, truncated / garbage / huge / deeply nested JSON, wrong types in every field of a
call.ring, unknown event types, gzip bombs; and signed events whose fields and headers carry
out-of-range numbers, overlong strings, NUL, lone surrogates and non-ASCII digits.

Properties: never a 5xx or an exception; without a valid signature nothing is stored or
enqueued; with one, garbage is answered 4xx (nothing stored) or 2xx (stored, or a duplicate of
what is stored, and enqueued once when it is an event we act on); whatever is stored, the
operator views (`callpush events show`, `callpush trace`, with and without --json) print.
HYPOTHESIS_PROFILE=bench runs thousands of cases per test.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import uuid
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.e2e.processes import temporary_database
from tests.fuzz._counts import count
from tests.fuzz.strategies import JSON, dumps, nested, paths, replaced
from webhook_app import create_app
from worker.commands.events import events as events_command
from worker.commands.trace import trace as trace_command
from worker.foundation.settings import load_settings
from worker.runtime.celery_app import create_celery
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent
from worker.stream import samples as sample_events
from worker.stream.signature import expected_signature

API_KEY = "fuzz-key"
SECRET = "fuzz-secret-0123456789abcdef0123456789abcdef"
OTHER_SECRET = "other-secret-0123456789abcdef0123456789abcd"
MAX_BODY = 64 * 1024
# Flask's test client reuses one app; hypothesis must not complain about the module fixture.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
RING = sample_events.ring_event("alice", ["bob", "carol"], display_name="Standup")
RING_PATHS = paths(RING)


class Receiver:
    def __init__(self, url: str) -> None:
        os.environ.pop("CALLPUSH_CONFIG", None)
        self.settings = load_settings(
            database_url=url,
            apps=[{"api_key": API_KEY, "api_secrets": [SECRET]}],
            max_body_bytes=MAX_BODY,
        )
        upgrade_to_head(url)
        self.db = Database(url)
        self.celery = create_celery(self.settings)
        self.app = create_app(self.settings, db=self.db, celery=self.celery)
        self.client = self.app.test_client()
        with self.celery.connection_for_write() as conn:
            for queue in ("ring", "bulk"):
                conn.default_channel.queue_declare(queue)
                conn.default_channel.queue_purge(queue)

    def stored(self) -> int:
        with self.db.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)

    def queued(self) -> int:
        with self.celery.connection_for_read() as conn:
            return sum(
                conn.default_channel.queue_declare(q).message_count for q in ("ring", "bulk")
            )

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, int, int]:
        """(status, rows stored by this request, messages enqueued by this request)."""
        status, stored, queued, _answer = self.post_answer(body, headers)
        return status, stored, queued

    def post_answer(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[int, int, int, dict[str, Any]]:
        before_rows, before_queued = self.stored(), self.queued()
        response = self.client.post("/webhooks/stream", data=body, headers=headers)
        return (
            response.status_code,
            self.stored() - before_rows,
            self.queued() - before_queued,
            response.get_json(silent=True) or {},
        )

    def check_operator_views(self, event_id: int) -> None:
        """`callpush events show` and `callpush trace`, as an operator runs them, print the
        stored event (a lone surrogate or NUL must not break them)."""
        # Not embedded (a broker URL): the commands read the database and touch no broker.
        cli = self.settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
        runner = CliRunner()
        shown = runner.invoke(events_command, ["show", str(event_id)], obj={"settings": cli})
        assert shown.exit_code == 0, (shown.output, shown.exception)
        as_json = runner.invoke(
            events_command, ["show", str(event_id), "--json"], obj={"settings": cli}
        )
        assert as_json.exit_code == 0, (as_json.output, as_json.exception)
        detail = json.loads(as_json.stdout)
        assert detail["id"] == event_id
        if detail["call_cid"] is not None:
            traced = runner.invoke(trace_command, [detail["call_cid"]], obj={"settings": cli})
            assert traced.exit_code == 0, (traced.output, traced.exception)
            traced = runner.invoke(
                trace_command, [detail["call_cid"], "--json"], obj={"settings": cli}
            )
            assert traced.exit_code == 0, (traced.output, traced.exception)
            assert event_id in {e["event_id"] for e in json.loads(traced.stdout)["entries"]}
        listed = runner.invoke(events_command, ["list", "--limit", "3"], obj={"settings": cli})
        assert listed.exit_code == 0, (listed.output, listed.exception)


@pytest.fixture(scope="module")
def sqlite_receiver(tmp_path_factory: pytest.TempPathFactory) -> Receiver:
    path = tmp_path_factory.mktemp("fuzz-receiver") / "callpush.db"
    made = Receiver(f"sqlite:///{path}")
    yield made
    made.db.dispose()


@pytest.fixture(scope="module")
def postgres_receiver(postgres_admin_url: str) -> Receiver:
    """One PostgreSQL database for the module (the hypothesis examples share it)."""
    name = f"callpush_test_{uuid.uuid4().hex[:12]}"
    with temporary_database(postgres_admin_url, name) as url:
        made = Receiver(url)
        try:
            yield made
        finally:
            made.db.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)]
)
def receiver(request: pytest.FixtureRequest) -> Receiver:
    found: Receiver = request.getfixturevalue(f"{request.param}_receiver")
    return found


def headers(signature: str | None, api_key: str | None = API_KEY, **extra: str) -> dict[str, str]:
    found = {"Content-Type": "application/json", **extra}
    if api_key is not None:
        found["X-Api-Key"] = api_key
    if signature is not None:
        found["X-Signature"] = signature
    return found


def signed_headers(body: bytes, webhook_id: str | None = None) -> dict[str, str]:
    # A fresh X-Webhook-Id each time: the same bytes twice must not look like Stream's retry.
    return headers(expected_signature(body, SECRET), **{"X-Webhook-Id": webhook_id or str(uuid4())})


HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
BODIES = (
    st.binary(max_size=2048)
    | JSON.map(dumps)
    | st.just(dumps(RING))
    | st.integers(1, 3000).map(lambda d: nested(d, "list"))
)


def assert_ok_status(status: int) -> None:
    assert status < 500, f"5xx: {status}"


# --- no valid signature: refused, nothing stored or enqueued ------------------------------------


@FIXTURE_OK
@given(
    body=BODIES,
    signature=st.none()
    | HEADER_TEXT
    | st.just("")
    | st.builds(lambda b: expected_signature(b, OTHER_SECRET), st.binary(max_size=64)),
    wrong_secret=st.booleans(),
    api_key=st.sampled_from([API_KEY, None, "", "other-key"]) | HEADER_TEXT,
    compress=st.booleans(),
)
def test_without_a_valid_signature_nothing_is_stored_or_enqueued(
    receiver: Receiver, body, signature, wrong_secret, api_key, compress
):
    count("receiver: bad signature")
    if wrong_secret:
        signature = expected_signature(body, OTHER_SECRET)
    elif signature and signature == expected_signature(body, SECRET):
        signature = signature[::-1]
    sent = gzip.compress(body) if compress else body
    status, stored, queued = receiver.post(sent, headers(signature, api_key))
    assert 400 <= status < 500, status
    assert stored == 0 and queued == 0


@FIXTURE_OK
@given(body=st.just(dumps(RING)), cut=st.integers(0, 63))
def test_a_signature_for_other_bytes_is_refused(receiver: Receiver, body, cut):
    count("receiver: signature of other bytes")
    signature = expected_signature(body, SECRET)
    # Truncated signature, the body one byte shorter, upper case + a flipped digit.
    for sent, sig in (
        (body, signature[:cut]),
        (body[:-1], signature),
        (body, signature[:cut] + ("0" if signature[cut] != "0" else "1") + signature[cut + 1 :]),
    ):
        status, stored, queued = receiver.post(sent, headers(sig))
        assert status == 401 and stored == 0 and queued == 0


# --- valid signature, garbage body: 4xx (nothing stored) or 2xx (stored) ------------------------


ANSWERS = {"accepted", "duplicate", "ignored", "processed", "failed"}


def check_signed(
    receiver: Receiver,
    body: bytes,
    compress: bool = False,
    headers: dict[str, str] | None = None,
    *,
    views: bool = False,
) -> int:
    sent = gzip.compress(body) if compress else body
    status, stored, queued, answer = receiver.post_answer(sent, headers or signed_headers(body))
    assert_ok_status(status)
    if status >= 400:
        assert stored == 0 and queued == 0, (status, stored, queued)
        return status
    assert answer.get("status") in ANSWERS, answer
    # The same body again (hypothesis repeats itself) is a replay: answered, not stored.
    duplicate = answer["status"] == "duplicate"
    assert stored == (0 if duplicate else 1), (status, stored, queued, answer)
    assert (queued == 1) == (status == 202), (status, queued, answer)
    if views and not duplicate:
        receiver.check_operator_views(answer["event_id"])
    return status


@FIXTURE_OK
@given(body=st.binary(max_size=4096) | JSON.map(dumps), compress=st.booleans())
def test_signed_garbage_is_4xx_or_stored_never_5xx(receiver: Receiver, body, compress):
    count("receiver: signed garbage")
    check_signed(receiver, body, compress)


@FIXTURE_OK
@given(cut=st.integers(0, len(dumps(RING)) - 1))
def test_signed_truncated_json_is_refused(receiver: Receiver, cut):
    count("receiver: truncated JSON")
    assert check_signed(receiver, dumps(RING)[:cut]) == 400


@FIXTURE_OK
@given(depth=st.integers(1, 500), kind=st.sampled_from(["list", "dict", "in-event"]))
def test_signed_nested_json_within_the_parser_limit(receiver: Receiver, depth, kind):
    count("receiver: nested JSON")
    check_signed(receiver, nested(depth, kind))


@pytest.mark.parametrize("kind", ["list", "dict", "in-event"])
def test_signed_json_nested_past_the_recursion_limit_is_not_a_5xx(receiver: Receiver, kind):
    count("receiver: deeply nested JSON")
    check_signed(receiver, nested(5000, kind))


@FIXTURE_OK
@given(extra=st.integers(1, 4 * MAX_BODY), compress=st.booleans())
def test_signed_huge_bodies_are_413(receiver: Receiver, extra, compress):
    count("receiver: huge body")
    body = dumps(RING)[:-1] + b',"pad":"' + b"x" * (MAX_BODY + extra) + b'"}'
    status = check_signed(receiver, body, compress)
    assert status == 413


# --- wrong types in every field of a call.ring ---------------------------------------------------


@FIXTURE_OK
@given(
    path=st.sampled_from(RING_PATHS),
    value=JSON,
    delete=st.booleans(),
    compress=st.booleans(),
)
def test_ring_with_a_wrong_value_in_any_field(receiver: Receiver, path, value, delete, compress):
    count("receiver: call.ring field mutated")
    event = replaced(RING, path, value, delete)
    check_signed(receiver, dumps(event), compress)


@FIXTURE_OK
@given(mutations=st.lists(st.tuples(st.sampled_from(RING_PATHS), JSON), min_size=2, max_size=6))
def test_ring_with_many_wrong_values(receiver: Receiver, mutations):
    count("receiver: call.ring many fields mutated")
    event = RING
    for path, value in mutations:
        try:
            event = replaced(event, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed the parent
    check_signed(receiver, dumps(event))


@pytest.mark.parametrize(
    "field,value", [("type", "call.\ud800"), ("call_cid", "default:\ud800"), ("type", "\udfff")]
)
def test_lone_surrogates_in_stored_fields_are_not_a_5xx(receiver: Receiver, field, value):
    count("receiver: lone surrogate")
    event = dict(RING, **{field: value})
    body = sample_events.json.dumps(event).encode()  # ensure_ascii: "\ud800" as an escape
    check_signed(receiver, body)


# --- unknown types, gzip bombs -------------------------------------------------------------------


@FIXTURE_OK
@given(event_type=st.text(min_size=1, max_size=80).filter(lambda t: t.strip()), data=JSON)
def test_unknown_event_types_are_stored_not_enqueued(receiver: Receiver, event_type, data):
    count("receiver: unknown type")
    known = {
        "call.ring",
        "call.notification",
        "call.missed",
        "call.session_started",
        "call.live_started",
    }
    body = dumps({"type": event_type, "created_at": 1778198400000000000, "data": data})
    status, stored, queued, answer = receiver.post_answer(body, signed_headers(body))
    assert_ok_status(status)
    if event_type not in known:
        assert status == 200 and queued == 0
        assert stored == (0 if answer["status"] == "duplicate" else 1), answer


def bomb(size: int, level: int = 9) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b" " * (1 << 20)
    out = [compressor.compress(b'{"type":"call.ring","pad":"')]
    for _ in range(size >> 20):
        out.append(compressor.compress(chunk))
    out.append(compressor.compress(b'"}'))
    out.append(compressor.flush())
    return b"".join(out)


BOMB = bomb(64 << 20)  # 64 MiB of JSON in ~64 KiB of gzip


@FIXTURE_OK
@given(
    valid_for=st.sampled_from(["nothing", "prefix"]),
    cut=st.integers(0, 200),
    trailing=st.binary(max_size=64),
)
def test_gzip_bombs_and_broken_gzip_are_refused(receiver: Receiver, valid_for, cut, trailing):
    count("receiver: gzip bomb / broken gzip")
    for sent in (BOMB, BOMB[: len(BOMB) - cut - 1], gzip.compress(dumps(RING))[: 10 + cut]):
        body = dumps(RING) if valid_for == "prefix" else b""
        status, stored, queued = receiver.post(sent + trailing, signed_headers(body))
        assert 400 <= status < 500, status
        assert stored == 0 and queued == 0


# --- signed events with nasty values in every field the code reads (on PostgreSQL too) -------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "bob\x00",
        "default:\x00",
        "\ud800",
        "bob\udfff",
        "default:\ud800",
        "²",
        "¹²³",
        "١٧٧٨١٩٨٤٠٠",
        "\uff11\uff12\uff13",  # fullwidth digits
        "9" * 40,
        "x" * 300,
        "default:" + "x" * 300,
        "x" * 5000,
        "🙂" * 100,
        "\u202e",
        ":",
        "a:b:c",
    ]
) | st.text(max_size=40)
NASTY_NUMBERS = (
    st.sampled_from(
        [
            0,
            -1,
            2**31 - 1,
            2**31,
            2**63,
            10**20,
            10**308,
            10**309,
            -(10**400),
            10**4000,  # under Python's 4300-digit limit (one over it: see below)
            1e308,
            -1e308,
            0.5,
            1778198400000000000,
        ]
    )
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
)


RFC3339 = st.sampled_from(
    [
        "2026-05-08T01:55:20.123456-05:00",
        "2026-05-08T01:55:20.123456789+02:00",
        "2026-05-08T01:55:20.911604755Z",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "9999-12-31T23:59:59.999999999Z",
        "2026-13-45T00:00:00Z",
        "2026-05-08T01:55:20.²Z",
        "\uff12\uff10\uff12\uff16-05-08T01:55:20Z",
        "1778198400000000000",
        "-1778198400000000000",
        "1" * 40,
    ]
) | st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
NASTY = NASTY_TEXT | NASTY_NUMBERS | RFC3339 | st.none() | st.booleans() | JSON

# Every field the receiver or the worker reads, in the events that carry it.
FIELDS = [
    ("type",),
    ("call_cid",),
    ("session_id",),
    ("created_at",),
    ("video",),
    ("user",),
    ("user", "id"),
    ("user", "name"),
    ("members",),
    ("members", 0),
    ("members", 0, "user_id"),
    ("members", 0, "user", "id"),
    ("members", 0, "user", "name"),
    ("call",),
    ("call", "cid"),
    ("call", "custom"),
    ("call", "custom", "display_name"),
    ("call", "custom", "name"),
    ("call", "created_by"),
    ("call", "created_by", "id"),
    ("call", "created_by", "name"),
    ("call", "settings", "ring"),
    ("call", "settings", "ring", "incoming_call_timeout_ms"),
    ("call", "settings", "ring", "auto_cancel_timeout_ms"),
    ("call", "settings", "video", "enabled"),
    ("call", "session", "id"),
    ("call", "session", "accepted_by"),
    ("call", "session", "rejected_by"),
    ("call", "session", "participants"),
    ("call", "ended_at"),
]
EVENTS = st.sampled_from(
    [
        lambda: sample_events.ring_event("alice", ["bob", "carol"]),
        lambda: sample_events.member_event("call.missed", "alice", ["bob"]),
        lambda: sample_events.member_event("call.notification", "alice", ["bob"]),
        lambda: sample_events.member_event("call.session_started", None, [], participants=["a"]),
        lambda: sample_events.member_event("call.live_started", "host", []),
        lambda: sample_events.call_event("call.accepted", "default:fz", "bob"),
        lambda: sample_events.call_event("call.ended", "default:fz"),
        lambda: {"type": "call.updated", "call_cid": "default:fz", "created_at": 1},
    ]
)
# Header values as a client can send them (Latin-1, no line breaks).
HEADER_VALUES = st.sampled_from(
    ["", "1", "0", "-5", "²", "¹²", "9" * 40, str(2**31), str(2**63), "\x00", "1\x00", "x" * 300]
) | st.text(st.characters(max_codepoint=0xFF, blacklist_characters="\r\n"), max_size=300)


def put(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Set ``value`` at ``path``, creating the objects on the way (a list index past the end
    appends)."""
    parent = document
    for key, following in itertools.pairwise(path):
        child = parent[key] if _has(parent, key) else None
        if not isinstance(child, dict | list):
            child = [] if isinstance(following, int) else {}
            _assign(parent, key, child)
        parent = child
    _assign(parent, path[-1], value)
    return document


def _has(parent: Any, key: Any) -> bool:
    if isinstance(parent, list):
        return isinstance(key, int) and key < len(parent)
    return key in parent


def _assign(parent: Any, key: Any, value: Any) -> None:
    if isinstance(parent, list):
        if not isinstance(key, int):
            raise TypeError(key)
        if key < len(parent):
            parent[key] = value
        else:
            parent.append(value)
    else:
        parent[key] = value


@FIXTURE_OK
@given(
    make=EVENTS,
    mutations=st.lists(st.tuples(st.sampled_from(FIELDS), NASTY), min_size=1, max_size=4),
    attempt=st.none() | HEADER_VALUES,
    webhook_id=st.none() | HEADER_VALUES,
    compress=st.booleans(),
)
def test_signed_nasty_values_in_every_field_and_header(
    receiver: Receiver, make, mutations, attempt, webhook_id, compress
):
    count("receiver: nasty values in fields and headers")
    event = make()
    for path, value in mutations:
        try:
            event = put(event, path, value)
        except (TypeError, KeyError, IndexError):
            continue  # an earlier mutation made a parent a scalar
    body = dumps(event)
    headers = signed_headers(body)
    if attempt is not None:
        headers["X-Webhook-Attempt"] = attempt
    if webhook_id is not None:
        headers["X-Webhook-Id"] = webhook_id
    check_signed(receiver, body, compress, headers, views=True)


@FIXTURE_OK
@given(
    created_at=NASTY_NUMBERS | RFC3339 | NASTY_TEXT,
    kind=st.sampled_from(["call.ring", "call.missed", "call.accepted"]),
)
def test_signed_timestamps_of_every_shape(receiver: Receiver, created_at, kind):
    count("receiver: created_at of every shape")
    if kind == "call.ring":
        event = sample_events.ring_event("alice", ["bob"])
    elif kind == "call.missed":
        event = sample_events.member_event(kind, "alice", ["bob"])
    else:
        event = sample_events.call_event(kind, "default:ts", "bob")
    event["created_at"] = created_at
    check_signed(receiver, dumps(event), views=True)


def test_the_values_that_broke_the_receiver_are_answered(receiver: Receiver):
    """Each value issue 11 found: a 5xx (or a poison event) before."""
    count("receiver: issue 11 values")
    stored_now = datetime.now(UTC)
    cases: list[tuple[dict, dict[str, str]]] = []
    ring = sample_events.ring_event("alice", ["bob"])
    for created_at in (
        10**400,
        "²",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        stored_now.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    ):
        cases.append((ring | {"created_at": created_at, "session_id": str(uuid4())}, {}))
    cases.append((ring | {"call_cid": "default:" + "x" * 300}, {}))
    cases.append((ring | {"session_id": "s" * 5000}, {}))
    cases.append((ring | {"call_cid": "default:a\x00b"}, {}))
    cases.append((ring | {"session_id": "a\x00b\ud800"}, {}))
    poison = sample_events.ring_event("alice", ["bob"])
    poison["call"]["settings"]["ring"]["incoming_call_timeout_ms"] = 10**20
    cases.append((poison, {}))
    cases.append((sample_events.ring_event("alice", ["bob"]), {"X-Webhook-Attempt": str(2**40)}))
    cases.append((sample_events.ring_event("alice", ["bob"]), {"X-Webhook-Attempt": "²"}))
    cases.append((sample_events.ring_event("alice", ["bob"]), {"X-Webhook-Id": "w\x00" * 200}))
    for event, extra in cases:
        body = dumps(event)
        status = check_signed(receiver, body, headers=signed_headers(body) | extra, views=True)
        assert status in (200, 202), (event, extra, status)
    # A number longer than Python reads (4300 digits): JSON, but not JSON Python can read.
    body = b'{"type":"call.ring","created_at":' + b"9" * 5000 + b"}"
    assert check_signed(receiver, body) == 400
