"""A PostgreSQL store for tests: a fresh schema on the server CI and the dev machines run (127.0.0.1:5432, db
`test`; TICKETTUNE_TEST_POSTGRES overrides the URL), dropped afterwards; skipped with the reason when none answers."""

from __future__ import annotations

import os
import uuid
from urllib.parse import quote

import pytest

SERVER = os.environ.get("TICKETTUNE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_schema():
    """Yield a store URL whose search_path is a new schema (so runs and tests never see each other's tables)."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install 'psycopg[binary]'")
    engine = sqlalchemy.create_engine(SERVER, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"no PostgreSQL server at {SERVER} ({str(exc.orig).splitlines()[0][:120]})")
    schema = f"tickettune_test_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{SERVER}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()
