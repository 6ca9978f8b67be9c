from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy.engine import create_engine, migrate
from tests.kafka_fixtures import kafka_broker, kafka_options, read_topics  # noqa: F401
from tests.support.database import Database, migrated_template
from tests.support.s3 import moto_server, s3_bucket, s3_client, s3_proxy, s3_store  # noqa: F401
from tests.support.services import PostgresServer, create_database, throwaway_postgres

try:  # the Twilio stand-in fixtures
    from tests.twilio_fixtures import *  # noqa: F403
except ImportError:  # pragma: no cover - while the module is being written
    pass


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite database migrated to head, copied by every test that asks for ``db``."""
    return migrated_template(tmp_path_factory.mktemp("sqlite") / "template.db")


@pytest.fixture
async def db(sqlite_template: Path) -> AsyncIterator[Database]:
    """This test's own copy of the migrated database, through the real unit of work (next to the
    template rather than in a ``tmp_path`` of its own: a directory per test costs more than the copy)."""
    database = Database.copy_of(sqlite_template, sqlite_template.with_name(f"{uuid.uuid4().hex}.db"))
    yield database
    await database.dispose()
    database.delete()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: SQLite in a temp dir, or a fresh database on a throwaway PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/callrec.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = create_database(server, f"t_{uuid.uuid4().hex[:12]}")
    migrate(url)
    return url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()
