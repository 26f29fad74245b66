"""Engine, sessions and start-up migrations (Alembic), for SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from learngene_store.settings import StoreSettings

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_ID = 0x46494E45  # "FINE": pg advisory lock serialising concurrent start-ups


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # API and worker processes share the file
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine(settings: StoreSettings) -> Engine:
    return _engine_for(settings.resolved_database_url)


@lru_cache
def _factory_for(url: str) -> sessionmaker[Session]:
    return sessionmaker(_engine_for(url), expire_on_commit=False)


def session_factory(settings: StoreSettings) -> sessionmaker[Session]:
    return _factory_for(settings.resolved_database_url)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(settings: StoreSettings) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once."""
    url = settings.resolved_database_url
    engine = get_engine(settings)
    if engine.dialect.name == "sqlite":
        lock_path = Path(make_url(url).database or "fine.db").with_suffix(".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _upgrade(engine, url)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        try:
            _upgrade(engine, url)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
            conn.commit()


def _upgrade(engine: Engine, url: str, revision: str = "head") -> None:
    _run_alembic(engine, url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(settings: StoreSettings, revision: str) -> None:
    """For operators and tests: step the schema back (data in dropped columns is lost)."""
    _run_alembic(get_engine(settings), settings.resolved_database_url, lambda cfg: command.downgrade(cfg, revision))


def _run_alembic(engine: Engine, url: str, action: Callable[[Config], None]) -> None:
    cfg = alembic_config(url)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:  # batch migrations rebuild tables: foreign keys must be off (outside a transaction)
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                action(cfg)
                if sqlite:
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise RuntimeError(f"migration left dangling foreign keys: {bad[:5]}")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
