"""Stream's own push templates (a call type's ``notification_settings``), rendered by us.

Stream renders ``apns.title`` / ``apns.body`` with Handlebars ("the payload that is being sent is
rendered using the handlebars templating language", https://getstream.io/chat/docs/push_template/)
and documents ``{{ user.display_name }}`` and ``{{ call.display_name }}`` for video
(https://getstream.io/video/docs/ios/call_types/settings).  So a template copied from Stream's
dashboard is rendered here as Handlebars, not Jinja, with:

* the variables of the local templates (:func:`worker.delivery.templates.template_context`:
``user``,
  ``call``, ``receiver``, ``event``) plus ``members`` (the call's members but the sender) and
  ``otherMembers`` (also without the receiver), as Stream's chat templates have them;
* the helpers Stream documents for its push templates (same page): ``truncate``, ``json``,
  ``equal``, ``unequal``, ``ifLt``, ``ifLte``, ``ifGt``, ``ifGte``, ``remainder`` and
  ``implodeMembers``, next to Handlebars' own ``if`` / ``unless`` / ``each`` / ``with``;
* no HTML escaping: push text is not HTML, and "Tom & Jerry" must not arrive as
  "Tom &amp; Jerry" (``{{{ x }}}`` works too and means the same);
* bounds, because the text is rendered once per receiver on the send path: a template is at
  most :data:`MAX_SOURCE_CHARS` long, nests at most :data:`MAX_DEPTH` blocks, has no loop inside
  a loop, and iterates lists of at most :data:`MAX_LIST_ITEMS`.

A template that does not compile, or fails on a sample event, is refused when it is fetched
(:func:`compile_stream_template` raises ``ValueError``); one that still fails on some event's
data makes :meth:`StreamTemplate.render` raise, and the caller uses the local template.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from dotpromptz_handlebars import (
    Block,
    Handlebars,
    HelperOptions,
    InlinePartial,
    Partial,
    PartialBlock,
    SafeString,
)
from dotpromptz_handlebars import Node as HandlebarsNode

# The parser Handlebars.compile() runs, called on its own to inspect the tree before compiling
# (a private module: the dependency is pinned below 0.3 in pyproject.toml).
from dotpromptz_handlebars._render import compile_template

from worker.delivery.templates import (
    BODY_MAX_BYTES,
    ELLIPSIS,
    TITLE_MAX_BYTES,
    RenderedText,
    cap_utf8,
    receiver_vars,
    sample_push_events,
    template_context,
)
from worker.stream.events import CallEvent

MAX_SOURCE_CHARS = 2000
MAX_DEPTH = 8
MAX_LIST_ITEMS = 100
# Handlebars' block helpers; any other block name is a "section", which repeats over a list.
_BUILTIN_BLOCKS = frozenset({"if", "unless", "with"})
_LOOPS = frozenset({"each"})

Render = Callable[..., str]


@dataclass(frozen=True, slots=True)
class StreamTemplate:
    """One event's title and body from Stream, compiled."""

    title: Render
    body: Render

    def render(self, event: CallEvent, receiver_id: str, receiver_name: str = "") -> RenderedText:
        """The text for one receiver, capped like the local templates'.  Raises on a template
        that fails on this event's data (the caller falls back to the local wording)."""
        context = handlebars_context(event, receiver_id, receiver_name)
        return RenderedText(
            cap_utf8(self.title(context), TITLE_MAX_BYTES),
            cap_utf8(self.body(context), BODY_MAX_BYTES),
        )


def compile_stream_template(title: str, body: str, event_type: str | None = None) -> StreamTemplate:
    """Compile one event's ``apns.title`` / ``apns.body`` and trial-render them on a sample
    event of that type (of every push type when None).  Raises ValueError saying which of the
    two is wrong and why."""
    compiled = StreamTemplate(_compile("title", title), _compile("body", body))
    samples = sample_push_events()
    for name in sorted(samples) if event_type is None else [event_type]:
        event = samples[name]
        for part, render in (("title", compiled.title), ("body", compiled.body)):
            try:
                render(handlebars_context(event, "bob", "Bob"))
            except Exception as error:
                raise ValueError(
                    f"{part}: fails on a sample {event.type} event "
                    f"({type(error).__name__}: {error})"
                ) from None
    return compiled


def _compile(part: str, source: str) -> Render:
    if len(source) > MAX_SOURCE_CHARS:
        raise ValueError(f"{part}: longer than {MAX_SOURCE_CHARS} characters")
    try:
        program = compile_template(source, max_depth=MAX_DEPTH)
    except (ValueError, RecursionError) as error:
        raise ValueError(f"{part}: {error}") from None
    problem = _unsupported(program, in_loop=False)
    if problem:
        raise ValueError(f"{part}: {problem}")
    return _engine().compile(source)


def _unsupported(nodes: Sequence[HandlebarsNode], *, in_loop: bool) -> str | None:
    """What makes a template's cost unbounded: a loop inside a loop, or a partial (which could
    hide one)."""
    for node in nodes:
        if isinstance(node, Partial | PartialBlock | InlinePartial):
            return "partials are not supported"
        if not isinstance(node, Block):
            continue
        name = node.call.get("name")
        # {{#each}} repeats, and so does a "section" ({{#list}}...{{/list}}, a block whose name
        # is no helper) over a list.
        repeats = name in _LOOPS or (name not in _BUILTIN_BLOCKS and name not in _helpers())
        if repeats and in_loop:
            return "a loop inside a loop is not supported"
        problem = _unsupported(node.body, in_loop=in_loop or repeats) or _unsupported(
            node.inverse, in_loop=in_loop
        )
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------------------------
# The context


