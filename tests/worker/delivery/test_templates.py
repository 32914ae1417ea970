"""Push templates (worker/delivery/templates.py): Stream's wording, overrides, sandbox, byte
caps."""

from __future__ import annotations

import json
import logging
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.delivery.templates import (
    BODY_MAX_BYTES,
    DEFAULT_TEMPLATES,
    PUSH_EVENT_TYPES,
    TITLE_MAX_BYTES,
    RenderedText,
    TemplateBook,
    TemplateConfigError,
    cap_utf8,
    json_utf8_length,
    template_context,
)
from worker.foundation.settings import Settings, load_settings
from worker.stream import samples as sample_events
from worker.stream.events import CallEvent, parse_call_event


def _event(
    event_type: str = "call.ring",
    *,
    caller: str = "alice",
    call_type: str = "default",
    display_name: str = "",
) -> CallEvent:
    body = sample_events.ring_event(caller, ["bob"], call_type=call_type, display_name=display_name)
    return parse_call_event({**body, "type": event_type})


def _book(call_types: dict) -> TemplateBook:
    return TemplateBook.from_settings(Settings(call_types=call_types))


def _problems(call_types: dict) -> str:
    with pytest.raises(TemplateConfigError) as caught:
        _book(call_types)
    return str(caught.value)


# --- defaults -------------------------------------------------------------------------------


def test_default_ring_matches_streams_ios_example():
    # stream-protocol.md §3.6: "Alice is calling you", body "".
    text = TemplateBook.defaults().render(_event(), "bob")
    assert text == RenderedText("Alice is calling you", "")


def test_default_missed_matches_streams_example_verbatim():
    body = sample_events.ring_event("john_doe", ["artem"])
    body["user"]["name"] = "John Doe"
    event = parse_call_event({**body, "type": "call.missed"})
    text = TemplateBook.defaults().render(event, "artem")
    assert text == RenderedText("Missed call", "You missed a call from John Doe")


@pytest.mark.parametrize(
    ("event_type", "named", "unnamed"),
    [
        ("call.ring", ("Alice is calling you", ""), ("Alice is calling you", "")),
        (
            "call.notification",
            ("Alice invites you to a call", "Team sync"),
            ("Alice invites you to a call", ""),
        ),
        (
            "call.missed",
            ("Missed call", "You missed a call from Alice"),
            ("Missed call", "You missed a call from Alice"),
        ),
        (
            "call.session_started",
            ("Team sync has started", ""),
            ("A call you are a member of has started", ""),
        ),
        ("call.live_started", ("Team sync is live", ""), ("Alice is live", "")),
    ],
)
def test_defaults_for_every_push_event(event_type, named, unnamed):
    book = TemplateBook.defaults()
    assert book.render(_event(event_type, display_name="Team sync"), "bob") == RenderedText(*named)
    assert book.render(_event(event_type), "bob") == RenderedText(*unnamed)


def test_defaults_cover_exactly_the_push_events():
    assert set(DEFAULT_TEMPLATES) == PUSH_EVENT_TYPES


@pytest.mark.parametrize("event_type", sorted(PUSH_EVENT_TYPES))
def test_defaults_without_user_or_creator_still_read_well(event_type):
    # call.session_started / call.live_started carry no user (§2.2); sample_events.call_event
    # has no created_by either.
    event = parse_call_event(sample_events.call_event(event_type, "livestream:abc"))
    text = TemplateBook.defaults().render(event, "bob")
    assert text.title and not text.title.startswith(" ")
    assert "  " not in text.title + text.body


def test_session_events_use_the_creator_as_user():
    body = sample_events.call_event("call.live_started", "livestream:abc")
    body["call"]["created_by"] = {"id": "host", "name": "Hostess"}
    event = parse_call_event(body)
    assert TemplateBook.defaults().render(event, "bob").title == "Hostess is live"


def test_render_rejects_an_event_without_a_push():
    with pytest.raises(ValueError, match=r"call\.accepted"):
        TemplateBook.defaults().render(_event("call.accepted"), "bob")


# --- overrides ------------------------------------------------------------------------------


