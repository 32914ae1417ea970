"""`callpush simulate`: send the service a signed sample webhook, as Stream would, to watch a
call from ring to accept, reject or end (the ring is cancelled on the other devices), a missed
call or a notification, without a Stream account.

    callpush simulate ring --from alice --to bob          # prints the call_cid
    callpush simulate accept --call default:<id> --user bob
    callpush simulate end --call default:<id>
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
import requests

from worker.commands import cli_settings
from worker.stream import samples as sample_events

DEFAULT_URL = "http://127.0.0.1:8080/webhooks/stream"
# The receiver answers in milliseconds; a bound so a wrong --url never hangs the command.
POST_TIMEOUT_SECONDS = 10


def _url_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url", default=DEFAULT_URL, show_default=True, help="callpush's webhook endpoint"
    )(command)


def _call_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--call",
        "call_cid",
        required=True,
        callback=_check_cid,
        metavar="CID",
        help="the call, e.g. default:123 (`simulate ring` prints it)",
    )(command)


def _check_cid(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    call_type, _, call_id = value.partition(":")
    if not call_type or not call_id:
        raise click.BadParameter(f"{value!r} is not a call id such as default:123")
    return value


def _optional_cid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else _check_cid(ctx, param, value)


@click.group()
def simulate() -> None:
    """Send signed sample Stream webhooks to a running callpush (`callpush run`)."""


@simulate.command("ring")
@click.option("--from", "caller", default="alice", show_default=True)
@click.option("--to", "callees", multiple=True, default=["bob"], show_default=True)
@click.option("--audio", is_flag=True, help="an audio call (video=false)")
@_url_option
@click.pass_context
def ring(ctx: click.Context, caller: str, callees: tuple[str, ...], audio: bool, url: str) -> None:
    """POST a signed call.ring from --from to each --to user."""
    event = sample_events.ring_event(caller, list(callees), video=not audio)
    _send(ctx, url, event)
    click.echo(
        f"stop it with: callpush simulate accept|reject --call {event['call_cid']} "
        f"--user {callees[0]}, or end --call {event['call_cid']}"
    )


@simulate.command("accept")
@_call_option
@click.option("--user", "user_id", default="bob", show_default=True, help="who answers")
@_url_option
@click.pass_context
def accept(ctx: click.Context, call_cid: str, user_id: str, url: str) -> None:
    """POST a call.accepted: the ring stops on the user's other devices."""
    _send(ctx, url, sample_events.call_event("call.accepted", call_cid, user_id))


@simulate.command("reject")
@_call_option
@click.option("--user", "user_id", default="bob", show_default=True, help="who declines")
@_url_option
@click.pass_context
def reject(ctx: click.Context, call_cid: str, user_id: str, url: str) -> None:
    """POST a call.rejected: the ring stops on the user's devices."""
    _send(ctx, url, sample_events.call_event("call.rejected", call_cid, user_id))


@simulate.command("end")
@_call_option
@click.option("--user", "user_id", default="alice", show_default=True, help="who hangs up")
@_url_option
@click.pass_context
def end(ctx: click.Context, call_cid: str, user_id: str, url: str) -> None:
    """POST a call.ended: every device still ringing stops."""
    _send(ctx, url, sample_events.call_event("call.ended", call_cid, user_id))


@simulate.command("missed")
@click.option("--call", "call_cid", default=None, callback=_optional_cid, metavar="CID")
@click.option("--from", "caller", default="alice", show_default=True)
@click.option("--to", "callees", multiple=True, default=["bob"], show_default=True)
@_url_option
@click.pass_context
def missed(
    ctx: click.Context, call_cid: str | None, caller: str, callees: tuple[str, ...], url: str
) -> None:
    """POST a call.missed to each --to user (a new call unless --call)."""
    _send(ctx, url, _member_event("call.missed", call_cid, caller, callees))


@simulate.command("notification")
@click.option("--call", "call_cid", default=None, callback=_optional_cid, metavar="CID")
@click.option("--from", "caller", default="alice", show_default=True)
@click.option("--to", "callees", multiple=True, default=["bob"], show_default=True)
@_url_option
@click.pass_context
def notification(
    ctx: click.Context, call_cid: str | None, caller: str, callees: tuple[str, ...], url: str
) -> None:
    """POST a call.notification (a call started; no ringing) to each --to user."""
    _send(ctx, url, _member_event("call.notification", call_cid, caller, callees))


def _member_event(
    event_type: str, call_cid: str | None, caller: str, callees: tuple[str, ...]
) -> dict[str, Any]:
    call_type, call_id = call_cid.split(":", 1) if call_cid else ("default", None)
    return sample_events.member_event(
        event_type, caller, list(callees), call_type=call_type, call_id=call_id
    )


def _send(ctx: click.Context, url: str, event: dict[str, Any]) -> None:
    """Sign the event with the served app's secret, POST it, print the answer and the call."""
    settings = cli_settings(ctx).with_dev_app()
    app = settings.apps[0]
    body, headers = sample_events.signed_request(
        event, api_key=app.api_key, secret=app.signing_secret
    )
    try:
        response = requests.post(url, data=body, headers=headers, timeout=POST_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        hint = (
            " (is `callpush run` running?)" if isinstance(error, requests.ConnectionError) else ""
        )
        raise click.ClickException(
            f"--url {url}: {error.__class__.__name__}: {error}{hint}"
        ) from None
    try:
        answer = json.dumps(response.json())
    except ValueError:  # not callpush answering (a proxy's error page, another service)
        answer = response.text[:200]
    click.echo(f"{response.status_code} {answer}")
    click.echo(f"call_cid {event['call_cid']}")
    if response.status_code >= 300:
        raise SystemExit(1)