def _capped(value: Any, depth: int = 0) -> Any:
    """Lists cut to MAX_LIST_ITEMS, at any depth: an ``{{#each}}`` over a client-written custom
    field costs at most that many iterations per receiver."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {k: _capped(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_capped(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
    return value


def handlebars_context(event: CallEvent, receiver_id: str, receiver_name: str) -> dict[str, Any]:
    base = _event_context(event)
    return {
        **base,
        "receiver": receiver_vars(receiver_id, receiver_name),
        "otherMembers": [m for m in base["members"] if m["id"] != receiver_id],
    }


# The event's part of the context, for the last event this thread rendered: a fan-out renders
# one event for every receiver, and copying the event's data (to cap its lists) costs more
# than the rendering.  Held by identity, with a strong reference, so it cannot be mistaken.
_last_event = threading.local()


def _event_context(event: CallEvent) -> dict[str, Any]:
    memo = getattr(_last_event, "memo", None)
    if memo is not None and memo[0] is event:
        return memo[1]
    context: dict[str, Any] = _capped(template_context(event, "", ""))
    sender = context["user"].get("id", "")
    context["members"] = [
        {"id": m.user_id, "name": m.display_name, "display_name": m.display_name or m.user_id}
        for m in event.members[: MAX_LIST_ITEMS + 2]
        if m.user_id != sender
    ][:MAX_LIST_ITEMS]
    _last_event.memo = (event, context)
    return context


# --------------------------------------------------------------------------------------------
# Stream's helpers (https://getstream.io/chat/docs/push_template/, "Helper Functions")


def _arg(args: list[Any], index: int) -> Any:
    return args[index] if index < len(args) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truncate(args: list[Any], options: HelperOptions) -> str:
    """``{{ truncate text 150 }}``: at most that many characters, the last one "…" if cut."""
    text, limit = _as_text(_arg(args, 0)), _number(_arg(args, 1))
    if limit is None or limit < 1 or len(text) <= limit:
        return text
    return text[: int(limit) - 1] + ELLIPSIS


def _json(args: list[Any], options: HelperOptions) -> SafeString:
    return SafeString(json.dumps(_arg(args, 0), ensure_ascii=False, default=str))


def _remainder(args: list[Any], options: HelperOptions) -> int:
    items, count = _arg(args, 0), _number(_arg(args, 1))
    length = len(items) if isinstance(items, list | tuple) else 0
    return max(0, length - int(count or 0))


def _implode_members(args: list[Any], options: HelperOptions) -> str:
    """``{{implodeMembers otherMembers limit=3 separator=", " nameField="name"
    suffixFmt="and %d other(s)"}}`` -> "Ann, Bo, Cy and 2 other(s)"."""
    members = _arg(args, 0)
    if not isinstance(members, list):
        return ""
    limit = _number(options.hash.get("limit"))
    shown = 3 if limit is None else max(0, int(limit))
    separator = _as_text(options.hash.get("separator", ", "))
    field = _as_text(options.hash.get("nameField", "name")) or "name"
    suffix = _as_text(options.hash.get("suffixFmt", "and %d other(s)"))
    names = [
        _as_text(m.get(field)) or _as_text(m.get("id")) for m in members if isinstance(m, Mapping)
    ]
    text = separator.join(names[:shown])
    rest = len(names) - shown
    if rest > 0 and suffix:
        text = f"{text} {suffix.replace('%d', str(rest))}" if text else suffix
    return text


def _block(test: Callable[[Any, Any], bool]) -> Callable[[list[Any], HelperOptions], Any]:
    def helper(args: list[Any], options: HelperOptions) -> Any:
        if not options.is_block:
            return ""
        passed = test(_arg(args, 0), _arg(args, 1))
        return options.fn() if passed else options.inverse()

    return helper


def _compare(check: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def test(left: Any, right: Any) -> bool:
        a, b = _number(left), _number(right)
        return a is not None and b is not None and check(a, b)

    return test


@cache
def _helpers() -> dict[str, Callable[[list[Any], HelperOptions], Any]]:
    return {
        "truncate": _truncate,
        "json": _json,
        "remainder": _remainder,
        "implodeMembers": _implode_members,
        "implodemembers": _implode_members,  # the spelling of the docs' table
        "equal": _block(lambda a, b: _as_text(a) == _as_text(b)),
        "unequal": _block(lambda a, b: _as_text(a) != _as_text(b)),
        "ifLt": _block(_compare(lambda a, b: a < b)),
        "ifLte": _block(_compare(lambda a, b: a <= b)),
        "ifGt": _block(_compare(lambda a, b: a > b)),
        "ifGte": _block(_compare(lambda a, b: a >= b)),
    }


@cache
def _engine() -> Handlebars:
    engine = Handlebars(escape_html=False, max_depth=MAX_DEPTH)
    # Its ``log`` helper prints to stdout; ``lookup`` can index arrays, which Stream does not.
    engine.unregister_helper("log")
    engine.unregister_helper("lookup")
    for name, helper in _helpers().items():
        engine.register_helper(name, helper)
    return engine
