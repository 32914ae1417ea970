"""Push title/body templates: Stream's ``notification_settings`` wording, rendered by us.

Stream renders a call type's ``notification_settings`` templates with ``{{ user.display_name }}``
and ``{{ call.display_name }}`` (stream-protocol.md §4.1) and puts the text in ``aps.alert`` and in
the iOS ``stream`` dict as ``title``/``body`` (§3.1, §3.6).  We send the pushes ourselves, so we
render the same variables here, configured per call type in ``Settings.call_types``:

* lookup order: ``call_types[<call type>].templates[<event>]`` → ``call_types."*".templates[...]``
  → :data:`DEFAULT_TEMPLATES`; an override is a whole template (an omitted ``body`` is "");
* the engine is Jinja2's immutable sandbox (Stream's engine looks Handlebars-like, §4.1, but the
  ``{{ a.b }}`` variables it documents are the same in Jinja; Handlebars helpers such as
  ``{{ truncate x 20 }}`` are written ``{{ x | truncate(20) }}`` here);
* every configured template is compiled *and* trial-rendered by :meth:`TemplateBook.from_settings`,
  so a bad template is a start-up error naming the setting, never an exception mid-fan-out;
  a template that still fails at run time on unusual data falls back to the default wording;
* the rendered text is capped in bytes so every payload stays within APNs' and FCM's limits.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from functools import cache
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from worker.foundation.settings import CallTypeSettings, Settings
from worker.stream import samples as sample_events
from worker.stream.events import (
    LIVE_STARTED,
    MISSED,
    NOTIFICATION,
    RING,
    SESSION_STARTED,
    CallEvent,
    parse_call_event,
    user_display_name,
)

log = logging.getLogger("callpush.templates")

ALL_CALL_TYPES = "*"  # [call_types."*"] applies to every call type (worker/foundation/settings.py)

# The event types Stream sends call pushes for, i.e. the five ``notification_settings`` entries
# (stream-protocol.md §3.1 ``type``, §4.1 call_ring … session_started).
PUSH_EVENT_TYPES = frozenset({RING, NOTIFICATION, MISSED, SESSION_STARTED, LIVE_STARTED})

# Byte budgets for the rendered text.  Both strings appear twice in an iOS payload (``aps.alert``
# and the ``stream`` dict, §3.6): 2 x (256 + 1024) = 2560 bytes, leaving > 1.5 KB of the 4096-byte
# alert limit (5120 for VoIP) and of FCM's 4096-byte data limit for the other keys.  Counted as
# the text is serialised in the JSON payload (see :func:`json_utf8_length`), which is never less
# than its plain UTF-8 length.
TITLE_MAX_BYTES = 256
BODY_MAX_BYTES = 1024
ELLIPSIS = "\u2026"  # "…", 3 bytes of UTF-8


@dataclass(frozen=True, slots=True)
class DefaultTemplate:
    """One built-in template, with where its wording comes from."""

    title: str
    body: str
    source: str


# The built-in wording.  Stream documents no defaults, only examples (§3.6, §4.1); these follow
# them, and add an ``or`` fallback where a variable can be empty: ``user`` is absent from
# session_started / live_started (§2.2, we then use the call's creator) and a call has a display
# name only when its custom data names it (§3.1).
DEFAULT_TEMPLATES: Mapping[str, DefaultTemplate] = {
    RING: DefaultTemplate(
        title="{{ user.display_name or 'Someone' }} is calling you",
        body="",
        source="§3.6 iOS VoIP example: title 'Alice is calling you', body ''",
    ),
    NOTIFICATION: DefaultTemplate(
        title="{{ user.display_name or 'Someone' }} invites you to a call",
        body="{{ call.display_name }}",
        source="§4.1 [OLDDOCS] '{{ user.display_name }} invites you to a call'; "
        "body: the call's name, '' when it has none",
    ),
    MISSED: DefaultTemplate(
        title="Missed call",
        body="You missed a call from {{ user.display_name or 'someone' }}",
        source="§3.6 missed-call example, verbatim: 'Missed call' / "
        "'You missed a call from John Doe'",
    ),
    SESSION_STARTED: DefaultTemplate(
        title="{{ call.display_name or 'A call you are a member of' }} has started",
        body="",
        source="§4.1 live_started example '{{ call.display_name }} started'; DERIVED fallback",
    ),
    LIVE_STARTED: DefaultTemplate(
        title="{{ call.display_name or user.display_name or 'A livestream' }} is live",
        body="",
        source="§4.1 '{{ call.display_name }} started'; DERIVED: falls back to the host's name",
    ),
}


class TemplateConfigError(ValueError):
    """One or more configured templates cannot be used; each problem names its setting."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class RenderedText:
    title: str
    body: str


# --------------------------------------------------------------------------------------------
# Byte caps


