"""`callpush simulate`: send the service a signed sample webhook, as Stream would."""

from __future__ import annotations

import json

import click
import requests

from worker import sample_events
from worker.commands import cli_settings


@click.group()
def simulate() -> None:
    """Send signed sample Stream webhooks to a running callpush."""


@simulate.command("ring")
@click.option("--from", "caller", default="alice", show_default=True)
@click.option("--to", "callees", multiple=True, default=["bob"], show_default=True)
@click.option("--audio", is_flag=True, help="an audio call (video=false)")
@click.option("--url", default="http://127.0.0.1:8080/webhooks/stream", show_default=True)
@click.pass_context
def ring(ctx: click.Context, caller: str, callees: tuple[str, ...], audio: bool, url: str) -> None:
    """POST a signed call.ring from CALLER to each --to user."""
    settings = cli_settings(ctx).with_dev_app()
    app = settings.apps[0]
    event = sample_events.ring_event(caller, list(callees), video=not audio)
    body, headers = sample_events.signed_request(
        event, api_key=app.api_key, secret=app.signing_secret
    )
    try:
        response = requests.post(url, data=body, headers=headers, timeout=10)
    except requests.RequestException as error:
        raise click.ClickException(f"--url {url}: {error.__class__.__name__}: {error}") from None
    try:
        answer = json.dumps(response.json())
    except ValueError:  # not callpush answering (a proxy's error page, another service)
        answer = response.text[:200]
    click.echo(f"{response.status_code} {answer}")
    click.echo(f"call_cid {event['call_cid']}")
    if response.status_code >= 300:
        raise SystemExit(1)