def test_override_per_call_type_then_star_then_default():
    book = _book(
        {
            "*": {"templates": {"call.ring": {"title": "star {{ user.name }}", "body": "sb"}}},
            "default": {"templates": {"call.ring": {"title": "default {{ user.name }}"}}},
            "livestream": {"templates": {"call.missed": {"title": "ls missed", "body": "b"}}},
        }
    )
    # default: its own template, and an override is whole: the omitted body is "".
    assert book.render(_event(), "bob") == RenderedText("default Alice", "")
    # livestream: no ring override → "*".
    assert book.render(_event(call_type="livestream"), "bob") == RenderedText("star Alice", "sb")
    assert book.render(_event("call.missed", call_type="livestream"), "bob") == RenderedText(
        "ls missed", "b"
    )
    # an unconfigured call type: "*", then the built-in default for events "*" does not set.
    assert book.render(_event(call_type="audio_room"), "bob").title == "star Alice"
    assert book.render(_event("call.missed", call_type="audio_room"), "bob") == RenderedText(
        "Missed call", "You missed a call from Alice"
    )


def test_the_shipped_example_configuration_is_valid():
    example = Path(__file__).parents[3] / "config" / "callpush.example.toml"
    call_types = tomllib.loads(example.read_text())["call_types"]
    book = _book(call_types)
    assert book.render(_event("call.missed"), "bob") == RenderedText(
        "Missed call", "Alice tried to call you"
    )
    assert not book.enabled("livestream", "call.session_started")


def test_all_variables():
    template = (
        "{{ user.id }}|{{ user.name }}|{{ user.display_name }}|{{ user.role }}|"
        "{{ call.id == call.cid.split(':')[1] }}|{{ call.type }}|{{ call.display_name }}|"
        "{{ call.created_by.display_name }}|{{ receiver.id }}|{{ receiver.display_name }}|"
        "{{ event.type }}|{{ event.video }}|{{ event.created_at[:2] }}"
    )
    book = _book({"*": {"templates": {"call.notification": {"title": template}}}})
    title = book.render(_event("call.notification", display_name="Sync"), "bob", "Bobby").title
    assert (
        title
        == "alice|Alice|Alice|user|true|default|Sync|Alice|bob|Bobby|call.notification|true|20"
    )


def test_receiver_display_name_falls_back_to_the_id():
    context = template_context(_event(), "bob")
    assert context["receiver"] == {"id": "bob", "name": "", "display_name": "bob"}


def test_missing_variables_render_empty():
    template = "[{{ nope }}][{{ user.nope }}][{{ call.custom.a.b.c }}][{{ user.image }}]"
    book = _book({"*": {"templates": {"call.ring": {"title": template, "body": "{{ x.y }}"}}}})
    assert book.render(_event(), "bob") == RenderedText("[][][][]", "")


def test_truncate_filter_means_the_length_given():
    # Jinja's default leeway would keep a 43-character name untouched by truncate(40).
    book = _book(
        {"*": {"templates": {"call.ring": {"title": "{{ user.display_name | truncate(10) }}"}}}}
    )
    event = _event(caller="abcdefghijkl")  # name "Abcdefghijkl", 12 characters
    assert book.render(event, "bob").title == "Abcdefg..."


def test_custom_data_and_json_spelling():
    body = sample_events.ring_event("alice", ["bob"])
    body["call"]["custom"] = {"room": "R1", "flag": True, "none": None, "tags": ["a"]}
    event = parse_call_event(body)
    template = "{{ call.custom.room }} {{ call.custom.flag }} [{{ call.custom.none }}] "
    template += "{{ call.custom.tags }}"
    book = _book({"*": {"templates": {"call.ring": {"title": template}}}})
    assert book.render(event, "bob").title == 'R1 true [] ["a"]'


def test_toml_configuration(tmp_path, monkeypatch):
    config = tmp_path / "callpush.toml"
    config.write_text(
        '[call_types."*".templates."call.ring"]\n'
        'title = "{{ user.display_name }} rings"\n'
        "[call_types.default]\n"
        'disabled_events = ["call.session_started"]\n'
    )
    monkeypatch.setenv("CALLPUSH_CONFIG", str(config))
    book = TemplateBook.from_settings(load_settings())
    assert book.render(_event(), "bob") == RenderedText("Alice rings", "")
    assert not book.enabled("default", "call.session_started")


# --- configuration errors -------------------------------------------------------------------


def test_syntax_error_names_the_setting():
    message = _problems(
        {"default": {"templates": {"call.ring": {"title": "{{ user.display_name }"}}}}
    )
    assert message == "call_types.default.templates.\"call.ring\".title: unexpected '}'"


