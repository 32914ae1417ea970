"""The webhooks a benchmark sends: signed as Stream signs them, and the JSONL load files the load
generators read and write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.environment import API_KEY, SECRET
from worker.stream import samples as sample_events


def signed(event: dict[str, Any], webhook_id: str | None = None) -> dict[str, Any]:
    body, headers = sample_events.signed_request(
        event, api_key=API_KEY, secret=SECRET, webhook_id=webhook_id or str(uuid.uuid4())
    )
    return {"body": body.decode(), "headers": headers}


def notification_event(
    caller: str, members: Sequence[str], call_id: str | None = None
) -> dict[str, Any]:
    """A call.notification; ≥100 members make the worker page them from Stream's API."""
    event = sample_events.ring_event(caller, list(members), call_id=call_id)
    event["type"] = "call.notification"
    return event


def write_jsonl(path: Path, items: Sequence[dict[str, Any]]) -> Path:
    with open(path, "w") as out:
        for item in items:
            out.write(json.dumps(item) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as source:
        return [json.loads(line) for line in source if line.strip()]
