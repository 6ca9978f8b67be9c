"""The calls list is index-backed: a page costs the same at call one million as at call one.

The proof is the plan of the exact SQL ``SqlAlchemyCallRepository.page`` emits (captured at the
cursor, parameters and all), with and without a keyset cursor:

- SQLite: ``EXPLAIN QUERY PLAN`` searches ``ix_calls_org_kind_started`` and sorts nothing (no
  ``USE TEMP B-TREE FOR ORDER BY``): rows come out of the index already newest first, so the LIMIT
  stops the scan after one page.
- PostgreSQL, on a throwaway server with tens of thousands of calls across several orgs and fresh
  statistics: ``EXPLAIN (ANALYZE, FORMAT JSON)`` with a cursor deep in the data walks
  ``ix_calls_org_kind_started`` backwards, has no Sort node, and reads about one page of index
  entries (``actual rows`` of the scan ≤ limit + 1), however deep the cursor is.

The ``recording`` filter reads ``calls.recording_state`` (kept in step with the call's own recording
by the unit of work), so every filter, dense or sparse, is a range of
``ix_calls_org_kind_recording_state`` walked in the same keyset order: no join, no sort, one page
read however few calls match.

Each database is filled once per module (bulk inserts, then ``ANALYZE``); each test opens its own
engine on it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.engine import create_engine, migrate
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from application.ports import CallCursor, CallQuery
from domain.model import CallKind
from tests.support.services import PostgresServer, create_database

INDEX = "ix_calls_org_kind_started"
STATE_INDEX = "ix_calls_org_kind_recording_state"
FILTERS = ["available", "processing", "not_recorded", "failed"]
PAGE = 50  # the API's default; the repository is asked for PAGE + 1 to know whether a next page exists
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
ORGS = ["org-a", "org-b", "org-c", "org-d"]
SQLITE_CALLS = 8_000
PG_CALLS = 50_000


@dataclass
class Captured:
    """The SELECTs from ``table`` that went to the database, as the driver got them."""

    table: str
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def listen(self, engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and f"FROM {self.table}" in statement:
                self.statements.append((statement, parameters))

    def only(self) -> tuple[str, Any]:
        assert len(self.statements) == 1, self.statements
        return self.statements[0]


def _calls(count: int, orgs: list[str]) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Calls one second apart across orgs (one in ten a discovery call); nine in ten recorded, four
    in five of those archived, and of the rest about one in twenty failed and one in twenty still
    processing (the sparse filters)."""
    rng = random.Random(20261124)
    for n in range(count):
        call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        org_id = rng.choice(orgs)
        started_at = EPOCH + timedelta(seconds=n)
        recorded = rng.random() < 0.9
        archived = recorded and rng.random() < 0.8
        fate = rng.random()
        status = "failed" if fate < 0.05 else "in_progress" if fate < 0.1 else "archived"
        has_recording = archived or (recorded and status != "archived")
        call = {
            "id": call_id,
            "org_id": org_id,
            "kind": CallKind.DISCOVERY.value if rng.random() < 0.1 else CallKind.CUSTOMER.value,
            "call_sid": f"CA{n:032x}",
            "account_sid": "AC1",
            "from_number": "+15550001111",
            "to_number": "+15550100001",
            "status": "completed",
            "started_at": started_at,
            "answered_at": started_at,
            "ended_at": started_at + timedelta(seconds=30),
            "duration_s": 30,
            "greeting": "Hi.",
            "recorded": recorded,
            "recording_id": None,
            "recording_state": "not_recorded",  # recorded, ended with no recording: no audio
            "version": 1,
        }
        recording = None
        if has_recording:
            status = "archived" if archived else status
            call["recording_state"] = {"archived": "available", "failed": "failed"}.get(status, "processing")
            recording = {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "call_id": call_id,
                "org_id": org_id,
                "kind": call["kind"],
                "call_sid": call["call_sid"],
                "recording_sid": f"RE{n:032x}",
                "status": status,
                "requested_at": started_at,
                "call_started_at": started_at,
                "duration_s": 28,
                "storage_key": f"{org_id}/{call_id}.mp3" if archived else None,
                "size_bytes": 1000,
                "content_type": "audio/mpeg",
                "archived_at": started_at + timedelta(minutes=1) if archived else None,
                "version": 1,
                "updated_at": started_at + timedelta(minutes=1),
            }
            call["recording_id"] = recording["id"]
        yield call, recording


