"""Alembic migrations upgrade a populated registry without losing rows (SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import text

from fine_zoo.settings import Settings
from learngene_store.db import _upgrade, downgrade, get_engine, migrate

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(home=tmp_path)
        return
    name = f"fine_test_mig_{secrets.token_hex(4)}"
    try:
        conn = psycopg2.connect(PG_ADMIN)
    except psycopg2.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield Settings(home=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        get_engine(Settings(home=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:5432/{name}")).dispose()
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _head() -> str:
    """The newest revision (whatever migration is last in the chain)."""
    from alembic.script import ScriptDirectory

    from learngene_store.db import alembic_config

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_upgrade_keeps_rows(settings: Settings) -> None:
    engine = get_engine(settings)
    url = settings.resolved_database_url
    _upgrade(engine, url, "0001")
    with engine.begin() as conn:
        now = "2026-01-01 00:00:00"
        conn.execute(text("INSERT INTO learngenes VALUES ('lg','" + "a" * 64 + "',1,64,32,2,4,4,8,1,10,'digits',1,"
                          "'[64]','{}','anonymous',:t)"), {"t": now})
        conn.execute(text("INSERT INTO jobs (id, owner, request_hash, spec, learngene_id, dataset, method, status, "
                          "step, total, cancel_requested, attempts, created_at, updated_at) VALUES ('job_1', "
                          "'anonymous', 'h', '{}', 'lg', 'digits', 'fine', 'succeeded', 3, 3, false, 1, :t, :t)"),
                     {"t": now})
        conn.execute(text("INSERT INTO checkpoints VALUES ('ckpt_1','job_1','lg','fine','digits',2,64,'{}','{}',"
                          "'anonymous',:t)"), {"t": now})
    migrate(settings)
    migrate(settings)  # idempotent
    with engine.connect() as conn:
        assert conn.execute(text("SELECT kind, learngene_id FROM jobs")).one() == ("init", "lg")
        assert conn.execute(text("SELECT job_id FROM checkpoints")).scalar() == "job_1"
        # checkpoints from before issue 17 were evaluated before they were registered: their metrics are ready
        assert conn.execute(text("SELECT metrics_status, eval_attempts, eval_cancel_requested FROM checkpoints")
                            ).one() in (("ready", 0, False), ("ready", 0, 0))
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
        # rows from before accounts: visible to all (public), and the newest is the `default` alias target
        assert conn.execute(text("SELECT public FROM learngenes")).scalar() in (True, 1)
        assert conn.execute(text("SELECT learngene_id FROM aliases WHERE name = 'default'")).scalar() == "lg"
    # and back down, and up again
    downgrade(settings, "0001")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM checkpoints")).scalar() == 1
    _upgrade(engine, url)
