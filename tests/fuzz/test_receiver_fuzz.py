"""Bad input to POST /webhooks/stream (issue 7 item 7), against the real Flask app on SQLite
with the in-memory Celery broker: wrong or missing signatures, truncated / garbage / huge /
deeply nested JSON, wrong types in every field of a call.ring, unknown event types, gzip bombs.

Properties: never a 5xx or an exception; without a valid signature nothing is stored or
enqueued; with one, garbage is answered 4xx (nothing stored) or 2xx (stored, and enqueued once
when it is an event we act on).  HYPOTHESIS_PROFILE=bench runs thousands of cases per test.
"""

from __future__ import annotations

import gzip
import os
import zlib
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.fuzz._counts import count
from tests.fuzz.strategies import JSON, dumps, nested, paths, replaced
from webhook_app import create_app
from worker import sample_events
from worker.celery_app import create_celery
from worker.settings import load_settings
from worker.storage.database import Database
from worker.storage.migrations import upgrade_to_head
from worker.storage.models import WebhookEvent
from worker.webhook_signature import expected_signature

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
        before_rows, before_queued = self.stored(), self.queued()
        response = self.client.post("/webhooks/stream", data=body, headers=headers)
        return (
            response.status_code,
            self.stored() - before_rows,
            self.queued() - before_queued,
        )


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Receiver:
    path = tmp_path_factory.mktemp("fuzz-receiver") / "callpush.db"
    made = Receiver(f"sqlite:///{path}")
    yield made
    made.db.dispose()


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


def check_signed(receiver: Receiver, body: bytes, compress: bool = False) -> int:
    sent = gzip.compress(body) if compress else body
    status, stored, queued = receiver.post(sent, signed_headers(body))
    assert_ok_status(status)
    if status >= 400:
        assert stored == 0 and queued == 0, (status, stored, queued)
    else:
        assert stored == 1 and queued in (0, 1), (status, stored, queued)
        assert (queued == 1) == (status == 202)
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
    status, stored, queued = receiver.post(body, signed_headers(body))
    assert_ok_status(status)
    if event_type not in known:
        assert status == 200 and stored == 1 and queued == 0


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
