"""The aioapns repairs (worker/push/aioapns_repairs.py, docs/push-libraries.md §1 "Pitfalls"):
the real aioapns client, with the repairs installed, over TLS + HTTP/2 against the fake APNs
(tests/fakes/fake_apns.py).  No ApnsProvider here: each test shows one repair doing its job.

aioapns has no request timeout, so each scenario runs under a generous ``asyncio.wait_for``: a
repair that stops working fails the test instead of hanging it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import JWTAuthorizationHeaderProvider
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded

from tests.fakes.credentials import PushCredentials
from tests.fakes.fake_apns import FakeApns
from tests.fakes.pytest_plugin import APNS_BUNDLE_ID, APNS_KEY_ID, APNS_TEAM_ID
from worker.push.aioapns_repairs import AnswerLost, TrackedRequest, install_repairs

# Only a guard against a hang; every scenario here takes well under a second or two.
SCENARIO_LIMIT = 60.0
NOTHING_OPEN = {"requests": 0, "request_streams": 0, "request_statuses": 0, "buffered_bodies": 0}


def token(prefix: str, n: int = 0) -> str:
    """A 64-character token whose prefix picks the fake's behaviour."""
    return (f"{prefix}{n:08d}" + "f" * 64)[:64]


def voip(device_token: str, *, at_most_once: bool = False) -> TrackedRequest:
    return TrackedRequest(
        device_token=device_token,
        message={"aps": {}},
        push_type=PushType.VOIP,
        apns_topic=f"{APNS_BUNDLE_ID}.voip",
        at_most_once=at_most_once,
    )


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, SCENARIO_LIMIT))


async def _quiet(request: NotificationRequest, result: NotificationResult) -> None:
    """Stands in for aioapns's ERROR line per non-200 answer; the tests read the results."""


@asynccontextmanager
async def repaired_client(
    fake: FakeApns, credentials: PushCredentials, *, max_connections: int = 10
) -> AsyncIterator[APNs]:
    """A real aioapns client with the repairs installed, built in the running loop (the pool
    captures the loop it is built in: docs/push-libraries.md §1)."""
    key = credentials.apns_key_file.read_text()
    context = ssl.create_default_context(cafile=str(credentials.ca_file))
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=key,
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_BUNDLE_ID,
        use_sandbox=True,
        ssl_context=context,
        max_connections=max_connections,
        err_func=_quiet,
    )
    auth = JWTAuthorizationHeaderProvider(key=key, key_id=APNS_KEY_ID, team_id=APNS_TEAM_ID)
    install_repairs(client, auth=auth, host="localhost", port=fake.port)  # the cert's name
    try:
        yield client
    finally:
        client.pool.close()
        await until(lambda: not client.pool.connections)


async def until(condition: Callable[[], bool], limit: float = 10.0) -> bool:
    """Let the loop run until ``condition`` holds (False if it never does within ``limit``)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def open_request_maps(client: APNs) -> list[dict[str, int]]:
    """Per open connection, the entries left in aioapns's per-request maps and our buffers."""
    return [
        {
            "requests": len(connection.requests),
            "request_streams": len(connection.request_streams),
            "request_statuses": len(connection.request_statuses),
            "buffered_bodies": len(connection._bodies),  # type: ignore[attr-defined]
        }
        for connection in client.pool.connections
    ]


async def send_all(client: APNs, requests: list[TrackedRequest]) -> list[NotificationResult]:
    return list(await asyncio.gather(*(client.send_notification(r) for r in requests)))


