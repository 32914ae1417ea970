"""Real database errors, classified: a database that is away is worth a retry (503 to Stream,
the event left to the sweeper); a statement it refuses is not."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from worker.storage.db_errors import is_transient_db_error


def error_of(url: str, statement: str, **params: object) -> SQLAlchemyError:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params)
    except SQLAlchemyError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_an_unreachable_database_is_transient(tmp_path):
    assert is_transient_db_error(error_of(f"sqlite:///{tmp_path}/no/such/dir.db", "select 1"))


def test_a_stopped_server_is_transient():
    assert is_transient_db_error(
        error_of("postgresql+psycopg://postgres@127.0.0.1:1/postgres", "select 1")
    )


@pytest.mark.services
@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("create temp table t (v varchar(4)); insert into t values (:v)", {"v": "too long"}),
        ("create temp table t (v text); insert into t values (:v)", {"v": "nul\x00"}),
        ("create temp table t (v integer); insert into t values (:v)", {"v": 2**31}),
        ("create temp table t (v integer unique); insert into t values (1), (1)", {}),
    ],
)
def test_a_refused_value_is_permanent(postgres_url, statement, params):
    first, second = statement.split("; ")
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(first))
            with pytest.raises(SQLAlchemyError) as caught:
                conn.execute(text(second), params)
    finally:
        engine.dispose()
    assert not is_transient_db_error(caught.value)