# C0/C1 control characters other than newline and tab: invisible in a notification, and JSON
# escapes each C0 one as \u00XX (6 bytes for 1), which would defeat the byte budget.
_CONTROL_CHARS = {c: None for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if c not in (9, 10)}


def clean_text(text: str) -> str:
    """Text that is valid UTF-8 and cheap in JSON: lone surrogates become U+FFFD (``json.loads``
    accepts ``"\\ud800"``, but encoding it, as aioapns does, raises), CR/CRLF become LF, other
    control characters go, and surrounding whitespace is trimmed."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16 so that a surrogate *pair* held as two code points becomes one character.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_CONTROL_CHARS).strip()


def _json_char_bytes(char: str) -> int:
    # json.dumps(..., ensure_ascii=False), as aioapns and worker/push/fcm.py serialise payloads.
    if char in '"\\\n\t':
        return 2
    return len(char.encode("utf-8"))


def json_utf8_length(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string, as UTF-8 (after :func:`clean_text`)."""
    return len(text.encode("utf-8")) + sum(text.count(c) for c in '"\\\n\t')


def cap_utf8(text: str, max_bytes: int) -> str:
    """:func:`clean_text`, then cut to at most ``max_bytes`` (UTF-8, counted as serialised in
    JSON) on a character boundary, ending in "…" when cut."""
    text = clean_text(text)
    if json_utf8_length(text) <= max_bytes:
        return text
    ellipsis = ELLIPSIS if max_bytes >= len(ELLIPSIS.encode("utf-8")) else ""
    budget = max_bytes - len(ellipsis.encode("utf-8"))
    used = 0
    end = 0
    for index, char in enumerate(text):
        used += _json_char_bytes(char)
        if used > budget:
            break
        end = index + 1
    # A cut right after a zero-width joiner would leave half an emoji sequence dangling.
    return text[:end].rstrip().rstrip("\u200d") + ellipsis


# --------------------------------------------------------------------------------------------
# The template context


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _user_vars(user: Mapping[str, Any], display_name: str) -> dict[str, Any]:
    # Every field Stream sends (UserResponse, §2.3) stays readable; the documented ones are
    # normalised so a template never sees None or a non-mapping ``custom``.
    return {
        **user,
        "id": _text(user.get("id")),
        "name": _text(user.get("name")),
        "display_name": display_name,
        "image": _text(user.get("image")),
        "custom": _mapping(user.get("custom")),
    }


def receiver_vars(receiver_id: str, receiver_name: str) -> dict[str, str]:
    return {
        "id": receiver_id,
        "name": receiver_name,
        "display_name": receiver_name.strip() or receiver_id,
    }


def template_context(event: CallEvent, receiver_id: str, receiver_name: str = "") -> dict[str, Any]:
    """The variables a template sees.

    * ``user``: the event's user (the caller / sender, §2.2), or, for events that carry none
      (session_started, live_started), the call's creator.  ``display_name`` is Stream's
      "always populated" name: the name, else the id (§3.1).
    * ``call``: the event's call object (§2.3) plus ``display_name`` (first of custom.display_name
      / name / title, else "", §3.1); ``created_by`` has a ``display_name`` too.
    * ``receiver``: ``id``, ``name`` and ``display_name`` (the name, else the id).
    * ``event``: ``type``, ``created_at`` (RFC 3339, UTC, "" if unknown), ``call_cid``, ``video``.

    Anything missing renders as "" (ChainableUndefined), as Handlebars-style engines print it;
    Stream's engine looks like one (§4.1) and documents no variable list, so an operator's
    template may name fields an event lacks.
    """
    raw = event.raw
    call = _mapping(raw.get("call"))
    created_by = _mapping(call.get("created_by"))
    user = _mapping(raw.get("user"))
    if user:
        actor = _user_vars(user, event.actor_name or user_display_name(user))
    else:
        actor = _user_vars(created_by, event.created_by_name)
    call_type, _, call_id = event.call_cid.partition(":")
    created_at = event.created_at
    return {
        "user": actor,
        "call": {
            **call,
            "id": _text(call.get("id")) or call_id,
            "type": _text(call.get("type")) or call_type,
            "cid": event.call_cid,
            "display_name": event.call_name,
            "custom": _mapping(call.get("custom")),
            "created_by": _user_vars(
                {**created_by, "id": event.created_by_id}, event.created_by_name
            ),
        },
        "receiver": receiver_vars(receiver_id, receiver_name),
        "event": {
            "type": event.type,
            "created_at": (
                created_at.astimezone(UTC).isoformat().replace("+00:00", "Z") if created_at else ""
            ),
            "call_cid": event.call_cid,
            "video": event.video,
        },
    }


# --------------------------------------------------------------------------------------------
# Compiling


