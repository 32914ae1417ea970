"""worker.ops.config_show: the effective configuration behind `callpush config show`, secrets
redacted, without click."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.worker.ops.test_config_check import (
    BROKER_PASSWORD,
    DB_PASSWORD,
    OLD_STREAM_SECRET,
    STREAM_SECRET,
    good_settings,
)
from worker.ops import config_show

# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


def test_redacted_settings_hide_every_secret(tmp_path: Path) -> None:
    settings = good_settings(
        tmp_path,
        database_url=f"postgresql+psycopg://callpush:{DB_PASSWORD}@db:5432/callpush",
        broker_url=f"redis://:{BROKER_PASSWORD}@redis:6379/0",
        stream_api_key="single",
        stream_api_secret=SecretStr("single-app-secret-999"),
    )
    data = config_show.redacted_settings(settings)
    shown = json.dumps(data) + config_show.render_toml(data)
    for secret in (STREAM_SECRET, OLD_STREAM_SECRET, DB_PASSWORD, BROKER_PASSWORD, "single-app"):
        assert secret not in shown
    assert "BEGIN PRIVATE KEY" not in shown
    assert data["database_url"] == "postgresql+psycopg://callpush:***@db:5432/callpush"
    assert data["broker_url"] == "redis://:***@redis:6379/0"
    # File paths are not secret: the operator needs them.
    assert data["apns"]["key_file"] == str(settings.apns.key_file)
    assert data["apps"][-1]["api_secrets"] == [config_show.REDACTED] * 2
    assert data["apps"][-1]["api_secret"] == config_show.REDACTED
    assert data["apps"][-1]["previous_api_secrets"] == [config_show.REDACTED]


def test_previous_secrets_of_the_single_app_shortcut_are_scrubbed(tmp_path: Path) -> None:
    settings = good_settings(
        tmp_path,
        stream_api_key="single",
        stream_api_secret=SecretStr("single-current-secret"),
        stream_previous_api_secrets=SecretStr("single-old-one,single-older-one"),
    )
    text = "failed with single-old-one and single-older-one and single-current-secret"
    scrubbed = config_show.scrub(text, settings)
    assert "single" not in scrubbed and scrubbed.count(config_show.REDACTED) == 3


def test_render_toml_parses_back(tmp_path: Path) -> None:
    call_types = {
        "default": {
            "disabled_events": ["call.missed"],
            "templates": {"call.notification": {"title": 'Call from "{{ user.name }}"'}},
        },
        "*": {},
    }
    settings = good_settings(tmp_path, broker_url="redis://r:6379/0", call_types=call_types)
    data = config_show.redacted_settings(settings)
    parsed = tomllib.loads(config_show.render_toml(data))

    def without_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [without_none(v) for v in value]
        return value

    assert parsed == without_none(data)


def test_scrub_masks_secrets_echoed_by_error_messages(tmp_path: Path) -> None:
    settings = good_settings(tmp_path)
    text = f"driver said: bad secret {STREAM_SECRET} and {OLD_STREAM_SECRET}"
    assert config_show.scrub(text, settings) == (
        f"driver said: bad secret {config_show.REDACTED} and {config_show.REDACTED}"
    )


def test_redact_url() -> None:
    assert config_show.redact_url("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert config_show.redact_url("redis://h:1/0") == "redis://h:1/0"
    assert config_show.redact_url("sqlite:///x.db") == "sqlite:///x.db"