async def _fill(url: str, count: int, *, analyze: bool = True, batch: int = 5000) -> None:
    rows = list(_calls(count, ORGS))
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for start in range(0, count, batch):
                chunk = rows[start : start + batch]
                await conn.execute(insert(t.calls), [call for call, _ in chunk])
                recordings = [rec for _, rec in chunk if rec is not None]
                if recordings:
                    await conn.execute(insert(t.recordings), recordings)
        if analyze:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()


@pytest.fixture
def filled(request: pytest.FixtureRequest) -> str:
    """The URL of the module's filled database named by the test's parameter."""
    url: str = request.getfixturevalue(request.param)
    return url


@pytest.fixture
async def db(filled: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled)
    yield engine
    await engine.dispose()


def _filled_sqlite(tmp_path_factory: pytest.TempPathFactory, *, analyze: bool) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('plan')}/callrec.db"
    migrate(url)
    asyncio.run(_fill(url, SQLITE_CALLS, analyze=analyze))
    return url


@pytest.fixture(scope="module")
def sqlite_without_statistics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """As the service runs it: nothing runs ANALYZE on SQLite."""
    return _filled_sqlite(tmp_path_factory, analyze=False)


@pytest.fixture(scope="module")
def sqlite_analyzed(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _filled_sqlite(tmp_path_factory, analyze=True)


@pytest.fixture(scope="module")
def postgres_filled(postgres_server: PostgresServer) -> str:
    url = create_database(postgres_server, f"plan_{uuid.uuid4().hex[:12]}")
    migrate(url)
    asyncio.run(_fill(url, PG_CALLS))
    return url


SQLITE = pytest.mark.parametrize("filled", ["sqlite_without_statistics", "sqlite_analyzed"], indirect=True)
POSTGRES = pytest.mark.parametrize(
    "filled", [pytest.param("postgres_filled", marks=pytest.mark.postgres)], indirect=True
)


async def _emitted(engine: AsyncEngine, query: CallQuery) -> tuple[str, Any, int]:
    """The SQL and parameters ``page`` sends for ``query``, and how many calls it returned."""
    captured = Captured("calls")
    captured.listen(engine)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        calls = await uow.calls.page(query)
    statement, parameters = captured.only()
    return statement, parameters, len(calls)


async def _emitted_recordings_of_a_page(engine: AsyncEngine, org_id: str) -> tuple[str, Any]:
    """The second query of a list page (``views.list_calls``): the recordings of the page's calls."""
    captured = Captured("recordings")
    captured.listen(engine)
    async with SqlAlchemyUnitOfWork(engine) as uow:
        calls = await uow.calls.page(CallQuery(org_id=org_id, limit=PAGE + 1))
        found = await uow.recordings.get_for_calls([call.id for call in calls[:PAGE]])
    assert found
    return captured.only()


async def _deep_cursor(engine: AsyncEngine, org_id: str, depth: float) -> CallCursor:
    """The keyset position ``depth`` of the way from the org's newest customer call to its oldest."""
    c = t.calls.c
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text("SELECT count(*) FROM calls WHERE org_id = :org AND kind = 'customer'"), {"org": org_id}
            )
        ).scalar_one()
        row = (
            await conn.execute(
                t.calls.select()
                .with_only_columns(c.started_at, c.id)
                .where(c.org_id == org_id, c.kind == "customer")
                .order_by(c.started_at.desc(), c.id.desc())
                .offset(int(total * depth))
                .limit(1)
            )
        ).one()
    return CallCursor(row.started_at, row.id)


# --- SQLite ---------------------------------------------------------------------------------------