def _finalize(value: Any) -> Any:
    # What ``{{ x }}`` prints: "" for null (Stream-like, and never "None"), JSON spelling for
    # booleans and objects rather than Python's repr.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    # The immutable sandbox: no underscore attributes, no unsafe callables, and no mutating calls
    # such as ``{{ call.custom.clear() }}`` on the event dict shared by every receiver.
    env = ImmutableSandboxedEnvironment(
        autoescape=False,  # push text is not HTML
        undefined=ChainableUndefined,  # {{ a.b.c }} with a missing "a" renders "", no error
        finalize=_finalize,
    )
    # Jinja's truncate keeps strings up to 5 characters over the length by default; an operator
    # writing truncate(40) means 40.
    env.policies["truncate.leeway"] = 0
    return env


@dataclass(frozen=True, slots=True)
class _Compiled:
    setting: str  # e.g. call_types.default.templates."call.ring".title
    template: Template


@dataclass(frozen=True, slots=True)
class _Pair:
    title: _Compiled
    body: _Compiled


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Stream Chat's Handlebars helpers (§4.1: {{ truncate message.text 2000 }}) and block tags.
_HANDLEBARS = re.compile(r"\{\{\s*(?:[#/]|truncate\s+[^\s|(])")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _setting(call_type: str, event_type: str, field: str | None = None) -> str:
    path = f"call_types.{_toml_key(call_type)}.templates.{_toml_key(event_type)}"
    return f"{path}.{field}" if field else path


def _compile(source: str, setting: str, problems: list[str]) -> _Compiled | None:
    env = _environment()
    try:
        tree = env.parse(source)
        unsafe = _unsafe_constructs(tree)
        if unsafe:
            problems.append(f"{setting}: {unsafe}")
            return None
        return _Compiled(setting, env.from_string(tree))
    except TemplateSyntaxError as error:
        message = error.message or str(error)
        if "\n" in source.strip() and error.lineno:
            message += f" (line {error.lineno})"
        if _HANDLEBARS.search(source):
            message += (
                " (templates use Jinja syntax: {{ x | truncate(20) }}, not Handlebars helpers)"
            )
        problems.append(f"{setting}: {message}")
        return None


def _unsafe_constructs(tree: nodes.Template) -> str | None:
    # The sandbox already renders {{ user.__class__ }} as "" at run time; refusing it here tells
    # the operator instead of silently dropping text.
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        if isinstance(name, str) and name.startswith("_"):
            return f"access to {name!r} is not allowed (names starting with '_' are private)"
    loaders = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
    if next(tree.find_all(loaders), None) is not None:
        return "extends/include/import are not supported: a template is one string"
    return None


@cache
def sample_push_events() -> dict[str, CallEvent]:
    """One event per push type with every documented field set, for the trial renders (here at
    start-up, and of Stream's templates when they are fetched:
    worker/delivery/handlebars_templates.py)."""
    body = sample_events.ring_event("alice", ["bob"], display_name="Team sync")
    return {
        event_type: parse_call_event({**body, "type": event_type})
        for event_type in PUSH_EVENT_TYPES
    }


# --------------------------------------------------------------------------------------------
# The book


