"""Secrets given as files, and the one list of every configured secret value.

Docker and Kubernetes secrets and systemd credentials arrive as files (``/run/secrets/<name>``),
so every secret setting has a ``*_file`` twin: ``admin_token_file``, an app's
``api_secret_file`` and ``previous_api_secrets_file``, ``database_password_file`` and
``broker_password_file`` (README: Configuration, "Secrets as files").  The files are read once,
while the settings are validated (:func:`worker.foundation.settings.load_settings`), never at
import.

Errors name the setting and the path, never what the file holds.  A value read from a file is a
:class:`FileSecret`, which remembers its path, so `callpush config check` can show
``<from file /run/secrets/x>`` where the secret would be.

The one list of secret settings is :data:`SECRET_SETTINGS` (and :data:`SECRET_URL_SETTINGS` for
URLs whose password is secret).  :func:`secret_values` reads their values, which the log
redactor (:mod:`worker.foundation.logging_setup`) and `callpush config`'s scrubber mask, and
`callpush config show` (:mod:`worker.ops.config_show`) masks those settings by
:func:`mask_secret_settings`.
A test walks :class:`~worker.foundation.settings.Settings` so that a new secret setting cannot be
left out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

if TYPE_CHECKING:
    from worker.foundation.settings import Settings

# No secret is anywhere near this long; a bigger file is the wrong file (a key, a log, a disk
# image) and is not read into memory.
MAX_SECRET_FILE_BYTES = 64 * 1024
# Shorter "secrets" would mask ordinary words in every log line and message; no real secret is
# this short.
MIN_MASKED_SECRET_LENGTH = 8


# Every setting whose value is a secret, as a path in Settings: "[]" steps into each item of a
# list, "{}" into each value of a table.
SECRET_SETTINGS: tuple[str, ...] = (
    "apps[].api_secret",
    "apps[].previous_api_secrets",
    "apps[].api_secrets",
    "stream_api_secret",
    "stream_previous_api_secrets",  # the single-app shortcut's, comma-separated
    "admin_token",
)
# Settings holding a URL (or a ";"-separated failover list of them) whose password is secret,
# each with the setting that may give that password as a file.
SECRET_URL_SETTINGS: dict[str, str] = {
    "database_url": "database_password_file",
    "broker_url": "broker_password_file",
}


class FileSecret(SecretStr):
    """A secret read from a file.  Its ``str()`` and ``repr()``, which are ``**********`` for
    any other secret, say ``<from file PATH>`` (what `callpush config check` shows), never the
    value."""

    def __init__(self, secret_value: str, path: Path) -> None:
        super().__init__(secret_value)
        self.path = path

    def _display(self) -> str:
        return from_file(self.path)


def from_file(path: Path) -> str:
    """How `callpush config check` shows a secret read from ``path``."""
    return f"<from file {path}>"


def _read_text(setting: str, path: Path) -> str:
    where = f"{setting}: {path}"
    try:
        # Opened without blocking and checked before reading: a FIFO or a device at that path
        # would otherwise hold the start-up forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ValueError(f"{where}: no such file") from None
    except PermissionError:
        raise ValueError(f"{where}: not readable by this user (permission denied)") from None
    except OSError as error:
        raise ValueError(f"{where}: cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{where}: not a regular file")
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
        except OSError as error:
            raise ValueError(f"{where}: cannot be read ({error.strerror})") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"{where}: larger than {MAX_SECRET_FILE_BYTES} bytes, not a secret")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None


def read_secret_file(setting: str, path: Path) -> FileSecret:
    """The one secret in ``path``: its text without the trailing line break that ``echo`` and
    most editors add.  Empty, or more than one line, is an error."""
    text = _read_text(setting, path).rstrip("\r\n")
    if not text.strip():
        raise ValueError(f"{setting}: {path} is empty")
    if "\n" in text or "\r" in text:
        raise ValueError(f"{setting}: {path} holds more than one line; it must hold one secret")
    return FileSecret(text, path)


def read_secret_lines(setting: str, path: Path) -> list[FileSecret]:
    """One secret per line of ``path`` (blank lines and surrounding spaces ignored).  A file
    with none is an error: to list no secret, leave the setting out."""
    lines = [line.strip() for line in _read_text(setting, path).splitlines()]
    secrets = [FileSecret(line, path) for line in lines if line]
    if not secrets:
        raise ValueError(f"{setting}: {path} is empty")
    return secrets


def one_source(value: object, file: Path | None, value_name: str, file_name: str) -> None:
    """Refuse a secret given both as a value and as a file: which one was meant is unknowable.
    An empty value counts as not given, as it does everywhere in the settings (compose files
    pass ``CALLPUSH_ADMIN_TOKEN: ${ADMIN_TOKEN:-}``, an empty string, when it is unset)."""
    if _given(value) and file is not None:
        raise ValueError(
            f"{value_name} and {file_name} are both set: give the secret one way, not both"
        )


def _given(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value().strip())
    if isinstance(value, list | tuple):
        return any(_given(item) for item in value)
    return value is not None


def database_url_with_password(url: str, password: str, url_name: str, file_name: str) -> str:
    """``url`` with ``password`` inserted (URL-encoded by SQLAlchemy), for a URL without one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"{url_name} is not a database URL, so {file_name} cannot apply") from None
    if parsed.password:  # an empty one ("user:@host") is none
        raise ValueError(
            f"{url_name} has a password and {file_name} is set: give the password one way, not both"
        )
    if not parsed.host:
        raise ValueError(f"{url_name} names no server to log in to, so {file_name} cannot apply")
    if not parsed.username:
        # SQLAlchemy writes no password into a URL without a user: it would vanish silently.
        raise ValueError(
            f"{url_name} names no user (scheme://USER@host/database), so {file_name} cannot apply"
        )
    return parsed.set(password=password).render_as_string(hide_password=False)


