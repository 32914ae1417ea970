"""Alembic migrations, driven from code so they work from an installed package (no alembic.ini,
nothing read from the current directory).

The scripts live in ``worker/storage/alembic_scripts/`` (env.py, script.py.mako, versions/).
Revision ids are sequential (``0001``, ``0002``, ...) and files are named ``<rev>_<slug>.py``.

Generating a migration after changing ``worker/storage/models.py``::

    make migration MESSAGE="add devices.locale"
    # = python -m worker.storage.migrations revision -m "add devices.locale"
    #   then ruff format / ruff check --fix on the new file

It upgrades a scratch SQLite database to the current head, autogenerates the difference to the
models into ``worker/storage/alembic_scripts/versions/`` and prints the file name; it writes
nothing when the models already match.  Review the file (autogenerate misses renames and
server-side defaults) before committing it.  To regenerate the initial migration while nothing is
deployed yet, delete ``versions/0001_initial.py`` and run ``make migration MESSAGE=initial``.

``python -m worker.storage.migrations check`` exits 1 when the models and the migrations differ.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import TypeDecorator, create_engine, pool
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "alembic_scripts"

# env.py takes the URL from here rather than from the "sqlalchemy.url" option: that option goes
# through configparser interpolation, which a "%" in a password would break.
DATABASE_URL_ATTRIBUTE = "database_url"
# The Stream app (API key) that owns devices and preferences stored before they were kept per
# app: read by migration 0002 (which may not import this module, hence the plain string).
OWNER_APP_ATTRIBUTE = "owner_app"


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render a TypeDecorator (e.g. ``UTCDateTime``) as the type it stores.

    The migration then says ``sa.DateTime(timezone=True)`` and never imports model code, so a
    later change to the models cannot change what an old migration does.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator):
        # alembic's own renderer for the underlying type (variants, dialect imports included).
        from alembic.autogenerate.render import _repr_type

        return _repr_type(obj.impl_instance, autogen_context)
    return False


# The options env.py configures every migration context with.  Tests comparing the migrated
# schema to the models use the same ones.
CONTEXT_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    # Batch operations ("move and copy") are how SQLite alters tables; on PostgreSQL they emit
    # plain ALTERs.  Rendering them always keeps one migration valid for both backends.
    "render_as_batch": True,
    "render_item": render_item,
}


def alembic_config(database_url: str | None = None, owner_app: str | None = None) -> Config:
    """The equivalent of an alembic.ini, built in code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        config.attributes[DATABASE_URL_ATTRIBUTE] = database_url
    if owner_app is not None:
        config.attributes[OWNER_APP_ATTRIBUTE] = owner_app
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str | None:
    """The newest revision in worker/storage/alembic_scripts/versions (None when there is none)."""
    return script_directory().get_current_head()


class UpgradeRefused(Exception):
    """A migration refused to run and changed nothing; the message says what it needs."""


def upgrade_to_head(database_url: str, owner_app: str | None = None) -> None:
    """Create or bring the schema up to date.  A no-op when it already is; on PostgreSQL two
    concurrent upgrades wait for each other (env.py takes an advisory lock).

    ``owner_app``: the Stream app (API key) that owns devices and preferences stored before
    they were kept per app (migration 0002); needed only when there are such rows, and then the
    upgrade raises :class:`UpgradeRefused` without it (``callpush db upgrade --owner-app``)."""
    try:
        command.upgrade(alembic_config(database_url, owner_app), "head")
    except RuntimeError as refused:  # what a migration raises when it cannot go on
        raise UpgradeRefused(str(refused)) from refused


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def stamp(database_url: str, revision: str = "head") -> None:
    """Record ``revision`` as applied without running anything (a schema made by other means)."""
    command.stamp(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(database_url: str) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] = nothing)."""
    from worker.storage.models import Base

    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": CONTEXT_OPTIONS["compare_type"]}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def next_revision_id() -> str:
    numbers = [
        int(rev.revision)
        for rev in script_directory().walk_revisions()
        if re.fullmatch(r"\d+", rev.revision)
    ]
    return f"{max(numbers, default=0) + 1:04d}"


def generate_revision(
    message: str, *, rev_id: str | None = None, database_url: str | None = None
) -> Path | None:
    """Autogenerate a migration from the models against ``database_url`` (a scratch SQLite
    database by default), which is first upgraded to head.  None when nothing changed."""
    with tempfile.TemporaryDirectory(prefix="callpush-migration-") as scratch:
        url = database_url or f"sqlite:///{Path(scratch) / 'scratch.db'}"
        upgrade_to_head(url)
        if not schema_differences(url):
            return None
        script = command.revision(
            alembic_config(url),
            message=message,
            autogenerate=True,
            rev_id=rev_id or next_revision_id(),
        )
    if script is None or isinstance(script, list):  # only with multiple heads / --splice
        raise RuntimeError("alembic did not produce exactly one revision")
    return Path(script.path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.storage.migrations",
        description="Generate or check callpush's Alembic migrations (see the module docstring).",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    revision = sub.add_parser("revision", help="autogenerate a migration from the models")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--rev-id", help="default: the next sequential number, e.g. 0002")
    revision.add_argument(
        "--database-url", help="autogenerate against this database instead of scratch SQLite"
    )
    check = sub.add_parser("check", help="exit 1 when the models and the migrations differ")
    check.add_argument("--database-url", help="default: a scratch SQLite database")
    args = parser.parse_args(argv)

    if args.action == "revision":
        path = generate_revision(args.message, rev_id=args.rev_id, database_url=args.database_url)
        if path is None:
            print("the models match the migrations: nothing to generate")
        else:
            print(path)
        return 0

    with tempfile.TemporaryDirectory(prefix="callpush-migration-") as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'scratch.db'}"
        upgrade_to_head(url)
        differences = schema_differences(url)
    shown = make_url(url).render_as_string(hide_password=True)
    if differences:
        print(f"the migrations do not produce the models (upgraded {shown}):")
        for difference in differences:
            print(f"  {difference}")
        print("run `make migration MESSAGE=...`")
        return 1
    print(f"the migrations produce the models (head {head_revision()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
