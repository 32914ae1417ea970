"""Stream's call-type push settings, for apps with ``push_settings_source = "stream"``.

Webhooks do not carry a call type's ``notification_settings``: which events notify and the
``apns.title`` / ``apns.body`` templates a team set in Stream's dashboard
(https://getstream.io/video/docs/ios/call_types/settings).  For an app that asks for them, they
are read from Stream's API (``GET /api/v2/video/calltypes``, and ``…/calltypes/{name}`` for a
call type first seen in a webhook) by a background thread per app and process, and a push only
ever reads the copy in memory:

* at start-up every call type is fetched, so the copy is warm before the first ring;
* a call type not in the copy yet gets the local settings for that push, and is fetched in the
  background; one Stream does not have (404) keeps the local settings;
* the copy is refreshed every ``push_settings.refresh_seconds``; a failed refresh keeps the last
  good copy (logged, and counted in ``callpush_stream_call_type_fetches{result="failed"}``) and
  is tried again after ``push_settings.retry_seconds``.

What is followed: each event's ``enabled`` flag (``false`` = no push, the event is stored
``ignored``) and its templates.  The call type's master switch ``notification_settings.enabled``
is NOT followed: it is what stops Stream's own pushes while callpush sends them (README,
"Pointing Stream at callpush"), so it cannot also mean "callpush, send nothing".  The local
``[call_types]`` settings still apply underneath: their ``disabled_events`` switch events off
too, and their templates are used where Stream's are missing or unusable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from worker.delivery.handlebars_templates import StreamTemplate, compile_stream_template
from worker.delivery.templates import RenderedText, TemplateBook
from worker.foundation import metrics
from worker.stream.api import CallTypePushSettings, StreamApi, StreamApiError
from worker.stream.events import CallEvent

log = logging.getLogger("callpush.call_type_settings")

SWITCHED_OFF_IN_STREAM = "switched off in Stream's call type settings"
# Call types asked for but not fetched yet, at most: the names come from signed webhooks, but
# a flood of made-up ones must not grow memory or the queue of fetches without bound.
MAX_PENDING = 100
MAX_CALL_TYPES = 1000
# Call types refreshed one by one per cycle when Stream refuses the list (not when it is down).
MAX_ONE_BY_ONE = 50
CLOSE_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CallTypeEntry:
    """What the pushes of one call type follow, as last fetched."""

    name: str
    in_stream: bool  # False: Stream answered 404, the local settings apply
    master_enabled: bool = True  # reported only (see the module docstring)
    switched_off: frozenset[str] = frozenset()  # event types whose ``enabled`` is false
    templates: Mapping[str, StreamTemplate] = field(default_factory=dict)  # usable ones only


def switched_off(
    book: TemplateBook, cache: CallTypeSettingsCache | None, event: CallEvent
) -> str | None:
    """Why this event sends no push, or None when it does."""
    if cache is not None:
        entry = cache.get(event.call_type)
        if entry is not None and event.type in entry.switched_off:
            return SWITCHED_OFF_IN_STREAM
    if not book.enabled(event.call_type, event.type):
        return f"{event.type} switched off for call type {event.call_type}"
    return None


def push_text(
    book: TemplateBook,
    cache: CallTypeSettingsCache | None,
    event: CallEvent,
    receiver_id: str,
    receiver_name: str = "",
) -> RenderedText:
    """The title and body for one receiver: Stream's template when there is a usable one, else
    the local one.  Never raises for a push event."""
    if cache is not None:
        entry = cache.get(event.call_type)
        template = entry.templates.get(event.type) if entry is not None else None
        if template is not None:
            try:
                return template.render(event, receiver_id, receiver_name)
            except Exception as error:
                cache.note_render_failure(event.call_type, event.type, error)
    return book.render(event, receiver_id, receiver_name)


class CallTypeSettingsCache:
    """One app's call types, fetched and refreshed by a background thread (:meth:`start`)."""

    def __init__(
        self,
        api: StreamApi,
        *,
        refresh_seconds: float,
        retry_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._refresh_seconds = refresh_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        # Replaced whole by the refresher (copy on write): reading a known call type takes no lock.
        self._entries: dict[str, CallTypeEntry] = {}
        self._last_success: float | None = None
        self._pending: set[str] = set()
        self._not_before: dict[str, float] = {}  # call type -> no fetch before (after a failure)
        self._wake = threading.Condition()
        self._stopping = False
        self._warm = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[tuple[str, ...]] = set()

    @property
    def app(self) -> str:
        return self._api.api_key

    def start(self) -> None:
        """Start the refresher; its first act is fetching every call type."""
        with self._wake:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"call-type-settings-{self.app}", daemon=True
            )
            self._thread.start()

    def get(self, call_type: str) -> CallTypeEntry | None:
        """The call type's settings as last fetched, or None when none were (a fetch is then
        scheduled).  Never waits for Stream."""
        entry = self._entries.get(call_type)
        if entry is None:
            with self._wake:  # held for a set insertion, never across I/O
                if (
                    call_type not in self._pending
                    and len(self._pending) < MAX_PENDING
                    and self._clock() >= self._not_before.get(call_type, 0.0)
                ):
                    self._pending.add(call_type)
                    self._wake.notify()
        return entry

    def entries(self) -> dict[str, CallTypeEntry]:
        return dict(self._entries)

    def wait_warm(self, timeout: float) -> bool:
        """Wait (bounded) for the first fetch of every call type to end, well or not."""
        return self._warm.wait(timeout)

    def note_render_failure(self, call_type: str, event_type: str, error: Exception) -> None:
        self._warn_once(
            ("render", call_type, event_type, type(error).__name__),
            "app %s, call type %r, %s: Stream's template failed (%s: %s); using the local one",
            self.app,
            call_type,
            event_type,
            type(error).__name__,
            error,
        )

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_SECONDS)

    # ----------------------------------------------------------------------------------------
    # The refresher thread

    def _run(self) -> None:
        next_full = self._clock()
        while True:
            with self._wake:
                while not self._stopping and not self._pending and self._clock() < next_full:
                    self._wake.wait(max(0.0, next_full - self._clock()))
                if self._stopping:
                    return
                wanted = sorted(self._pending)
                self._pending.clear()
            try:
                if self._clock() >= next_full:
                    error = self._refresh_all()
                    if error is not None and not error.retryable:
                        # The list is refused (not an outage): keep the call types known so
                        # far fresh one by one.
                        for name in sorted(self._entries)[:MAX_ONE_BY_ONE]:
                            if not self._stopping:
                                self._refresh_one(name)
                    next_full = self._clock() + (
                        self._refresh_seconds
                        if error is None
                        else min(self._retry_seconds, self._refresh_seconds)
                    )
                    self._warm.set()
                for name in wanted:
                    if name not in self._entries and not self._stopping:
                        self._refresh_one(name)
            except Exception:  # a bug here must not end the refreshes for the process's life
                log.exception("app %s: refreshing Stream's call type settings failed", self.app)
                next_full = self._clock() + self._retry_seconds
                self._warm.set()

    def _refresh_all(self) -> StreamApiError | None:
        try:
            fetched = self._api.list_call_type_push_settings()
        except StreamApiError as error:
            self._fetch_failed("every call type", error)
            return error
        metrics.record_call_type_fetch("ok")
        entries = {name: self._entry(settings) for name, settings in fetched.items()}
        entries = dict(list(entries.items())[:MAX_CALL_TYPES])
        # A call type we knew that Stream no longer lists was deleted there: local settings.
        for name in self._entries.keys() - entries.keys():
            entries[name] = CallTypeEntry(name, in_stream=False)
        self._entries = entries
        self._last_success = self._clock()
        with self._wake:
            self._not_before.clear()  # Stream answers again: no name waits out a backoff
        log.info("app %s: Stream's push settings of %d call types fetched", self.app, len(fetched))
        return None

    def _refresh_one(self, name: str) -> None:
        try:
            entry = self._entry(self._api.call_type_push_settings(name))
        except StreamApiError as error:
            if error.status != 404:
                self._fetch_failed(f"call type {name!r}", error)
                with self._wake:
                    self._not_before[name] = self._clock() + self._retry_seconds
                return
            metrics.record_call_type_fetch("not_found")
            log.info(
                "app %s: call type %r is not in Stream; its pushes use the local settings",
                self.app,
                name,
            )
            entry = CallTypeEntry(name, in_stream=False)
        else:
            metrics.record_call_type_fetch("ok")
        if name in self._entries or len(self._entries) < MAX_CALL_TYPES:
            self._entries = {**self._entries, name: entry}

    def _fetch_failed(self, what: str, error: StreamApiError) -> None:
        metrics.record_call_type_fetch("failed")
        if self._last_success is None:
            kept = "none fetched yet: the local settings apply"
        else:
            age = self._clock() - self._last_success
            kept = f"keeping the copy fetched {age:.0f} s ago"
        log.warning(
            "app %s: Stream's push settings (%s) not refreshed (%s); %s",
            self.app,
            what,
            error,
            kept,
        )

    def _entry(self, settings: CallTypePushSettings) -> CallTypeEntry:
        templates: dict[str, StreamTemplate] = {}
        for event_type, event in settings.events.items():
            if not event.title.strip():
                continue  # no wording in Stream: the local template
            try:
                templates[event_type] = compile_stream_template(event.title, event.body, event_type)
            except ValueError as problem:
                self._warn_once(
                    ("compile", settings.name, event_type, event.title, event.body),
                    "app %s, call type %r, %s: Stream's template is not used (%s); "
                    "the local one is",
                    self.app,
                    settings.name,
                    event_type,
                    problem,
                )
        return CallTypeEntry(
            settings.name,
            in_stream=True,
            master_enabled=settings.enabled,
            switched_off=frozenset(e for e, s in settings.events.items() if not s.enabled),
            templates=templates,
        )

    def _warn_once(self, key: tuple[str, ...], message: str, *args: object) -> None:
        # Refreshes recompile every few minutes, and a render failure repeats per receiver:
        # one line per distinct problem.
        if key in self._warned:
            return
        if len(self._warned) < 10_000:
            self._warned.add(key)
        log.warning(message, *args)
