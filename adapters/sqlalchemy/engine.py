"""Engine construction and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.private_paths import create_private_file

if TYPE_CHECKING:  # Alembic is imported only when a migration has to run
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HEAD_REVISION: Final = "0013"
"""The newest migration's revision: tests/integration/test_migrations.py keeps it equal to Alembic's head."""
# Alembic's own version table, as it creates it on SQLite.
_VERSION_TABLE_DDL: Final = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)


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
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision``. Synchronous: call it before the event loop starts,
    or from a worker thread.

    A SQLite file already at head is left without loading Alembic, and a new (empty) one gets the
    declared tables and Alembic's stamp of head in one transaction, which builds the same schema as
    running every migration (tests/integration/test_migrations.py compares the two); anything else
    goes through Alembic (``upgrade``).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _private_sqlite_file(parsed.database)
        database = parsed.database
        if revision == "head" and database and database != ":memory:" and not database.startswith("file:"):
            if _sqlite_at_head(database):
                return
    upgrade(url, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def _sqlite_at_head(database: str) -> bool:
    """Whether the SQLite file is at head: already, or now, when it was empty (built and stamped)."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex, CreateTable

    from adapters.sqlalchemy.tables import metadata

    conn = sqlite3.connect(database, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # two processes starting on one new file: the second waits
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" in tables:
            found = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            conn.execute("ROLLBACK")
            return found == [(HEAD_REVISION,)]
        if tables:
            conn.execute("ROLLBACK")
            return False
        dialect = sqlite_dialect.dialect()
        for table in metadata.sorted_tables:
            conn.execute(str(CreateTable(table).compile(dialect=dialect)))
            for index in sorted(table.indexes, key=lambda index: str(index.name)):
                conn.execute(str(CreateIndex(index).compile(dialect=dialect)))
        conn.execute(_VERSION_TABLE_DDL)
        conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD_REVISION,))
        conn.execute("COMMIT")
        return True
    finally:
        conn.close()