async def _sqlite_explain(engine: AsyncEngine, statement: str, parameters: Any) -> list[str]:
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)).all()
    return [row[-1] for row in rows]


async def _sqlite_plan(engine: AsyncEngine, query: CallQuery) -> tuple[list[str], int]:
    statement, parameters, returned = await _emitted(engine, query)
    return await _sqlite_explain(engine, statement, parameters), returned


@SQLITE
@pytest.mark.parametrize("recording", [None, *FILTERS])
async def test_sqlite_page_searches_the_index_and_sorts_nothing(
    db: AsyncEngine, recording: str | None
) -> None:
    engine = db
    deep = await _deep_cursor(engine, ORGS[0], 0.9)
    index = INDEX if recording is None else STATE_INDEX
    for after in (None, deep):
        query = CallQuery(org_id=ORGS[0], limit=PAGE + 1, after=after, recording_status=recording)
        plan, returned = await _sqlite_plan(engine, query)
        text_plan = "\n".join(plan)
        assert len(plan) == 1 and plan[0].startswith(f"SEARCH calls USING INDEX {index} "), text_plan
        if recording is not None:
            assert "recording_state=?" in text_plan, text_plan  # a range of the index, not a filter
        if after is not None:
            assert "(started_at,id)<(?,?)" in text_plan.replace(" ", ""), text_plan
        assert returned > 0


@SQLITE
async def test_sqlite_date_range_page_uses_the_index(db: AsyncEngine) -> None:
    engine = db
    query = CallQuery(
        org_id=ORGS[1],
        limit=PAGE + 1,
        started_from=EPOCH + timedelta(seconds=200),
        started_to=EPOCH + timedelta(seconds=1500),
    )
    plan, returned = await _sqlite_plan(engine, query)
    text_plan = "\n".join(plan)
    assert any(step.startswith("SEARCH calls USING INDEX " + INDEX) for step in plan), text_plan
    assert "TEMP B-TREE" not in text_plan, text_plan
    assert returned == PAGE + 1


@SQLITE
async def test_sqlite_recordings_of_a_page_are_looked_up_by_their_calls_recording_id(db: AsyncEngine) -> None:
    plan = await _sqlite_explain(db, *await _emitted_recordings_of_a_page(db, ORGS[3]))
    assert plan == [
        "SEARCH calls USING INDEX sqlite_autoindex_calls_1 (id=?)",
        "SEARCH recordings USING INDEX sqlite_autoindex_recordings_1 (id=?)",
    ], plan


# --- PostgreSQL -----------------------------------------------------------------------------------


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


