"""worker.delivery.call_type_settings: Stream's call-type push settings, fetched in the background
from the fake Stream API over real HTTP (worker.stream.api.StreamApi), read from memory by
pushes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from tests.e2e.processes import wait_until
from tests.fakes.fake_stream_api import (
    CALL_TYPE,
    CALL_TYPES,
    FakeStreamApi,
    notification_settings,
)
from worker.delivery.call_type_settings import (
    SWITCHED_OFF_IN_STREAM,
    CallTypeSettingsCache,
    push_text,
    switched_off,
)
from worker.delivery.templates import TemplateBook
from worker.foundation.settings import Settings
from worker.stream import samples as sample_events
from worker.stream.api import StreamApi
from worker.stream.events import CallEvent, parse_call_event

LOCAL = TemplateBook.defaults()


def _event(event_type: str = "call.ring", call_type: str = "default") -> CallEvent:
    body = sample_events.ring_event("alice", ["bob"], call_type=call_type, display_name="Sync")
    body["user"]["name"] = "Alice"
    return parse_call_event({**body, "type": event_type})


def _fetches(result: str) -> float:
    return (
        REGISTRY.get_sample_value("callpush_stream_call_type_fetches_total", {"result": result})
        or 0.0
    )


def _requests(fake: FakeStreamApi) -> int:
    return len(fake.requests_to(CALL_TYPES)) + len(fake.requests_to(CALL_TYPE))


@pytest.fixture
def make_cache(stream_api: StreamApi) -> Iterator:  # type: ignore[type-arg]
    made: list[CallTypeSettingsCache] = []

    def make(refresh: float = 60.0, retry: float = 60.0) -> CallTypeSettingsCache:
        cache = CallTypeSettingsCache(stream_api, refresh_seconds=refresh, retry_seconds=retry)
        made.append(cache)
        cache.start()
        assert cache.wait_warm(10)
        return cache

    yield make
    for cache in made:
        cache.close()


def test_every_call_type_is_fetched_at_start_and_pushes_only_read_memory(
    fake_stream_api: FakeStreamApi, make_cache
) -> None:
    fake_stream_api.set_call_type(
        "default",
        notification_settings(
            off=["call_missed"], templates={"call_ring": ("{{ user.display_name }} rings!", "")}
        ),
    )
    fake_stream_api.set_call_type("livestream", notification_settings(off=["call_live_started"]))
    cache = make_cache()
    assert fake_stream_api.calls[CALL_TYPES] == 1
    assert sorted(cache.entries()) == ["default", "livestream"]

    for _ in range(200):
        assert push_text(LOCAL, cache, _event(), "bob", "Bob").title == "Alice rings!"
        assert switched_off(LOCAL, cache, _event("call.missed")) == SWITCHED_OFF_IN_STREAM
        assert switched_off(LOCAL, cache, _event("call.ring")) is None
        live = _event("call.live_started", "livestream")
        assert switched_off(LOCAL, cache, live) == SWITCHED_OFF_IN_STREAM
    # Nothing above asked Stream: one list at start-up, that is all.
    assert _requests(fake_stream_api) == 1
    # Events without wording in Stream get the local wording.
    assert push_text(LOCAL, cache, _event("call.missed"), "bob").title == "Missed call"


def test_an_unknown_call_type_gets_the_local_settings_then_is_fetched_in_the_background(
    fake_stream_api: FakeStreamApi, make_cache
) -> None:
    cache = make_cache()
    fake_stream_api.set_call_type(
        "audio_room",
        notification_settings(off=["call_notification"], templates={"call_ring": ("Room!", "")}),
    )
    notify = _event("call.notification", "audio_room")
    # First sight: local settings for this push (no wait for Stream), a fetch scheduled.
    assert switched_off(LOCAL, cache, notify) is None
    assert push_text(LOCAL, cache, _event(call_type="audio_room"), "bob").title == (
        "Alice is calling you"
    )
    wait_until(lambda: cache.get("audio_room") is not None, 10, message="audio_room fetched")
    assert switched_off(LOCAL, cache, notify) == SWITCHED_OFF_IN_STREAM
    assert push_text(LOCAL, cache, _event(call_type="audio_room"), "bob").title == "Room!"
    assert fake_stream_api.calls[CALL_TYPE] == 1
    assert fake_stream_api.requests_to(CALL_TYPE)[0].path == "/api/v2/video/calltypes/audio_room"


def test_a_call_type_stream_does_not_have_keeps_the_local_settings(
    fake_stream_api: FakeStreamApi, make_cache
) -> None:
    before = _fetches("not_found")
    cache = make_cache()
    local = TemplateBook.from_settings(
        Settings(call_types={"ghost": {"disabled_events": ["call.missed"]}})
    )
    assert cache.get("ghost") is None
    wait_until(lambda: cache.get("ghost") is not None, 10, message="ghost answered")
    entry = cache.get("ghost")
    assert entry is not None and not entry.in_stream
    assert _fetches("not_found") == before + 1
    missed = _event("call.missed", "ghost")
    assert switched_off(local, cache, missed) == "call.missed switched off for call type ghost"
    assert push_text(local, cache, _event(call_type="ghost"), "bob").title == (
        "Alice is calling you"
    )
    # Asked again and again: fetched once (the answer is remembered until the next refresh).
    for _ in range(50):
        cache.get("ghost")
    assert fake_stream_api.calls[CALL_TYPE] == 1


def test_an_outage_keeps_the_last_good_copy_and_says_so(
    fake_stream_api: FakeStreamApi, make_cache, caplog: pytest.LogCaptureFixture
) -> None:
    fake_stream_api.set_call_type(
        "default",
        notification_settings(off=["call_missed"], templates={"call_ring": ("Good copy", "")}),
    )
    cache = make_cache(refresh=0.2, retry=0.1)
    failed_before = _fetches("failed")

    fake_stream_api.outage = True
    # What Stream would say if it answered: ignored while it does not.
    fake_stream_api.set_call_type("default", notification_settings(templates={}))
    with caplog.at_level(logging.WARNING, logger="callpush.call_type_settings"):
        wait_until(lambda: _fetches("failed") >= failed_before + 2, 10, message="failed refreshes")
        assert push_text(LOCAL, cache, _event(), "bob").title == "Good copy"
        assert switched_off(LOCAL, cache, _event("call.missed")) == SWITCHED_OFF_IN_STREAM
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not refreshed" in w and "keeping the copy fetched" in w for w in warnings)

    fake_stream_api.outage = False
    wait_until(
        lambda: switched_off(LOCAL, cache, _event("call.missed")) is None, 10, message="refresh"
    )
    assert push_text(LOCAL, cache, _event(), "bob").title == "Alice is calling you"


def test_down_at_start_means_local_settings_until_stream_answers(
    fake_stream_api: FakeStreamApi, make_cache, caplog: pytest.LogCaptureFixture
) -> None:
    fake_stream_api.outage = True
    fake_stream_api.set_call_type("default", notification_settings(off=["call_ring"]))
    with caplog.at_level(logging.WARNING, logger="callpush.call_type_settings"):
        cache = make_cache(refresh=60, retry=0.1)
    assert "none fetched yet: the local settings apply" in caplog.text
    assert switched_off(LOCAL, cache, _event()) is None
    fake_stream_api.outage = False
    wait_until(
        lambda: switched_off(LOCAL, cache, _event()) == SWITCHED_OFF_IN_STREAM,
        10,
        message="fetched after the outage",
    )


def test_the_master_switch_is_not_followed_but_local_switches_still_are(
    fake_stream_api: FakeStreamApi, make_cache
) -> None:
    # enabled = false at the top is how a team stops Stream's own pushes (README).
    fake_stream_api.set_call_type("default", notification_settings(enabled=False))
    cache = make_cache()
    entry = cache.get("default")
    assert entry is not None and entry.master_enabled is False
    assert switched_off(LOCAL, cache, _event()) is None
    local = TemplateBook.from_settings(
        Settings(call_types={"default": {"disabled_events": ["call.ring"]}})
    )
    assert switched_off(local, cache, _event()) == "call.ring switched off for call type default"


def test_unusable_templates_fall_back_to_the_local_wording_with_one_warning(
    fake_stream_api: FakeStreamApi, make_cache, caplog: pytest.LogCaptureFixture
) -> None:
    fake_stream_api.set_call_type(
        "default",
        notification_settings(
            templates={
                "call_ring": ("{{ user.display_name ", ""),  # does not compile
                # Compiles and passes the trial; fails on a call whose custom data has people.
                "call_missed": ("{{#each call.custom.people}}{{shout this}}{{/each}}", ""),
            }
        ),
    )
    with caplog.at_level(logging.WARNING, logger="callpush.call_type_settings"):
        cache = make_cache()
        assert push_text(LOCAL, cache, _event(), "bob").title == "Alice is calling you"
        missed = parse_call_event(
            {
                **_event("call.missed").raw,
                "call": {**_event().raw["call"], "custom": {"people": [1]}},
            }
        )
        for _ in range(3):
            assert push_text(LOCAL, cache, missed, "bob").title == "Missed call"
    messages = [r.getMessage() for r in caplog.records]
    assert (
        sum("call.ring: Stream's template is not used (title: unclosed tag)" in m for m in messages)
        == 1
    )
    assert sum("Stream's template failed (ValueError" in m for m in messages) == 1


def test_close_stops_the_refresher(fake_stream_api: FakeStreamApi, stream_api: StreamApi) -> None:
    cache = CallTypeSettingsCache(stream_api, refresh_seconds=0.05, retry_seconds=0.05)
    cache.start()
    assert cache.wait_warm(10)
    cache.close()
    count = _requests(fake_stream_api)
    time.sleep(0.3)  # six refresh periods
    assert _requests(fake_stream_api) == count


def test_when_stream_refuses_the_list_the_known_call_types_are_refreshed_one_by_one(
    fake_stream_api: FakeStreamApi, make_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.fake_stream_api import _error

    monkeypatch.setattr(
        fake_stream_api, "_list_call_types", lambda: (_error(403, "not allowed"), 403)
    )
    fake_stream_api.set_call_type("default", notification_settings(off=["call_ring"]))
    cache = make_cache(refresh=0.2, retry=0.1)
    assert cache.get("default") is None  # first sight: local, fetched by name
    wait_until(
        lambda: switched_off(LOCAL, cache, _event()) == SWITCHED_OFF_IN_STREAM, 10, message="get"
    )
    fake_stream_api.set_call_type("default", notification_settings())
    wait_until(lambda: switched_off(LOCAL, cache, _event()) is None, 10, message="refreshed")
