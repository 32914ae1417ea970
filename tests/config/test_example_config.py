"""config/callpush.example.toml must load, and must document every setting of
worker/foundation/settings.py:
a setting added to Settings without an entry in the example fails here."""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from worker.foundation.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "callpush.example.toml"

Path_ = tuple[str, ...]
LIST = "[]"  # a list of models: [[apps]]
ANY_KEY = "*"  # a dict of models keyed by the user: [call_types.<type>]


def _classify(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """("model" | "list" | "dict" | "leaf", the nested model)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            annotation = inner[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return "list", args[0]
    if origin is dict and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
        return "dict", args[-1]
    return "leaf", None


def setting_paths(model: type[BaseModel] = Settings, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every leaf setting, recursively: ("apns", "key_id"), ("apps", "[]", "api_key"), ..."""
    for name, field in model.model_fields.items():
        kind, inner = _classify(field.annotation)
        path = (*prefix, name)
        if inner is None:
            yield path
        else:
            yield from setting_paths(inner, _nested(path, kind))


def _nested(path: Path_, kind: str) -> Path_:
    return path if kind == "model" else (*path, LIST if kind == "list" else ANY_KEY)


def schema_path(keys: list[str]) -> Path_:
    """Concrete TOML keys (["call_types", "default", "disabled_events"]) to the setting's path
    (("call_types", "*", "disabled_events"))."""
    model: type[BaseModel] | None = Settings
    out: list[str] = []
    free_key = False
    for key in keys:
        if free_key:
            out.append(ANY_KEY)
            free_key = False
            continue
        assert model is not None, f"{'.'.join(keys)}: {key} is below a plain setting"
        assert key in model.model_fields, f"{'.'.join(keys)}: {key} is not a setting"
        out.append(key)
        kind, model = _classify(model.model_fields[key].annotation)
        if kind == "list":
            out.append(LIST)
        free_key = kind == "dict"
    return tuple(out)


def _active_keys(data: dict[str, Any], keys: list[str]) -> Iterator[list[str]]:
    for key, value in data.items():
        yield [*keys, key]
        if isinstance(value, dict):
            yield from _active_keys(value, [*keys, key])
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                yield from _active_keys(item, [*keys, key])


def _header_keys(header: str) -> list[str]:
    """`call_types.default.templates."call.missed"` -> its keys, via tomllib itself."""
    table: Any = tomllib.loads(f"[{header}]\n")
    keys: list[str] = []
    while isinstance(table, dict) and table:
        ((key, table),) = table.items()
        keys.append(key)
    return keys


def _commented_keys(text: str) -> Iterator[list[str]]:
    """`# key = value` lines (a documented setting left at its default / unset), each in the
    table of the header above it."""
    section: list[str] = []
    for line in text.splitlines():
        header = re.match(r"^\s*(?:#\s*)?\[\[?\s*([^\]]+?)\s*\]\]?\s*$", line)
        if header:
            section = _header_keys(header.group(1))
            continue
        commented = re.match(r"^\s*#\s*([a-z_][a-z0-9_]*)\s*=", line)
        if commented:
            yield [*section, commented.group(1)]


def documented_paths(text: str) -> set[Path_]:
    found = {schema_path(keys) for keys in _active_keys(tomllib.loads(text), [])}
    found |= {schema_path(keys) for keys in _commented_keys(text)}
    return found


def env_name(path: Path_) -> str:
    """The environment variable of a setting; through a list or dict: the container's (JSON)."""
    plain: list[str] = []
    for part in path:
        if part in (LIST, ANY_KEY):
            break
        plain.append(part)
    return "CALLPUSH_" + "__".join(plain).upper()


@pytest.fixture
def example_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name in list(os.environ):
        if name.upper().startswith("CALLPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CALLPUSH_CONFIG", str(EXAMPLE))
    return load_settings()


def test_example_loads(example_settings: Settings) -> None:
    settings = example_settings
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url and not settings.embedded
    # Dev, prod mid-rotation (current + previous), and the older api_secrets spelling.
    keys = [app.api_key for app in settings.apps]
    assert keys == ["devkey1234ab", "prodkey5678cd", "legacykey90ef"]
    for app in settings.apps[1:]:
        assert len(app.api_secrets) == 2 and len(app.previous_api_secrets) == 1
        assert app.signing_secret.endswith("-secret-new")
        assert app.previous_api_secrets[0].get_secret_value().endswith("-secret-old")
    assert settings.apns.configured and settings.apns.key_file == Path("/run/secrets/apns_key.p8")
    assert settings.fcm.service_account_file == Path("/run/secrets/fcm_service_account.json")
    assert "default" in settings.call_types
    # The dev app's named providers, [apns] filled in.
    named = settings.named_apns_providers()
    assert named[("devkey1234ab", "ios-voip")] == settings.apns
    debug = named[("devkey1234ab", "ios-voip-debug")]
    assert (debug.bundle_id, debug.use_sandbox, debug.key_id) == (
        "com.example.app.debug",
        True,
        settings.apns.key_id,
    )
    assert ("devkey1234ab", "firebase-staging") in settings.named_fcm_providers()


def test_example_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    expected = set(setting_paths())
    missing = sorted(".".join(path) for path in expected - documented_paths(text))
    assert not missing, f"settings missing from {EXAMPLE.name}: {missing}"


def test_example_names_every_environment_variable() -> None:
    text = EXAMPLE.read_text()
    named = set(re.findall(r"CALLPUSH_\w+", text))
    missing = sorted({env_name(path) for path in setting_paths()} - named)
    assert not missing, f"environment variables missing from {EXAMPLE.name}: {missing}"


def test_the_walk_sees_nested_settings() -> None:
    # Guards the test itself: the recursive walk must reach into models, lists and dicts.
    paths = set(setting_paths())
    assert ("apns", "key_id") in paths
    assert ("apps", LIST, "api_secrets") in paths
    assert ("call_types", ANY_KEY, "templates", ANY_KEY, "title") in paths
    assert env_name(("apns", "key_id")) == "CALLPUSH_APNS__KEY_ID"
    assert env_name(("apps", LIST, "api_key")) == "CALLPUSH_APPS"