async def _pg_explain(engine: AsyncEngine, statement: str, parameters: Any) -> dict[str, Any]:
    """``EXPLAIN ANALYZE`` of the statement as sent, through the driver with the same parameters."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        value = await driver.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, *parameters)
    plan = json.loads(value) if isinstance(value, str) else value
    node: dict[str, Any] = plan[0]["Plan"]
    return node


async def _pg_plan(engine: AsyncEngine, query: CallQuery) -> tuple[dict[str, Any], int]:
    statement, parameters, returned = await _emitted(engine, query)
    return await _pg_explain(engine, statement, parameters), returned


def _calls_scan(plan: dict[str, Any]) -> dict[str, Any]:
    scans = [node for node in _nodes(plan) if node.get("Relation Name") == "calls"]
    assert len(scans) == 1, json.dumps(plan, indent=1)
    return scans[0]


def _assert_walks_the_index(plan: dict[str, Any], *, max_rows: float, index: str = INDEX) -> dict[str, Any]:
    """No sort, and the calls are read from the keyset index backwards, at most ``max_rows`` of them."""
    dump = json.dumps(plan, indent=1)
    assert plan["Node Type"] == "Limit", dump
    assert not [n for n in _nodes(plan) if n["Node Type"] in ("Sort", "Incremental Sort")], dump
    scan = _calls_scan(plan)
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), dump
    assert scan["Index Name"] == index, dump
    assert scan["Scan Direction"] == "Backward", dump
    assert scan["Actual Rows"] <= max_rows, dump
    return scan


@POSTGRES
@pytest.mark.parametrize("depth", [0.0, 0.5, 0.98])
async def test_postgres_page_walks_the_index_backwards_and_reads_one_page(
    db: AsyncEngine, depth: float
) -> None:
    after = await _deep_cursor(db, ORGS[2], depth) if depth else None
    plan, returned = await _pg_plan(db, CallQuery(org_id=ORGS[2], limit=PAGE + 1, after=after))
    assert returned == PAGE + 1
    scan = _assert_walks_the_index(plan, max_rows=PAGE + 1)
    assert scan.get("Rows Removed by Filter", 0) == 0, json.dumps(plan, indent=1)
    if after is not None:
        # the keyset seeks in the index; it does not read and then filter the newer rows
        assert "ROW(started_at, (id)::text) < ROW(" in scan["Index Cond"], json.dumps(plan, indent=1)


@POSTGRES
async def test_postgres_date_range_page_walks_the_index(db: AsyncEngine) -> None:
    after = await _deep_cursor(db, ORGS[1], 0.5)
    query = CallQuery(
        org_id=ORGS[1],
        limit=PAGE + 1,
        after=after,
        started_from=EPOCH + timedelta(seconds=PG_CALLS // 10),
        started_to=EPOCH + timedelta(seconds=PG_CALLS * 9 // 10),
    )
    plan, returned = await _pg_plan(db, query)
    assert returned == PAGE + 1
    scan = _assert_walks_the_index(plan, max_rows=PAGE + 1)
    assert "started_at >=" in scan["Index Cond"], json.dumps(plan, indent=1)


@POSTGRES
@pytest.mark.parametrize("recording", FILTERS)
@pytest.mark.parametrize("depth", [0.0, 0.9])
async def test_postgres_recording_filter_page_reads_one_page_however_sparse(
    db: AsyncEngine, recording: str, depth: float
) -> None:
    """Each filter, dense (``available``: ~70% of the calls) or sparse (``processing``, ``failed``:
    ~1% each), reads its range of ``ix_calls_org_kind_recording_state`` and at most one page of it.

    Walked backwards, in the keyset order; or, when what is left of the range past the cursor is
    smaller than a page, possibly read whole and sorted (no more rows than a page either way).
    """
    after = await _deep_cursor(db, ORGS[2], depth) if depth else None
    query = CallQuery(org_id=ORGS[2], limit=PAGE + 1, after=after, recording_status=recording)
    plan, returned = await _pg_plan(db, query)
    dump = json.dumps(plan, indent=1)
    assert returned > 0
    [scan] = [node for node in _nodes(plan) if "Index Name" in node]
    assert scan["Index Name"] == STATE_INDEX, dump
    assert "(recording_state)::text = " in scan["Index Cond"], dump
    assert scan["Actual Rows"] <= PAGE + 1, dump
    assert not [n for n in _nodes(plan) if n.get("Rows Removed by Filter", 0) or "Filter" in n], dump
    if [n for n in _nodes(plan) if n["Node Type"] in ("Sort", "Incremental Sort")]:
        assert returned < PAGE + 1, dump  # the rest of the range was less than a page
    else:
        assert scan["Scan Direction"] == "Backward", dump


@POSTGRES
async def test_postgres_recordings_of_a_page_are_looked_up_by_their_calls_recording_id(
    db: AsyncEngine,
) -> None:
    plan = await _pg_explain(db, *await _emitted_recordings_of_a_page(db, ORGS[3]))
    dump = json.dumps(plan, indent=1)
    scans = [node for node in _nodes(plan) if node.get("Relation Name") == "recordings"]
    assert [scan["Node Type"] for scan in scans] in (["Index Scan"], ["Bitmap Heap Scan"]), dump
    indexes = {node.get("Index Name") for node in _nodes(plan)} - {None}
    assert indexes == {"pk_calls", "pk_recordings"}, dump
    assert scans[0]["Actual Rows"] * scans[0].get("Actual Loops", 1) <= PAGE, dump


# --- the Calls page's caller filter and its newer page --------------------------------------------

CALLER_INDEX = "ix_calls_org_kind_from_started"


@SQLITE
async def test_sqlite_caller_page_searches_the_caller_index(db: AsyncEngine) -> None:
    for prefix in ("+44", "+15550001111"):
        plan, _ = await _sqlite_plan(db, CallQuery(org_id=ORGS[0], limit=PAGE + 1, caller_prefix=prefix))
        text_plan = "\n".join(plan)
        assert plan[0].startswith(f"SEARCH calls USING INDEX {CALLER_INDEX} "), text_plan
        assert "from_number>? AND from_number<?" in text_plan.replace("=", ""), text_plan


@SQLITE
async def test_sqlite_newer_page_searches_the_index_forwards_and_sorts_nothing(db: AsyncEngine) -> None:
    before = await _deep_cursor(db, ORGS[0], 0.5)
    plan, returned = await _sqlite_plan(db, CallQuery(org_id=ORGS[0], limit=PAGE + 1, before=before))
    assert len(plan) == 1 and plan[0].startswith(f"SEARCH calls USING INDEX {INDEX} "), plan
    assert "(started_at,id)>(?,?)" in plan[0].replace(" ", ""), plan
    assert returned == PAGE + 1


@POSTGRES
async def test_postgres_caller_page_reads_at_most_a_page_whether_the_caller_is_rare_or_common(
    db: AsyncEngine,
) -> None:
    """A caller with no calls is a seek in the caller index; one with every call (the fill's) is read
    from either index, a page of rows and no more."""
    plan, returned = await _pg_plan(db, CallQuery(org_id=ORGS[2], limit=PAGE + 1, caller_prefix="+44"))
    assert returned == 0 and _calls_scan(plan).get("Index Name") == CALLER_INDEX, json.dumps(plan, indent=1)
    after = await _deep_cursor(db, ORGS[2], 0.5)
    plan, returned = await _pg_plan(
        db, CallQuery(org_id=ORGS[2], limit=PAGE + 1, after=after, caller_prefix="+1555")
    )
    dump = json.dumps(plan, indent=1)
    assert returned == PAGE + 1
    scan = _calls_scan(plan)
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), dump
    assert scan["Actual Rows"] <= PAGE + 1, dump


@POSTGRES
async def test_postgres_newer_page_walks_the_index_forwards_and_reads_one_page(db: AsyncEngine) -> None:
    before = await _deep_cursor(db, ORGS[2], 0.5)
    plan, returned = await _pg_plan(db, CallQuery(org_id=ORGS[2], limit=PAGE + 1, before=before))
    dump = json.dumps(plan, indent=1)
    assert returned == PAGE + 1
    scan = _calls_scan(plan)
    assert (scan["Index Name"], scan["Scan Direction"]) == (INDEX, "Forward"), dump
    assert scan["Actual Rows"] <= PAGE + 1 and "ROW(started_at, (id)::text) > ROW(" in scan["Index Cond"], (
        dump
    )


@SQLITE
async def test_sqlite_page_hiding_non_engagement_still_walks_the_keyset_index(db: AsyncEngine) -> None:
    plan, returned = await _sqlite_plan(
        db, CallQuery(org_id=ORGS[0], limit=PAGE + 1, hide_non_engagement=True)
    )
    assert len(plan) == 1 and plan[0].startswith(f"SEARCH calls USING INDEX {INDEX} "), plan
    assert returned == PAGE + 1


@POSTGRES
async def test_postgres_page_hiding_non_engagement_walks_the_index_backwards(db: AsyncEngine) -> None:
    """The verdict columns are a filter on the keyset walk: it reads the hidden calls it passes, here none."""
    after = await _deep_cursor(db, ORGS[2], 0.5)
    query = CallQuery(org_id=ORGS[2], limit=PAGE + 1, after=after, hide_non_engagement=True)
    plan, returned = await _pg_plan(db, query)
    assert returned == PAGE + 1
    _assert_walks_the_index(plan, max_rows=PAGE + 1)
