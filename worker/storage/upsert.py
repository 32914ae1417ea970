"""INSERT … ON CONFLICT DO NOTHING for the two backends we run on (both support RETURNING)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(
    session: Session, model: Any, conflict_columns: list[str] | None
) -> Any:
    """An INSERT for ``model`` that silently skips rows violating the given unique columns
    (None: any unique index of the table)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    raise NotImplementedError(f"unsupported database {dialect!r}")
