"""Alembic environment: the connection handed over by learngene_store.db.migrate, or the settings' URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from learngene_store.models import Base

config = context.config
target_metadata = Base.metadata
if config.config_file_name is not None and not config.get_main_option("sqlalchemy.url"):
    # The `alembic` command (learngene_store/alembic.ini): the database the services use.
    from logging.config import fileConfig

    from learngene_store.settings import StoreSettings

    fileConfig(config.config_file_name, disable_existing_loggers=False)
    config.set_main_option("sqlalchemy.url", StoreSettings().resolved_database_url.replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
