"""worker.foundation.settings with secrets given as files (worker/foundation/secret_sources.py):
every
*_FILE variable and
TOML key, the errors (both ways at once, missing, unreadable, empty), all through load_settings
with real files, the way a Docker or Kubernetes secret arrives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from worker.foundation.secret_sources import FileSecret
from worker.foundation.settings import Settings, load_settings
from worker.ops.config_show import format_settings_error

ADMIN_TOKEN = "admin-token-from-a-file-0123456789abcdef"
CURRENT = "stream-secret-current-0123"
OLD = "stream-secret-old-4567"
OLDER = "stream-secret-older-8901"
# Every character that means something in a URL, and a space.
PASSWORD = "p@ss:w/rd?#%20 [x]&=+;"


# No CALLPUSH_* variable or ./callpush.toml of the developer's leaks in (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_settings")


def secret_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "run-secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode())
    return path


def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    path = tmp_path / "callpush.toml"
    path.write_text(text)
    monkeypatch.setenv("CALLPUSH_CONFIG", str(path))


def load_error(**overrides: object) -> str:
    """The message an operator sees for a configuration that does not load (the one
    `callpush` prints: it never quotes input values)."""
    with pytest.raises(ValueError) as caught:
        load_settings(**overrides)
    return format_settings_error(caught.value)


# --------------------------------------------------------------------------------------------
# The admin token


def test_admin_token_from_a_file_loses_only_its_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN + "\n")
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    settings = load_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == ADMIN_TOKEN
    assert settings.admin_token_file == path
    # Shown as where it came from, never as itself.
    assert str(settings.admin_token) == f"<from file {path}>"
    assert ADMIN_TOKEN not in repr(settings.admin_token)


def test_a_windows_line_end_is_stripped_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN + "\r\n")
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    token = load_settings().admin_token
    assert token is not None and token.get_secret_value() == ADMIN_TOKEN


def test_admin_token_as_value_and_file_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN)
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN", "another-admin-token-given-as-a-value-xyz")
    message = load_error()
    assert "admin_token (CALLPUSH_ADMIN_TOKEN)" in message
    assert "admin_token_file (CALLPUSH_ADMIN_TOKEN_FILE)" in message
    assert "both set" in message
    assert ADMIN_TOKEN not in message and "another-admin-token" not in message


def test_an_empty_value_beside_a_file_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What compose passes for a variable that is not set: `CALLPUSH_ADMIN_TOKEN: ${X:-}`.
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN)
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN", "")
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "single")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", "")
    monkeypatch.setenv(
        "CALLPUSH_STREAM_API_SECRET_FILE", str(secret_file(tmp_path, "stream", CURRENT))
    )
    settings = load_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == ADMIN_TOKEN
    assert settings.apps[0].signing_secret == CURRENT


# --------------------------------------------------------------------------------------------
# Stream apps: [[apps]] in TOML, CALLPUSH_APPS, the single-app shortcut


def test_app_secrets_from_files_in_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    current = secret_file(tmp_path, "api_secret", CURRENT + "\n")
    # One per line; blank lines, spaces and CRLF line ends do not make secrets.
    previous = secret_file(tmp_path, "previous", f"{OLD}\r\n\n  {OLDER}  \n\n")
    config(
        monkeypatch,
        tmp_path,
        f"""
[[apps]]
api_key = "prod"
api_secret_file = "{current}"
previous_api_secrets_file = "{previous}"
""",
    )
    (app,) = load_settings().apps
    assert app.signing_secret == CURRENT
    assert [s.get_secret_value() for s in app.previous_api_secrets] == [OLD, OLDER]
    assert [s.get_secret_value() for s in app.api_secrets] == [CURRENT, OLD, OLDER]
    assert all(isinstance(s, FileSecret) for s in app.api_secrets)
    assert [str(s) for s in app.api_secrets] == [
        f"<from file {current}>",
        f"<from file {previous}>",
        f"<from file {previous}>",
    ]


def test_an_app_secret_file_beside_the_older_api_secrets_makes_those_previous(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As with api_secret = "...": the file's secret is current, the listed ones previous.
    current = secret_file(tmp_path, "api_secret", CURRENT)
    config(
        monkeypatch,
        tmp_path,
        f"""
