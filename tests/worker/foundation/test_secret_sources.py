"""worker.foundation.secret_sources: the one list of secret settings, whose values the log redactor
and `callpush config check` / `config show` all mask, with secrets given as values and as files;
and a walk of Settings that fails when a new secret setting is missing from the list."""

from __future__ import annotations

import io
import json
import logging
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from worker.foundation.logging_setup import configure_logging
from worker.foundation.secret_sources import SECRET_SETTINGS, SECRET_URL_SETTINGS, secret_values
from worker.foundation.settings import Settings, load_settings
from worker.ops import config_check, config_show

# One of each kind of secret; those with "file" in their name are read from files.
ADMIN_TOKEN_FILE = "admin-token-from-file-0123456789abcdefgh"
APP_SECRET_FILE = "app-secret-from-file-0123"
APP_PREVIOUS_FILE = ("app-previous-from-file-1", "app-previous-from-file-2")
APP_SECRET = "app-secret-as-value-4567"
APP_PREVIOUS = "app-previous-as-value-89"
SHORTCUT_SECRET_FILE = "shortcut-secret-from-file-01"
SHORTCUT_PREVIOUS = "shortcut-previous-value-23"
DATABASE_PASSWORD_FILE = "db-password/from file"  # a slash and a space: URL-encoded in the URL
BROKER_PASSWORD = "broker-password-in-url"
EVERY_SECRET = (
    ADMIN_TOKEN_FILE,
    APP_SECRET_FILE,
    *APP_PREVIOUS_FILE,
    APP_SECRET,
    APP_PREVIOUS,
    SHORTCUT_SECRET_FILE,
    SHORTCUT_PREVIOUS,
    DATABASE_PASSWORD_FILE,
    BROKER_PASSWORD,
)


# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    written = {
        "admin_token": ADMIN_TOKEN_FILE + "\n",
        "app_secret": APP_SECRET_FILE + "\n",
        "app_previous": "\n".join(APP_PREVIOUS_FILE) + "\n",
        "shortcut_secret": SHORTCUT_SECRET_FILE,
        "database_password": DATABASE_PASSWORD_FILE + "\n",
    }
    paths = {}
    for name, text in written.items():
        paths[name] = tmp_path / "secrets" / name
        paths[name].parent.mkdir(exist_ok=True)
        paths[name].write_text(text)
    return paths


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, Path]) -> Settings:
    apps = [
        {
            "api_key": "from-files",
            "api_secret_file": str(files["app_secret"]),
            "previous_api_secrets_file": str(files["app_previous"]),
        },
        {"api_key": "as-values", "api_secret": APP_SECRET, "previous_api_secrets": [APP_PREVIOUS]},
    ]
    for name, value in {
        "CALLPUSH_APPS": json.dumps(apps),
        "CALLPUSH_ADMIN_TOKEN_FILE": str(files["admin_token"]),
        "CALLPUSH_STREAM_API_KEY": "shortcut",
        "CALLPUSH_STREAM_API_SECRET_FILE": str(files["shortcut_secret"]),
        "CALLPUSH_STREAM_PREVIOUS_API_SECRETS": SHORTCUT_PREVIOUS,
        "CALLPUSH_DATABASE_URL": "postgresql+psycopg://callpush@db:5432/callpush",
        "CALLPUSH_DATABASE_PASSWORD_FILE": str(files["database_password"]),
        "CALLPUSH_BROKER_URL": f"redis://:{BROKER_PASSWORD}@redis:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield io.StringIO()
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_the_list_holds_every_secret_from_values_and_files(settings: Settings) -> None:
    listed = secret_values(settings)
    for secret in EVERY_SECRET:
        assert secret in listed, secret
    # The database password also as the URL carries it (percent-encoded), for text that
    # quotes the URL.
    assert "db-password%2Ffrom file" in listed  # SQLAlchemy leaves the space as it is
    assert listed == sorted(listed, key=lambda s: (-len(s), s))


def test_the_log_redactor_and_config_check_mask_the_same_secrets(
    settings: Settings, log_output: io.StringIO
) -> None:
    # Before one list, the log redactor missed bare URL passwords and the shortcut's previous
    # secrets, and config check's scrubber missed the admin token.
    configure_logging("INFO", json=True, secrets=secret_values(settings), stream=log_output)
    log = logging.getLogger("callpush.test")
    for secret in EVERY_SECRET:
        message = f"a driver echoed {secret} in its error"
        log.warning(message)
        scrubbed = config_show.scrub(message, settings)
        assert secret not in scrubbed and config_show.REDACTED in scrubbed
    # The URLs as they are, the inserted password percent-encoded (and its space left as is,
    # which the URL pattern alone would stop at).
    log.warning("connecting to %s and %s", settings.database_url, settings.broker_url)
    logged = log_output.getvalue()
    assert len(logged.splitlines()) == len(EVERY_SECRET) + 1
    for secret in (*EVERY_SECRET, "db-password%2Ffrom file", "from file@db"):
        assert secret not in logged, secret
    assert "@db:5432/callpush and redis://:" in logged


def test_config_show_says_which_file_each_secret_came_from(
    settings: Settings, files: dict[str, Path]
) -> None:
    data = config_show.redacted_settings(settings)
    shown = json.dumps(data) + config_show.render_toml(data)
    for secret in EVERY_SECRET:
        assert secret not in shown, secret

    def came_from(name: str) -> str:
        return f"<from file {files[name]}>"

    assert data["admin_token"] == came_from("admin_token")
    assert data["admin_token_file"] == str(files["admin_token"])
    shortcut, from_files, as_values = data["apps"]
    assert shortcut["api_key"] == "shortcut"
    assert shortcut["api_secrets"] == [came_from("shortcut_secret"), config_show.REDACTED]
    assert from_files["api_secret"] == came_from("app_secret")
    assert from_files["previous_api_secrets"] == [came_from("app_previous")] * 2
    assert as_values["api_secrets"] == [config_show.REDACTED] * 2
    assert data["database_url"] == (
        f"postgresql+psycopg://callpush:{came_from('database_password')}@db:5432/callpush"
    )
    assert data["broker_url"] == "redis://:***@redis:6379/0"


def test_config_check_says_where_the_admin_token_was_read_from(
    settings: Settings, files: dict[str, Path]
) -> None:
    (check,) = config_check.check_admin_access(settings)
    assert check.ok
    assert check.detail.startswith(f"admin_token read from {files['admin_token']} (40 characters)")


def test_an_admin_token_file_too_short_is_named_by_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "admin_token"
    path.write_text("short-token-20-chars\n")
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    problem = config_check.admin_token_problem(load_settings())
    assert problem is not None
    assert problem.startswith(
        f"admin_token_file (CALLPUSH_ADMIN_TOKEN_FILE) {path} holds a token 20 characters long"
    )
    assert "short-token" not in problem


# --- every secret setting is in the list ------------------------------------------------------

# Names that suggest a secret.
SUSPECT_NAME = re.compile(r"secret|token|password|key")
# Settings whose names suggest a secret but whose values are not: say why.
NOT_SECRET = {
    "apps[].api_key": "Stream's API key is public: it is in every client app",
    "stream_api_key": "the single-app shortcut's api_key",
    "apns.key_id": "names the .p8 key; every provider token carries it in its header",
    "apps[].apns_providers{}.key_id": "as apns.key_id",
}


def setting_paths(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, type) of every setting, nested ones included, in SECRET_SETTINGS' notation."""
    for name, field in model.model_fields.items():
        yield from _typed_paths(prefix + name, field.annotation)


def _typed_paths(path: str, annotation: Any) -> Iterator[tuple[str, Any]]:
    yield path, annotation
    for inner, suffix in _nested(annotation):
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from setting_paths(inner, f"{path}{suffix}.")


def _nested(annotation: Any, suffix: str = "") -> Iterator[tuple[Any, str]]:
    """Each type inside ``annotation``, with "[]" / "{}" for each list / table around it."""
    origin = typing.get_origin(annotation)
    if origin is None:
        yield annotation, suffix
        return
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _nested(arg, suffix)
    elif origin in (list, tuple, set, frozenset):
        for arg in args:
            yield from _nested(arg, suffix + "[]")
    elif origin is dict:
        yield from _nested(args[1], suffix + "{}")
    else:
        for arg in args:
            yield from _nested(arg, suffix)


def _is(annotation: Any, kind: type) -> bool:
    return any(isinstance(t, type) and issubclass(t, kind) for t, _ in _nested(annotation))


def test_every_secret_setting_is_in_the_one_list() -> None:
    """A setting is secret when its type is SecretStr, or its name says secret / token /
    password / key and it holds a value (not a path: config show prints paths, and what the
    files hold is never in the settings).  Each must be in SECRET_SETTINGS, which
    secret_values() and config show both follow, or be explained in NOT_SECRET."""
    paths = dict(setting_paths(Settings))
    secret = {path for path, annotation in paths.items() if _is(annotation, SecretStr)}
    suspect = {
        path
        for path, annotation in paths.items()
        if SUSPECT_NAME.search(path.rsplit(".", 1)[-1]) and not _is(annotation, Path)
    }
    assert secret, "the walk found no SecretStr setting at all"
    assert secret <= set(SECRET_SETTINGS), secret - set(SECRET_SETTINGS)
    assert suspect - set(NOT_SECRET) <= set(SECRET_SETTINGS), suspect - set(SECRET_SETTINGS)
    # No stale entry: each names a setting that exists (and NOT_SECRET's are not secrets).
    listed = {*SECRET_SETTINGS, *SECRET_URL_SETTINGS, *SECRET_URL_SETTINGS.values(), *NOT_SECRET}
    assert listed <= set(paths), listed - set(paths)
    assert not secret & set(NOT_SECRET)
    # The URLs whose password is secret, and the files that may give it.
    for url, password_file in SECRET_URL_SETTINGS.items():
        assert _is(paths[url], str) and _is(paths[password_file], Path)


def test_config_show_and_the_list_agree_on_every_secret_setting(settings: Settings) -> None:
    """Each value the list yields is hidden from config show, and each setting config show
    masks is one whose value the list yields."""
    data = config_show.redacted_settings(settings)
    shown = json.dumps(data)
    listed = secret_values(settings)
    for secret in listed:
        assert secret not in shown, secret
    for secret in EVERY_SECRET:
        assert secret in listed, secret
