"""Alembic environment: batch mode (SQLite ALTERs), URL from GLITCHDEX_DATABASE_URL."""

from alembic import context
from sqlalchemy import Connection, Engine, engine_from_config, pool

from catalog.database import database_url
from catalog.schema import Base

config = context.config
# alembic.ini leaves the URL empty: the environment variable (or the default file) decides.
url = config.get_main_option("sqlalchemy.url") or database_url()
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Callers (tests, pytest-alembic) may hand over a connection or an engine.
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _migrate(given)
        return
    engine = given if isinstance(given, Engine) else engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        _migrate(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
