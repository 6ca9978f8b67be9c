"""Engine construction and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.private_paths import create_private_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _private_sqlite_file(database: str | None) -> None:
    """Create a new SQLite database file ``0600`` (its new directories ``0700``) before SQLite does.

    SQLite would create it ``0644`` less the umask, readable by every local user, and it gives the
    ``-wal`` and ``-shm`` files it makes next to a database the database file's own mode: so all three
    stay private. An existing file is left as it is.
    """
    if database and database != ":memory:" and not database.startswith("file:"):
        create_private_file(Path(database))


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine. On SQLite: WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction;
    a new database file is readable by its owner only.

    SQLite upgrades a read transaction to a write lazily and answers SQLITE_BUSY at once when two
    connections try that together; taking the write lock at BEGIN makes writers queue instead.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_sqlite_file(parsed.database)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision``. Synchronous: call it before the event loop starts,
    or from a worker thread."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_sqlite_file(parsed.database)
    command.upgrade(alembic_config(url), revision)