[[apps]]
api_key = "prod"
api_secret_file = "{current}"
api_secrets = ["{OLD}"]
""",
    )
    (app,) = load_settings().apps
    assert [s.get_secret_value() for s in app.api_secrets] == [CURRENT, OLD]


def test_app_secret_as_value_and_file_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current = secret_file(tmp_path, "api_secret", CURRENT)
    config(
        monkeypatch,
        tmp_path,
        f"""
[[apps]]
api_key = "prod"
api_secret = "{OLD}"
api_secret_file = "{current}"
""",
    )
    message = load_error()
    assert "apps.0:" in message
    assert "api_secret and api_secret_file are both set" in message
    assert CURRENT not in message and OLD not in message


def test_previous_secrets_as_value_and_file_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    previous = secret_file(tmp_path, "previous", OLD)
    config(
        monkeypatch,
        tmp_path,
        f"""
[[apps]]
api_key = "prod"
api_secret = "{CURRENT}"
previous_api_secrets = ["{OLDER}"]
previous_api_secrets_file = "{previous}"
""",
    )
    message = load_error()
    assert "previous_api_secrets and previous_api_secrets_file are both set" in message
    assert OLD not in message and OLDER not in message and CURRENT not in message


def test_apps_from_the_environment_take_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current = secret_file(tmp_path, "api_secret", CURRENT + "\n")
    previous = secret_file(tmp_path, "previous", OLD + "\n")
    apps = [{"api_key": "prod", "api_secret_file": str(current)}]
    apps.append(
        {
            "api_key": "dev",
            "api_secret": "dev-secret-1234",
            "previous_api_secrets_file": str(previous),
        }
    )
    monkeypatch.setenv("CALLPUSH_APPS", json.dumps(apps))
    prod, dev = load_settings().apps
    assert prod.signing_secret == CURRENT
    assert [s.get_secret_value() for s in dev.api_secrets] == ["dev-secret-1234", OLD]


def test_the_single_app_shortcut_takes_secret_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current = secret_file(tmp_path, "stream_api_secret", CURRENT + "\n")
    previous = secret_file(tmp_path, "stream_previous", f"{OLD}\n{OLDER}\n")
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "single")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET_FILE", str(current))
    monkeypatch.setenv("CALLPUSH_STREAM_PREVIOUS_API_SECRETS_FILE", str(previous))
    (app,) = load_settings().apps
    assert app.api_key == "single"
    assert [s.get_secret_value() for s in app.api_secrets] == [CURRENT, OLD, OLDER]
    assert [str(s) for s in app.api_secrets] == [
        f"<from file {current}>",
        f"<from file {previous}>",
        f"<from file {previous}>",
    ]


def test_the_single_app_shortcut_secret_as_value_and_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current = secret_file(tmp_path, "stream_api_secret", CURRENT)
    monkeypatch.setenv("CALLPUSH_STREAM_API_KEY", "single")
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET", OLD)
    monkeypatch.setenv("CALLPUSH_STREAM_API_SECRET_FILE", str(current))
    message = load_error()
    assert "stream_api_secret (CALLPUSH_STREAM_API_SECRET)" in message
    assert "stream_api_secret_file (CALLPUSH_STREAM_API_SECRET_FILE)" in message
    assert CURRENT not in message and OLD not in message


def test_a_loaded_app_validates_again_unchanged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Its secret and the file it came from are both set now; that is not "given both ways".
    current = secret_file(tmp_path, "api_secret", CURRENT)
    previous = secret_file(tmp_path, "previous", OLD)
    settings = load_settings(
        apps=[{"api_key": "k", "api_secret_file": current, "previous_api_secrets_file": previous}]
    )
    current.unlink()  # and nothing is read again
    (again,) = Settings(apps=[settings.apps[0].model_dump()]).apps
    assert [s.get_secret_value() for s in again.api_secrets] == [CURRENT, OLD]


# --------------------------------------------------------------------------------------------
# Passwords of database_url and broker_url


def test_the_database_password_is_inserted_url_encoded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sqlalchemy.engine import make_url

    path = secret_file(tmp_path, "database_password", PASSWORD + "\n")
    monkeypatch.setenv("CALLPUSH_DATABASE_URL", "postgresql+psycopg://callpush@postgres:5432/cp")
    monkeypatch.setenv("CALLPUSH_DATABASE_PASSWORD_FILE", str(path))
    url = make_url(load_settings().database_url)
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "callpush",
        PASSWORD,
        "postgres",
        5432,
        "cp",
    )


@pytest.mark.services
def test_the_inserted_database_password_reaches_postgresql(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_url: str
) -> None:
    from sqlalchemy import text

    from worker.storage.database import Database

    # The test server trusts local connections, so it does not check the password; libpq's
    # own record of the one it sent says whether the URL carried it intact.
    path = secret_file(tmp_path, "database_password", PASSWORD)
    monkeypatch.setenv("CALLPUSH_DATABASE_URL", postgres_url)
    monkeypatch.setenv("CALLPUSH_DATABASE_PASSWORD_FILE", str(path))
    db = Database(load_settings().database_url)
    try:
        with db.engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar() == 1
            assert connection.connection.dbapi_connection.info.password == PASSWORD
    finally:
        db.engine.dispose()


def test_a_database_password_in_the_url_and_a_file_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "database_password", PASSWORD)
    monkeypatch.setenv("CALLPUSH_DATABASE_URL", "postgresql+psycopg://cp:in-the-url-pw@db/cp")
    monkeypatch.setenv("CALLPUSH_DATABASE_PASSWORD_FILE", str(path))
    message = load_error()
    assert "database_url (CALLPUSH_DATABASE_URL) has a password" in message
    assert "database_password_file (CALLPUSH_DATABASE_PASSWORD_FILE) is set" in message
    assert "in-the-url-pw" not in message and PASSWORD not in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite:///callpush.db", "names no server"),
        ("postgresql+psycopg://db:5432/cp", "names no user"),
    ],
)
def test_a_database_password_file_needs_a_user_at_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, problem: str
) -> None:
    path = secret_file(tmp_path, "database_password", PASSWORD)
    monkeypatch.setenv("CALLPUSH_DATABASE_URL", url)
    monkeypatch.setenv("CALLPUSH_DATABASE_PASSWORD_FILE", str(path))
    message = load_error()
    assert problem in message and "database_password_file" in message


def test_the_broker_password_is_inserted_where_redis_and_kombu_read_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import redis
    from kombu import Connection

    path = secret_file(tmp_path, "broker_password", PASSWORD + "\n")
    monkeypatch.setenv("CALLPUSH_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("CALLPUSH_BROKER_PASSWORD_FILE", str(path))
    url = load_settings().broker_url
    assert url is not None and url.startswith("redis://:") and url.endswith("@redis:6379/0")
    client = redis.Redis.from_url(url)
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["port"], kwargs["db"]) == (
        PASSWORD,
        "redis",
        6379,
        0,
    )
    client.close()
    assert Connection(url).password == PASSWORD  # what Celery's broker connection uses


def test_an_amqp_broker_user_keeps_its_name_and_a_failover_list_gets_the_password_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kombu import Connection

    path = secret_file(tmp_path, "broker_password", PASSWORD)
    monkeypatch.setenv(
        "CALLPUSH_BROKER_URL", "amqp://callpush@rabbit-a:5672//;amqp://callpush@rabbit-b//"
    )
    monkeypatch.setenv("CALLPUSH_BROKER_PASSWORD_FILE", str(path))
    url = load_settings().broker_url
    assert url is not None
    first, second = url.split(";")
    for one, host in ((first, "rabbit-a"), (second, "rabbit-b")):
        connection = Connection(one)
        assert (connection.userid, connection.password, connection.hostname) == (
            "callpush",
            PASSWORD,
            host,
        )


def test_a_broker_password_in_the_url_and_a_file_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "broker_password", PASSWORD)
    monkeypatch.setenv("CALLPUSH_BROKER_URL", "redis://:in-the-url-pw@redis:6379/0")
    monkeypatch.setenv("CALLPUSH_BROKER_PASSWORD_FILE", str(path))
    message = load_error()
    assert "broker_url (CALLPUSH_BROKER_URL) has a password" in message
    assert "broker_password_file (CALLPUSH_BROKER_PASSWORD_FILE) is set" in message
    assert "in-the-url-pw" not in message and PASSWORD not in message


def test_a_broker_password_file_without_a_broker_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "CALLPUSH_BROKER_PASSWORD_FILE", str(secret_file(tmp_path, "broker_password", PASSWORD))
    )
    message = load_error()
    assert "broker_password_file (CALLPUSH_BROKER_PASSWORD_FILE) is set but broker_url" in message


# --------------------------------------------------------------------------------------------
# Files that cannot serve: each error names the setting and the path, never the content


def _admin_token_file_error(monkeypatch: pytest.MonkeyPatch, path: Path) -> str:
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    message = load_error()
    assert f"admin_token_file: {path}" in message, message
    return message


def test_a_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = _admin_token_file_error(monkeypatch, tmp_path / "nowhere" / "admin_token")
    assert "no such file" in message


@pytest.mark.parametrize("text", ["", "\n", "  \n\n"])
def test_an_empty_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    message = _admin_token_file_error(monkeypatch, secret_file(tmp_path, "admin_token", text))
    assert "is empty" in message


def test_an_empty_previous_secrets_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    previous = secret_file(tmp_path, "previous", "\n\n")
    monkeypatch.setenv(
        "CALLPUSH_APPS",
        json.dumps(
            [{"api_key": "k", "api_secret": CURRENT, "previous_api_secrets_file": str(previous)}]
        ),
    )
    assert f"previous_api_secrets_file: {previous} is empty" in load_error()


def test_two_lines_where_one_secret_belongs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "admin_token", f"{ADMIN_TOKEN}\nsecond-line-of-it\n")
    message = _admin_token_file_error(monkeypatch, path)
    assert "more than one line" in message
    assert ADMIN_TOKEN not in message and "second-line" not in message


def test_a_directory_or_a_fifo_is_not_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert "not a regular file" in _admin_token_file_error(monkeypatch, directory)
    # A FIFO nobody writes to would block a plain open() forever.
    fifo = tmp_path / "a-fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in _admin_token_file_error(monkeypatch, fifo)


def test_a_file_that_is_not_utf8_or_too_big(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00secret")
    assert "not UTF-8 text" in _admin_token_file_error(monkeypatch, binary)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    assert "larger than 65536 bytes" in _admin_token_file_error(monkeypatch, big)


def test_a_file_callpush_may_not_read(tmp_path: Path) -> None:
    """Loaded in a process of its own, as an unprivileged user (nobody) when the tests run as
    root, who reads any file."""
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN)
    path.chmod(0o600 if os.geteuid() == 0 else 0o000)
    # Imported first: the interpreter and the code may live where that user cannot read.
    code = (
        "import os\n"
        "from worker.ops.config_show import format_settings_error\n"
        "from worker.foundation.settings import load_settings\n"
        "if os.geteuid() == 0:\n    os.setgid(65534)\n    os.setuid(65534)\n"
        "try:\n    load_settings()\n"
        "except ValueError as error:\n    print(format_settings_error(error))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALLPUSH_")}
    env["CALLPUSH_ADMIN_TOKEN_FILE"] = str(path)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    expected = f"admin_token_file: {path}: not readable by this user (permission denied)"
    assert expected in result.stdout, output
    assert ADMIN_TOKEN not in output


# --------------------------------------------------------------------------------------------
# When the files are read


def test_files_are_read_when_the_settings_load_and_not_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = secret_file(tmp_path, "admin_token", ADMIN_TOKEN)
    monkeypatch.setenv("CALLPUSH_ADMIN_TOKEN_FILE", str(path))
    settings = load_settings()
    path.write_text("a-token-written-after-start-up-0123456789")
    token = settings.admin_token
    assert isinstance(token, SecretStr) and token.get_secret_value() == ADMIN_TOKEN
    # The next start-up (the next load) reads the new one.
    again = load_settings().admin_token
    assert again is not None
    assert again.get_secret_value() == "a-token-written-after-start-up-0123456789"