def test_install_repairs_points_the_client_at_the_server_with_one_token_for_all_connections(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    """Stock aioapns signs a new provider token per connection, and Apple throttles token
    updates (TooManyProviderTokenUpdates): every connection of a client signs with one."""
    fake = fake_apns_factory(goaway_after=20)  # so that the client opens several connections

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            for batch in range(3):
                results = await send_all(
                    client, [voip(token("ok", batch * 100 + i)) for i in range(20)]
                )
                assert {r.status for r in results} == {"200"}

    run(scenario())
    assert fake.connections >= 3
    assert {r["connection"] for r in fake.received} == set(range(1, fake.connections + 1))
    assert len({r["headers"]["authorization"] for r in fake.received}) == 1
    assert {r["headers"]["host"] for r in fake.received} == {"localhost"}


def test_p1_a_late_answer_to_an_abandoned_request_does_not_break_the_connection(
    fake_apns: FakeApns, push_credentials: PushCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with repaired_client(fake_apns, push_credentials) as client:
            late = asyncio.create_task(client.send_notification(voip(token("holdlate"))))
            assert await until(lambda: fake_apns.count == 1)
            late.cancel()  # the caller gives up, as asyncio.wait_for does on a timeout
            with suppress(asyncio.CancelledError):
                await late
            other = asyncio.create_task(client.send_notification(voip(token("holdother"))))
            assert await until(lambda: fake_apns.count == 2)
            # The abandoned request's answer arrives first, then the other's.
            assert fake_apns.release("holdlate") == 1
            assert fake_apns.release("holdother") == 1
            assert (await other).status == "200"
            assert open_request_maps(client) == [NOTHING_OPEN]

    run(scenario())
    assert fake_apns.connections == 1
    assert fake_apns.hits[token("holdother")] == 1  # answered, not resent on a new connection
    assert "Fatal error" not in caplog.text
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]


def test_p2_per_request_maps_are_emptied_after_every_kind_of_answer(
    fake_apns: FakeApns, push_credentials: PushCredentials
) -> None:
    async def scenario() -> None:
        async with repaired_client(fake_apns, push_credentials) as client:
            for batch in range(3):
                requests = [voip(token("ok", batch * 1000 + i)) for i in range(100)]
                requests += [voip(token("gone", i)) for i in range(20)]
                requests += [voip(token("throttle", i)) for i in range(20)]
                results = await send_all(client, requests)
                assert [r.status for r in results] == ["200"] * 100 + ["410"] * 20 + ["429"] * 20
            assert open_request_maps(client) == [NOTHING_OPEN]

    run(scenario())
    assert fake_apns.count == 420


def test_p3_an_empty_data_frame_after_a_200_is_not_parsed(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    fake = fake_apns_factory(empty_data_on_200=True)

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            results = await send_all(client, [voip(token("ok", i)) for i in range(50)])
            assert {r.status for r in results} == {"200"}

    run(scenario())
    assert fake.connections == 1


def test_p3_an_error_body_split_over_two_data_frames_is_parsed_whole(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    fake = fake_apns_factory(split_error_body=True)

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            results = await send_all(client, [voip(token("gone", i)) for i in range(20)])
            assert {(r.status, r.description) for r in results} == {("410", "Unregistered")}
            assert all(isinstance(r.timestamp, int) for r in results)

    run(scenario())
    assert fake.connections == 1


def test_p4_after_a_goaway_requests_go_to_a_new_connection(
    fake_apns_factory: Callable[..., FakeApns],
    push_credentials: PushCredentials,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_apns_factory(goaway_after=200)
    caplog.set_level(logging.WARNING)
    tokens = [token("ok", i) for i in range(600)]

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            results = await send_all(client, [voip(t) for t in tokens])
            assert {r.status for r in results} == {"200"}

    run(scenario())
    assert sorted(fake.tokens()) == sorted(tokens)  # each answered exactly once
    assert fake.connections >= 3
    assert not [r for r in caplog.records if r.exc_info]


def test_p5_received_data_is_acknowledged_so_error_bodies_keep_coming(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    # 1,500 410 bodies (~54 bytes each) exceed HTTP/2's initial 65,535-byte receive window: the
    # fake respects flow control, so a client that never acknowledges data stalls here.
    fake = fake_apns_factory(record=False)

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials, max_connections=1) as client:
            results = await send_all(client, [voip(token("gone", i)) for i in range(1500)])
            assert {(r.status, r.description) for r in results} == {("410", "Unregistered")}

    run(scenario())
    assert fake.connections == 1


# --- which requests are resent: only those APNs cannot have processed, for at-most-once ------


@pytest.mark.parametrize("how", ["drop", "reset"])
def test_an_at_most_once_request_whose_answer_is_lost_is_not_resent(
    fake_apns: FakeApns, push_credentials: PushCredentials, how: str
) -> None:
    lost = voip(token(how), at_most_once=True)

    async def scenario() -> None:
        async with repaired_client(fake_apns, push_credentials) as client:
            with pytest.raises(AnswerLost):
                await client.send_notification(lost)
            # The client still works afterwards (on a new connection after a drop).
            assert (await client.send_notification(voip(token("ok")))).status == "200"

    run(scenario())
    assert lost.in_doubt  # written: APNs may have delivered it
    assert fake_apns.hits[lost.device_token] == 1


def test_an_at_least_once_request_whose_connection_drops_is_resent_by_the_pool_as_before(
    fake_apns: FakeApns, push_credentials: PushCredentials
) -> None:
    lost = voip(token("drop"))

    async def scenario() -> None:
        async with repaired_client(fake_apns, push_credentials) as client:
            with pytest.raises((ConnectionClosed, MaxAttemptsExceeded)):
                await client.send_notification(lost)

    run(scenario())
    assert fake_apns.hits[lost.device_token] == 5  # aioapns's max_connection_attempts


def test_a_refused_stream_was_not_processed_so_even_an_at_most_once_request_is_resent(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    fake = fake_apns_factory(flaky_failures=2)
    refused = voip(token("refuse"), at_most_once=True)

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            assert (await client.send_notification(refused)).status == "200"

    run(scenario())
    assert fake.hits[refused.device_token] == 3  # REFUSED_STREAM twice (RFC 9113 §8.7), then 200


def test_at_most_once_requests_above_a_goaway_are_resent_the_others_answered_once(
    fake_apns_factory: Callable[..., FakeApns], push_credentials: PushCredentials
) -> None:
    """Streams above the GOAWAY's last stream id were not processed (RFC 9113 §6.8): resent on a
    new connection, each reaching the server exactly once."""
    fake = fake_apns_factory(goaway_after=50)
    tokens = [token("ok", i) for i in range(300)]

    async def scenario() -> None:
        async with repaired_client(fake, push_credentials) as client:
            results = await send_all(client, [voip(t, at_most_once=True) for t in tokens])
            assert {r.status for r in results} == {"200"}

    run(scenario())
    assert sorted(fake.tokens()) == sorted(tokens)
    assert fake.connections >= 3
