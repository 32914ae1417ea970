"""`callpush config show`: the effective configuration, rendered with every secret redacted.

Which settings are secret is the one list in worker/foundation/secret_sources.py (the log redactor
masks the same values).  A secret given as a value is shown as ``**********``, one read from a file
as ``<from file PATH>``, a URL's password as ``***`` (or where it was read from).  Errors in
the configuration are described without quoting what was given, which may be a secret.
Checking what the configuration points at is worker/ops/config_check.py.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from worker.foundation.secret_sources import (
    SECRET_URL_SETTINGS,
    from_file,
    mask_secret_settings,
    secret_values,
)
from worker.foundation.settings import CONFIG_ENV, DEFAULT_CONFIG_FILE, Settings

REDACTED = "**********"


def format_settings_error(error: BaseException) -> str:
    """Why the settings did not load: each invalid setting named, the input never quoted
    (pydantic's default message quotes it, and it may be a secret)."""
    if isinstance(error, ValidationError):
        lines = [f"{error.error_count()} invalid setting(s) ({_config_source()}):"]
        for item in error.errors(include_url=False, include_input=False, include_context=False):
            location = ".".join(str(part) for part in item["loc"]) or "(settings)"
            lines.append(f"  {location}: {item['msg']}")
        return "\n".join(lines)
    if isinstance(error, tomllib.TOMLDecodeError):
        # The message gives the line and column, never the value.
        return f"{_config_source()} is not valid TOML: {error}"
    return f"{error.__class__.__name__}: {error}"


def _config_source() -> str:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return f"{CONFIG_ENV}={explicit} and CALLPUSH_* environment variables"
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return f"./{DEFAULT_CONFIG_FILE} and CALLPUSH_* environment variables"
    return f"CALLPUSH_* environment variables; no config file ({CONFIG_ENV} unset)"


def redact_url(url: str, shown: str = "***") -> str:
    """``scheme://user:***@host/...``: the password of a database or broker URL masked (or
    replaced by ``shown``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{shown}@{hostinfo}").geturl()


def _redacted_failover_url(url: str, password_file: Path | None) -> str:
    # A password read from a file is shown as where it came from; one written in the URL masked.
    shown = from_file(password_file) if password_file is not None else "***"
    return ";".join(redact_url(part, shown) for part in url.split(";"))


def redacted_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked: ``**********`` for a secret given
    as a value, ``<from file PATH>`` for one read from a file.  File paths stay (they are not
    secret); what the files hold is never shown."""
    data = settings.model_dump()
    # Each secret setting of the one list (worker/foundation/secret_sources.py) as its own str():
    # "**********", or "<from file …>" for a FileSecret (pydantic's mode="json" would print
    # every secret as "**********", hiding where it came from).  A SecretStr the list missed
    # would still come out as "**********" from to_jsonable_python.
    mask_secret_settings(data, str)
    for name, password_file in SECRET_URL_SETTINGS.items():
        url = getattr(settings, name)
        if url:
            data[name] = _redacted_failover_url(url, getattr(settings, password_file))
    shown: dict[str, Any] = to_jsonable_python(data)
    return shown


def scrub(text: str, settings: Settings | None) -> str:
    """A last safety net: mask any secret value that an error message may have echoed (the
    same list the log redactor masks: :func:`worker.foundation.secret_sources.secret_values`)."""
    if settings is None:
        return text
    for secret in secret_values(settings):
        text = text.replace(secret, REDACTED)
    return text


def render_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the settings' shape (tomllib only reads).  Unset values (None)
    have no TOML spelling; they are shown as comments."""
    lines: list[str] = []
    _render_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _toml_key(key: str) -> str:
    # Bare keys are letters, digits, - and _; others ("call.missed", "*") must be quoted.
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _render_table(data: dict[str, Any], path: list[str], lines: list[str]) -> None:
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        elif value is None:
            lines.append(f"# {_toml_key(key)} = (unset)")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{'.'.join([*path, _toml_key(key)])}]"]
        _render_table(table, [*path, _toml_key(key)], lines)
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{'.'.join([*path, _toml_key(key)])}]]"]
            _render_table(item, [*path, _toml_key(key)], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
