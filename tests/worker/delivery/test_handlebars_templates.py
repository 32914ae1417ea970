"""worker.delivery.handlebars_templates: Stream's call-type templates, in Stream's (Handlebars)
syntax."""

from __future__ import annotations

import time

import pytest

from worker.delivery.handlebars_templates import MAX_LIST_ITEMS, compile_stream_template
from worker.delivery.templates import BODY_MAX_BYTES, TITLE_MAX_BYTES
from worker.stream import samples as sample_events
from worker.stream.events import CallEvent, parse_call_event


def _ring(**changes: object) -> CallEvent:
    body = sample_events.ring_event("alice", ["bob", "carol", "dave"], display_name="Team sync")
    body["user"]["name"] = "Alice"
    return parse_call_event({**body, **changes})


def _render(title: str, body: str = "", event: CallEvent | None = None) -> tuple[str, str]:
    text = compile_stream_template(title, body).render(event or _ring(), "bob", "Bob")
    return text.title, text.body


def test_streams_documented_examples_render_as_stream_words_them() -> None:
    # https://getstream.io/video/docs/ios/call_types/settings
    assert _render("{{ user.display_name }} calls you") == ("Alice calls you", "")
    assert _render("{{ call.display_name }} started") == ("Team sync started", "")
    assert _render("missed call from {{ user.display_name }}") == ("missed call from Alice", "")
    assert _render("{{user.display_name}}", "{{ receiver.display_name }}") == ("Alice", "Bob")


def test_missing_values_print_nothing_and_text_is_not_html_escaped() -> None:
    event = _ring(user={"id": "tom", "name": "Tom & <Jerry> \"'"})
    assert _render(
        "{{ user.display_name }}|{{{ user.display_name }}}|{{ call.nope.deeper }}|", event=event
    ) == (
        "Tom & <Jerry> \"'|Tom & <Jerry> \"'||",
        "",
    )


def test_handlebars_blocks_and_streams_helpers() -> None:
    title, body = _render(
        "{{#if call.display_name}}{{ call.display_name }}{{else}}A call{{/if}}"
        "{{#unless call.missing}} ok{{/unless}}"
        '{{#equal call.type "default"}} D{{else}} X{{/equal}}'
        '{{#unequal call.type "default"}} X{{else}} same{{/unequal}}',
        "{{ truncate call.display_name 5 }}|{{ json call.custom }}|{{remainder members 1}}",
    )
    assert title == "Team sync ok D same"
    # truncate: at most 5 characters, the last "…" when cut; members excludes the sender.
    assert body == 'Team…|{"display_name": "Team sync"}|2'


def test_number_comparisons_and_each_with_data_variables() -> None:
    title, body = _render(
        "{{#ifGt members.length 1}}group{{else}}one{{/ifGt}}"
        "{{#ifLt 1 2}} lt{{/ifLt}}{{#ifLte 2 2}} lte{{/ifLte}}"
        "{{#ifGte 1 2}} no{{else}} gte-no{{/ifGte}}"
        '{{#ifLt "x" 2}} nan{{else}} nan-no{{/ifLt}}',
        "{{#each otherMembers}}{{#if @first}}with {{/if}}"
        "{{ this.name }}{{#unless @last}}, {{/unless}}{{/each}}",
    )
    # ``members.length`` is not a Handlebars thing: missing, so the comparison is false.
    assert title == "one lt lte gte-no nan-no"
    # otherMembers: neither the sender (alice) nor the receiver (bob).
    assert body == "with Carol, Dave"


def test_implode_members_as_stream_documents_it() -> None:
    event = parse_call_event(
        sample_events.ring_event("alice", ["bob", "ann", "bo", "cy", "di", "ed"])
    )
    title, body = _render(
        "{{implodeMembers otherMembers}}",
        '{{implodemembers members limit=2 separator=" / " suffixFmt="+%d"}}',
        event,
    )
    assert title == "Ann, Bo, Cy and 2 other(s)"
    assert body == "Bob / Ann +4"
    assert (
        _render("{{implodeMembers otherMembers limit=10}}", event=event)[0] == "Ann, Bo, Cy, Di, Ed"
    )


@pytest.mark.parametrize(
    ("title", "message"),
    [
        ("{{ user.display_name", "title: unclosed tag"),
        ("{{#if x}}open", "title: unclosed block"),
        (
            "{{ shout user.name }}",
            "title: fails on a sample call.live_started event (ValueError: Missing helper",
        ),
        ("{{log user}}", "Missing helper"),
        ("{{lookup call.blocked_user_ids 0}}", "Missing helper"),
        ("{{> partial}}", "title: partials are not supported"),
        ("{{#each members}}{{#each otherMembers}}x{{/each}}{{/each}}", "a loop inside a loop"),
        ("{{#each members}}{{#custom}}x{{/custom}}{{/each}}", "a loop inside a loop"),
        ("x" * 2001, "longer than 2000"),
    ],
)
def test_unusable_templates_are_refused_with_the_reason(title: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        compile_stream_template(title, "")
    assert message in str(refused.value)


def test_the_body_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"^body: unclosed tag"):
        compile_stream_template("fine", "{{ oops")


def test_one_loop_is_fine_and_lists_are_capped() -> None:
    huge = [{"id": f"u{i}", "name": f"U{i}"} for i in range(50_000)]
    event = _ring(call={**_ring().raw["call"], "custom": {"display_name": "Big", "people": huge}})
    template = compile_stream_template("{{#each call.custom.people}}x{{/each}}", "")
    started = time.perf_counter()
    text = template.render(event, "bob")
    assert text.title == "x" * MAX_LIST_ITEMS
    assert time.perf_counter() - started < 1.0


def test_the_byte_caps_stay() -> None:
    event = _ring(user={"id": "alice", "name": "é" * 5000})
    title, body = _render(
        "{{ user.display_name }}", "{{ user.display_name }}{{ user.display_name }}", event
    )
    assert len(title.encode()) <= TITLE_MAX_BYTES and title.endswith("…")
    assert len(body.encode()) <= BODY_MAX_BYTES and body.endswith("…")


def test_a_template_that_fails_on_one_events_data_raises_for_the_caller() -> None:
    # The sample events have no custom "people": the trial never reaches the unknown helper.
    template = compile_stream_template("{{#each call.custom.people}}{{shout this}}{{/each}}", "")
    assert template.render(_ring(), "bob").title == ""
    event = _ring(call={**_ring().raw["call"], "custom": {"people": ["ann"]}})
    with pytest.raises(ValueError, match="Missing helper"):
        template.render(event, "bob")


def test_each_receiver_of_one_event_gets_its_own_receiver_and_other_members() -> None:
    # One event rendered for every receiver in turn, as a fan-out does.
    event = _ring()
    template = compile_stream_template(
        "{{ receiver.display_name }}", "{{implodeMembers otherMembers}}"
    )
    texts = [template.render(event, user, user.title()) for user in ("bob", "carol", "dave")]
    assert [(t.title, t.body) for t in texts] == [
        ("Bob", "Carol, Dave"),
        ("Carol", "Bob, Dave"),
        ("Dave", "Bob, Carol"),
    ]