def test_star_call_type_and_body_are_quoted_in_the_setting_name():
    message = _problems({"*": {"templates": {"call.missed": {"title": "x", "body": "{% if %}"}}}})
    assert message.startswith('call_types."*".templates."call.missed".body: ')


def test_multi_line_template_error_gives_the_line():
    message = _problems({"*": {"templates": {"call.ring": {"title": "a\nb\n{{ }}"}}}})
    assert message.endswith("(line 3)")


def test_handlebars_helpers_get_a_hint():
    message = _problems(
        {"*": {"templates": {"call.ring": {"title": "{{ truncate user.name 20 }}"}}}}
    )
    assert "Jinja syntax" in message and "truncate(20)" in message


def test_unknown_filter_is_a_start_up_error():
    message = _problems({"*": {"templates": {"call.ring": {"title": "{{ user.name | shout }}"}}}})
    assert message.startswith('call_types."*".templates."call.ring".title: ')
    assert "shout" in message


def test_runtime_failure_on_the_sample_is_a_start_up_error():
    message = _problems({"default": {"templates": {"call.ring": {"title": "{{ 1 / 0 }}"}}}})
    assert 'call_types.default.templates."call.ring".title: fails on a sample' in message
    assert "ZeroDivisionError" in message


def test_unknown_event_type_key():
    message = _problems({"default": {"templates": {"call.rnig": {"title": "x"}}}})
    assert message.startswith('call_types.default.templates."call.rnig": unknown event type')
    assert "call.ring" in message


def test_unknown_disabled_event():
    message = _problems({"video-2": {"disabled_events": ["call.accepted"]}})
    assert message.startswith("call_types.video-2.disabled_events: unknown event type")


def test_every_problem_is_reported_at_once():
    with pytest.raises(TemplateConfigError) as caught:
        _book(
            {
                "a": {"templates": {"call.ring": {"title": "{{"}, "call.x": {"title": "x"}}},
                "b": {"templates": {"call.missed": {"title": "ok", "body": "{{ }"}}},
            }
        )
    assert len(caught.value.problems) == 3


# --- the sandbox ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ user.__class__ }}",
        "{{ user['__class__'] }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ user.custom.__init__.__globals__ }}",
        "{% include 'x' %}",
    ],
)
def test_private_attributes_are_refused_at_start_up(template):
    message = _problems({"*": {"templates": {"call.ring": {"title": template}}}})
    assert message.startswith('call_types."*".templates."call.ring".title: ')


@pytest.mark.parametrize(
    "template",
    [
        "{{ user | attr('__class__') }}",
        "{% set n = '__cla' ~ 'ss__' %}{{ user[n] }}",
        "{{ (user | attr('__class__')) ~ (call | attr('__dict__')) }}",
    ],
)
def test_dynamic_private_access_renders_nothing(template):
    book = _book({"*": {"templates": {"call.ring": {"title": template}}}})
    title = book.render(_event(), "bob").title
    assert title == ""


@pytest.mark.parametrize(
    "template",
    ["{{ call.custom.clear() }}", "{{ user.custom.update({'a': 1}) }}", "{{ call.pop('id') }}"],
)
def test_templates_cannot_mutate_the_event(template):
    # ImmutableSandboxedEnvironment: the event dict is shared by every receiver of a fan-out.
    message = _problems({"*": {"templates": {"call.ring": {"title": template}}}})
    assert "SecurityError" in message


def test_a_runtime_failure_falls_back_to_the_default(caplog):
    # Passes the start-up trial (the sample call has no custom.n) only with the guard; without
    # it, a call whose custom.n is a string fails at run time and must not abort the fan-out.
    template = "{{ (call.custom.n or 0) + 1 }} people"
    book = _book({"*": {"templates": {"call.ring": {"title": template}}}})
    body = sample_events.ring_event("alice", ["bob"])
    body["call"]["custom"] = {"n": "three"}
    with caplog.at_level(logging.WARNING, logger="callpush.templates"):
        text = book.render(parse_call_event(body), "bob")
        book.render(parse_call_event(body), "carol")
    assert text == RenderedText("Alice is calling you", "")
    warnings = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(warnings) == 1 and "call.ring" in warnings[0].getMessage()


# --- enabled() ------------------------------------------------------------------------------