def broker_url_with_password(url: str, password: str, url_name: str, file_name: str) -> str:
    """``url`` with ``password`` inserted (percent-encoded, which kombu and redis-py decode),
    for a URL without one.  A failover list (``redis://a;redis://b``) gets it in each URL."""
    return ";".join(_one_broker_url(part, password, url_name, file_name) for part in url.split(";"))


def _one_broker_url(url: str, password: str, url_name: str, file_name: str) -> str:
    try:
        parts = urlsplit(url.strip())
        has_password = bool(parts.password)
    except ValueError:
        raise ValueError(f"{url_name} is not a valid URL, so {file_name} cannot apply") from None
    if has_password:
        raise ValueError(
            f"{url_name} has a password and {file_name} is set: give the password one way, not both"
        )
    if not parts.hostname:
        raise ValueError(f"{url_name} names no server to log in to, so {file_name} cannot apply")
    user, _, host = parts.netloc.rpartition("@")
    # The user part is kept as written (already URL-encoded); Redis without ACLs takes no user.
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


def _url_password(url: str | None) -> list[str]:
    """The password of a URL (each of a failover list), as written and decoded."""
    found: list[str] = []
    for part in (url or "").split(";"):
        try:
            password = urlsplit(part.strip()).password
        except ValueError:
            continue
        if password:
            found += [password, unquote(password)]
    return found


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold, longest first: those of :data:`SECRET_SETTINGS`
    (a comma-separated one also split, as the single-app shortcut's previous secrets are
    given), and the passwords of :data:`SECRET_URL_SETTINGS` (as written in the URL and
    decoded), whether given as values or read from files.  The log redactor and `callpush
    config` mask exactly these."""
    found: list[str] = []
    for path in SECRET_SETTINGS:
        for holder, name in _holders(settings, path):
            for secret in _items(getattr(holder, name)):
                value = secret.get_secret_value()
                found += [value, *value.split(",")]
    for name in SECRET_URL_SETTINGS:
        found += _url_password(getattr(settings, name))
    stripped = {secret.strip() for secret in found}
    return sorted(
        (s for s in stripped if len(s) >= MIN_MASKED_SECRET_LENGTH),
        key=lambda s: (-len(s), s),
    )


def mask_secret_settings(data: dict[str, Any], mask: Callable[[Any], Any]) -> None:
    """Replace, in ``data`` (a ``Settings.model_dump()``), each value of the settings in
    :data:`SECRET_SETTINGS` by ``mask(value)`` (each item, for a list).  The URLs of
    :data:`SECRET_URL_SETTINGS` are the caller's to mask: how depends on where the password
    came from."""
    for path in SECRET_SETTINGS:
        for holder, name in _holders(data, path):
            value = holder.get(name)
            if isinstance(value, list):
                holder[name] = [mask(item) for item in value]
            elif value is not None:
                holder[name] = mask(value)


def _holders(root: Any, path: str) -> Iterator[tuple[Any, str]]:
    """(object or table holding the setting, its name) for each place ``path`` names in
    ``root``, a Settings or its model_dump()."""
    *steps, name = path.split(".")
    holders = [root]
    for step in steps:
        key = step.removesuffix("[]").removesuffix("{}")
        children = [_child(holder, key) for holder in holders]
        if step.endswith("[]"):
            holders = [item for child in children for item in child or ()]
        elif step.endswith("{}"):
            holders = [item for child in children for item in (child or {}).values()]
        else:
            holders = [child for child in children if child is not None]
    for holder in holders:
        yield holder, name


def _child(holder: Any, key: str) -> Any:
    return holder.get(key) if isinstance(holder, dict) else getattr(holder, key)


def _items(value: SecretStr | list[SecretStr] | None) -> list[SecretStr]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
