"""Engine construction and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.private_paths import create_private_file

if TYPE_CHECKING:  # Alembic is imported only when a migration has to run
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HEAD_REVISION: Final = "0019"
"""The newest migration's revision: tests/integration/test_migrations.py keeps it equal to Alembic's head."""
# Alembic's own version table, as it creates it on SQLite.
_VERSION_TABLE_DDL: Final = (
    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
)

# A connection that finds SQLite's write lock taken polls for it (the busy timeout), so one that
# commits and begins again at once, like a background pass, keeps winning and a request waits for the
# whole pass. The writing units of work of one process over a SQLite engine take turns in FIFO order
# instead (an ``asyncio.Lock`` is fair): a request waits for at most the transaction in progress.
TURN_WAIT_S = 30.0
_turns: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop | None, asyncio.Lock | None]] = (
    weakref.WeakKeyDictionary()
)


def transaction_turns(engine: AsyncEngine) -> asyncio.Lock | None:
    """The lock a unit of work holds from BEGIN to its end on a SQLite engine of ``create_engine``
    (in the running loop); None for other engines."""
    entry = _turns.get(engine.sync_engine)
    if entry is None:
        return None
    loop = asyncio.get_running_loop()
    if entry[0] is not loop or entry[1] is None:
        entry = (loop, asyncio.Lock())
        _turns[engine.sync_engine] = entry
    return entry[1]


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
            # A read-only unit of work takes no write lock: in WAL mode it reads a snapshot.
            read_only = conn.get_execution_options().get("callrec_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        _turns[engine.sync_engine] = (None, None)
        return engine
    kwargs.setdefault("pool_size", 10)
    engine = create_async_engine(url, **kwargs)
    ping_connections_idle_for(engine, IDLE_PING_AFTER_S)
    return engine


# A pooled connection idle longer than this is pinged before use. A busy service reuses connections
# within milliseconds and pays no ping; ``pool_pre_ping`` would cost a BEGIN, a ``;`` and a ROLLBACK
# (three round trips and a transaction) on every unit of work, measured at a sixth of the service's
# database time. A connection that dies while in use (the server restarted mid-burst) fails that one
# unit of work, and SQLAlchemy then recycles every older pooled connection.
IDLE_PING_AFTER_S = 5.0


def ping_connections_idle_for(engine: AsyncEngine, seconds: float) -> None:
    """SQLAlchemy's "pessimistic disconnect handling" recipe, only for connections idle > ``seconds``:
    a dead one is replaced before the unit of work sees it (the pool retries the checkout)."""

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < seconds:
            return
        try:
            engine.sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection idle {seconds:.0f}+ s is gone") from error


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