class TemplateBook:
    """Every push template, compiled once at start-up; rendering never raises for a push event."""

    def __init__(
        self,
        by_call_type: Mapping[str, Mapping[str, _Pair]],
        fallback: Mapping[str, _Pair],
        defaults: Mapping[str, _Pair],
        disabled: Mapping[str, frozenset[str]],
    ) -> None:
        # Use from_settings() or defaults(); the constructor takes already-resolved tables.
        self._by_call_type = by_call_type
        self._fallback = fallback
        self._defaults = defaults
        self._disabled = disabled
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def defaults(cls) -> TemplateBook:
        """Stream-like wording for every call type and nothing disabled."""
        return cls.from_call_types({})

    @classmethod
    def from_settings(cls, settings: Settings) -> TemplateBook:
        """Compile ``settings.call_types``; raise :class:`TemplateConfigError` listing every
        problem (syntax, unknown event type, a template that fails on a sample event)."""
        return cls.from_call_types(settings.call_types)

    @classmethod
    def from_call_types(cls, call_types: Mapping[str, CallTypeSettings]) -> TemplateBook:
        problems: list[str] = []
        defaults = _compile_defaults()

        for call_type, config in call_types.items():
            for event_type in config.templates:
                if event_type not in PUSH_EVENT_TYPES:
                    problems.append(
                        f"{_setting(call_type, event_type)}: unknown event type; "
                        f"valid: {', '.join(sorted(PUSH_EVENT_TYPES))}"
                    )
            for event_type in config.disabled_events:
                if event_type not in PUSH_EVENT_TYPES:
                    problems.append(
                        f"call_types.{_toml_key(call_type)}.disabled_events: unknown event type "
                        f"{event_type!r}; valid: {', '.join(sorted(PUSH_EVENT_TYPES))}"
                    )

        # Compile each configured (call type, event) once.  An override replaces the whole
        # template: an omitted body is "" (PushTemplate.body's default), not inherited.
        configured: dict[tuple[str, str], _Pair] = {}
        samples = sample_push_events()
        for call_type, config in call_types.items():
            for event_type, template in config.templates.items():
                if event_type not in PUSH_EVENT_TYPES:
                    continue
                title = _compile(template.title, _setting(call_type, event_type, "title"), problems)
                body = _compile(template.body, _setting(call_type, event_type, "body"), problems)
                for compiled in (title, body):
                    if compiled is not None:
                        _trial_render(compiled, samples[event_type], problems)
                if title is not None and body is not None:
                    configured[(call_type, event_type)] = _Pair(title, body)
        if problems:
            raise TemplateConfigError(problems)

        def resolve(levels: Sequence[str], event_type: str) -> _Pair:
            for level in levels:
                pair = configured.get((level, event_type))
                if pair is not None:
                    return pair
            return defaults[event_type]

        fallback = {ev: resolve([ALL_CALL_TYPES], ev) for ev in PUSH_EVENT_TYPES}
        by_call_type = {
            call_type: {ev: resolve([call_type, ALL_CALL_TYPES], ev) for ev in PUSH_EVENT_TYPES}
            for call_type in call_types
            if call_type != ALL_CALL_TYPES
        }
        disabled = {
            call_type: frozenset(config.disabled_events)
            for call_type, config in call_types.items()
            if config.disabled_events
        }
        return cls(by_call_type, fallback, defaults, disabled)

    def enabled(self, call_type: str, event_type: str) -> bool:
        """False when ``call_types.<call_type>`` or ``call_types."*"`` disables the event."""
        for key in (call_type, ALL_CALL_TYPES):
            if event_type in self._disabled.get(key, ()):
                return False
        return True

    def render(self, event: CallEvent, receiver_id: str, receiver_name: str = "") -> RenderedText:
        """Title and body for one receiver, cleaned and capped to TITLE_/BODY_MAX_BYTES.

        Raises ValueError only for an event type that has no push (a caller's bug)."""
        pair = self._by_call_type.get(event.call_type, self._fallback).get(event.type)
        if pair is None:
            raise ValueError(f"no push template for event type {event.type!r}")
        context = template_context(event, receiver_id, receiver_name)
        default = self._defaults[event.type]
        title = self._render_one(pair.title, default.title, context)
        body = self._render_one(pair.body, default.body, context)
        return RenderedText(cap_utf8(title, TITLE_MAX_BYTES), cap_utf8(body, BODY_MAX_BYTES))

    def _render_one(self, compiled: _Compiled, default: _Compiled, context: dict[str, Any]) -> str:
        try:
            return compiled.template.render(context)
        except Exception as error:
            # Passed the start-up trial, failed on this event's data (e.g. arithmetic on a custom
            # field this call lacks).  A push with the default wording beats no push.
            key = (compiled.setting, type(error).__name__)
            if key not in self._warned:
                self._warned.add(key)
                log.warning(
                    "%s failed (%s: %s); using the default wording",
                    compiled.setting,
                    type(error).__name__,
                    error,
                )
        if default is compiled:
            return ""
        try:
            return default.template.render(context)
        except Exception:  # pragma: no cover - the defaults are tested on every event type
            log.exception("default template %s failed", default.setting)
            return ""


def _compile_defaults() -> dict[str, _Pair]:
    problems: list[str] = []
    pairs = {}
    for event_type, text in DEFAULT_TEMPLATES.items():
        title = _compile(text.title, f"defaults.{_toml_key(event_type)}.title", problems)
        body = _compile(text.body, f"defaults.{_toml_key(event_type)}.body", problems)
        if title is not None and body is not None:
            pairs[event_type] = _Pair(title, body)
    if problems:  # pragma: no cover - a bug in this module, caught by its tests
        raise TemplateConfigError(problems)
    return pairs


def _trial_render(compiled: _Compiled, event: CallEvent, problems: list[str]) -> None:
    # Catches what compiling cannot: {{ 1 / 0 }}, {{ user.name + 1 }}, blocked calls, … .  A
    # template that only fails without some custom data should guard it: {{ x | default(0) }}.
    try:
        compiled.template.render(template_context(event, "bob", "Bob"))
    except Exception as error:
        problems.append(
            f"{compiled.setting}: fails on a sample {event.type} event "
            f"({type(error).__name__}: {error})"
        )


@cache
def default_book() -> TemplateBook:
    """The built-in wording, for callers without settings (tests, ``callpush simulate``)."""
    return TemplateBook.defaults()