def test_enabled():
    book = _book(
        {
            "*": {"disabled_events": ["call.session_started"]},
            "livestream": {"disabled_events": ["call.missed"]},
        }
    )
    assert not book.enabled("default", "call.session_started")
    assert not book.enabled("livestream", "call.session_started")
    assert not book.enabled("livestream", "call.missed")
    assert book.enabled("default", "call.missed")
    assert book.enabled("default", "call.ring")
    assert TemplateBook.defaults().enabled("default", "call.session_started")


# --- byte caps ------------------------------------------------------------------------------


def _assert_capped(text: str, cap: int) -> None:
    raw = text.encode("utf-8")  # strict: raises on a lone surrogate
    assert raw.decode("utf-8") == text
    assert len(raw) <= cap
    assert json_utf8_length(text) <= cap
    assert len(json.dumps(text, ensure_ascii=False).encode()) - 2 <= cap


@pytest.mark.parametrize(
    ("unit", "unit_bytes"),
    [("a", 1), ("é", 2), ("語", 3), ("😀", 4), ("👩\u200d💻", 11)],
)
def test_caps_cut_on_a_character_boundary(unit, unit_bytes):
    assert len(unit.encode()) == unit_bytes
    for cap in (TITLE_MAX_BYTES, BODY_MAX_BYTES):
        capped = cap_utf8(unit * 2000, cap)
        _assert_capped(capped, cap)
        assert capped.endswith("…")
        stem = capped[:-1].rstrip("\u200d")
        # Whole characters only, and nearly all of the budget used.
        assert set(stem) <= set(unit)
        assert len(capped.encode()) > cap - 3 - unit_bytes - 3


def test_text_within_the_cap_is_untouched():
    text = "語" * (TITLE_MAX_BYTES // 3)  # 255 bytes
    assert cap_utf8(text, TITLE_MAX_BYTES) == text


def test_exactly_at_the_cap_is_untouched():
    assert cap_utf8("a" * 256, 256) == "a" * 256
    assert cap_utf8("a" * 257, 256) == "a" * 253 + "…"
    assert cap_utf8("abcd", 2) == "ab"  # no room for "…"


def test_json_escapes_count_against_the_cap():
    capped = cap_utf8('"' * 1000, 256)
    assert capped == '"' * 126 + "…"
    _assert_capped(capped, 256)


def test_control_characters_and_surrogates_are_cleaned():
    assert cap_utf8("a\x00b\x1bc\r\nd\re\tf\x85", 256) == "abc\nd\ne\tf"
    assert cap_utf8("x\ud800y", 256) == "x\ufffdy"
    assert cap_utf8("\ud83d\ude00", 256) == "😀"  # a pair held as two code points


def test_render_caps_title_and_body():
    name = "語😀" * 2000
    book = _book(
        {"*": {"templates": {"call.ring": {"title": "{{ user.name }}", "body": "{{ user.name }}"}}}}
    )
    body = sample_events.ring_event("alice", ["bob"])
    body["user"]["name"] = name
    text = book.render(parse_call_event(body), "bob")
    _assert_capped(text.title, TITLE_MAX_BYTES)
    _assert_capped(text.body, BODY_MAX_BYTES)
    assert text.title.endswith("…") and text.body.endswith("…")


_NAMES = st.text(
    # Every code point, lone surrogates and control characters included: JSON can carry them.
    alphabet=st.characters(codec=None, exclude_categories=()),
    max_size=5000,
)
_EVERYWHERE = {
    "*": {
        "templates": {
            event_type: {
                "title": "{{ user.display_name }} {{ call.display_name }}",
                "body": (
                    "{{ user.display_name }}\n{{ call.display_name }}\n"
                    "{{ receiver.display_name }} {{ user.name | truncate(4000) }}"
                ),
            }
            for event_type in PUSH_EVENT_TYPES
        }
    }
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_NAMES, event_type=st.sampled_from(sorted(PUSH_EVENT_TYPES)))
def test_any_display_name_renders_within_the_caps(name, event_type):
    body = sample_events.ring_event("alice", ["bob"], display_name=name)
    body["user"]["name"] = name
    event = parse_call_event({**body, "type": event_type})
    for book in (TemplateBook.defaults(), _CUSTOM_BOOK):
        text = book.render(event, "bob", name)
        _assert_capped(text.title, TITLE_MAX_BYTES)
        _assert_capped(text.body, BODY_MAX_BYTES)


_CUSTOM_BOOK = _book(_EVERYWHERE)
