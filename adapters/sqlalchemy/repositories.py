"""Repositories of organizations, calls and recordings: their mappings and their queries.

Every statement is built once (module level, or once per shape of the calls list) with bind
parameters: SQLAlchemy memoizes a statement's cache key on the statement object, so executing a
prebuilt one skips building, coercing and keying it, and finds its compiled form in the engine's cache.

``calls.recording_state`` is what the list shows of a call's recording (``application.views``
``recording_view``'s status) so that the ``recording=`` filter is a range of an index. It is no field
of the Call: the unit of work keeps it in step in the transaction that changes the call or its own
recording (``SqlAlchemyCallRepository.derived``, ``SqlAlchemyRecordingRepository.flush``).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    tuple_,
    update,
)

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Children, Embedded, Json
from adapters.sqlalchemy.repository import Repository
from application.ports import CallQuery
from application.views import RECORDING_STATUSES, own_recording_view, recording_view
from domain import events as ev
from domain.model import (
    ENDED_STATUSES,
    PURGE_FILTERED,
    SETTLED_STATUSES,
    Call,
    Organization,
    Recording,
    RecordingStatus,
)

_c, _r, _p = t.calls.c, t.recordings.c, t.organization_phone_numbers.c


class SqlAlchemyOrganizationRepository(Repository[Organization]):
    mapping = AggregateMapping(
        Organization,
        t.organizations,
        fields={
            "phone_numbers": Children(t.organization_phone_numbers, key="org_id", value="number"),
            "number_recording": Json(),
        },
    )
    _by_phone_number = select(t.organizations).where(
        t.organizations.c.id.in_(select(_p.org_id).where(_p.number == bindparam("number")).scalar_subquery())
    )

    async def get_by_phone_number(self, number: str) -> Organization | None:
        return await self._first(self._by_phone_number, {"number": number})


RECORDING_STATES = frozenset(RECORDING_STATUSES)
_ENDED = [s.value for s in ENDED_STATUSES]


class _PageShape(NamedTuple):
    kinds: tuple[str, ...]
    platform: bool  # org_id IS NULL
    started_from: bool
    started_to: bool
    after: bool
    recording: bool
    before: bool = False
    caller: bool = False
    engaged: bool = False


@functools.cache
def _page(shape: _PageShape) -> Select[Any]:
    """The calls list's statement for one combination of filters; the rest is bind parameters."""
    where: list[ColumnElement[bool]] = [_c.kind.in_(shape.kinds)]
    where.append(_c.org_id.is_(None) if shape.platform else _c.org_id == bindparam("org_id"))
    if shape.recording:  # ix_calls_org_kind_recording_state, else ix_calls_org_kind_started
        where.append(_c.recording_state == bindparam("recording_state"))
    if shape.started_from:
        where.append(_c.started_at >= bindparam("started_from", type_=_c.started_at.type))
    if shape.started_to:
        where.append(_c.started_at < bindparam("started_to", type_=_c.started_at.type))
    if shape.after:
        cursor = tuple_(
            bindparam("after_started_at", type_=_c.started_at.type), bindparam("after_id", type_=_c.id.type)
        )
        where.append(tuple_(_c.started_at, _c.id) < cursor)
    if shape.before:
        cursor = tuple_(
            bindparam("after_started_at", type_=_c.started_at.type), bindparam("after_id", type_=_c.id.type)
        )
        where.append(tuple_(_c.started_at, _c.id) > cursor)
    if shape.caller:  # a range of ix_calls_org_kind_from_started; LIKE keeps it exact
        where.append(_c.from_number.between(bindparam("caller_low"), bindparam("caller_high")))
        where.append(_c.from_number.like(bindparam("caller_like")))
    if shape.engaged:
        where.append(_c.non_engagement_reason.is_(None))
        where.append(or_(_c.scorable.is_(None), _c.scorable.is_(True)))
    order = (_c.started_at.asc(), _c.id.asc()) if shape.before else (_c.started_at.desc(), _c.id.desc())
    return select(t.calls).where(and_(*where)).order_by(*order).limit(bindparam("limit", type_=Integer()))


E164_MAX_LENGTH = 16  # "+" and at most 15 digits


_SETTLING = (
    select(t.calls)
    .select_from(t.calls.outerjoin(t.recordings, _r.id == _c.recording_id))
    .where(
        _c.settled_at.is_(None),  # ix_calls_settling
        _c.ended_at.is_not(None),
        _c.ended_at <= bindparam("ended_before", type_=_c.ended_at.type),
        or_(_r.id.is_(None), _r.status.in_([s.value for s in SETTLED_STATUSES])),
    )
    .order_by(_c.ended_at, _c.id)
    .limit(bindparam("limit", type_=Integer()))
)

# A placeholder a new call is inserted with when its own recording is not in the unit of work, set
# right after from the database by RESTATE.
_UNKNOWN = "processing"


def _state_of_recording(r: Any) -> Any:
    """SQL twin of ``own_recording_view``'s status (the migration 0014 backfill has its own copy)."""
    archived = [RecordingStatus.ARCHIVED.value, RecordingStatus.TWILIO_DELETED.value]
    return case(
        (and_(r.status.in_(archived), r.storage_key.is_not(None)), "available"),
        (r.status == RecordingStatus.ABSENT.value, "not_recorded"),
        (r.status == RecordingStatus.FAILED.value, "failed"),
        (and_(r.status == RecordingStatus.PURGED.value, r.purge_reason == PURGE_FILTERED), "not_recorded"),
        (r.status == RecordingStatus.PURGED.value, "purged"),
        else_="processing",
    )


# Each call's recording state from the database, as recording_view says it (its own recording's, or
# whether the call has ended when it has none).
RESTATE = (
    update(t.calls)
    .where(_c.id.in_(bindparam("b_ids", expanding=True)))
    .values(
        recording_state=case(
            (~_c.recorded, "not_recorded"),
            else_=func.coalesce(
                select(_state_of_recording(_r)).where(_r.id == _c.recording_id).scalar_subquery(),
                case((_c.status.in_(_ENDED), "not_recorded"), else_="processing"),
            ),
        )
    )
)


class SqlAlchemyCallRepository(Repository[Call]):
    mapping = AggregateMapping(
        Call,
        t.calls,
        fields={"consent": Embedded(), "legal_hold": Embedded(prefix="legal_hold_")},
        derived=["recording_state"],
    )
    _by_sid = select(t.calls).where(_c.call_sid == bindparam("call_sid"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recordings: SqlAlchemyRecordingRepository | None = None  # of the same unit of work
        self.stated: set[str] = set()  # calls whose row the last flush wrote with their recording state
        self._restate: list[str] = []

    def derived(self, call: Call) -> Mapping[str, Any]:
        """The call's recording state, when this unit of work knows it: the call has no recording (or
        is not recorded), or its own recording is written in the same transaction. Otherwise the
        column is left alone: the recording's own writes keep it in step."""
        if call.recorded and call.recording_id is not None:
            own = self.recordings.changing(call.recording_id) if self.recordings is not None else None
            if own is None:
                if call.id in self.tracked and self.tracked[call.id].new:
                    self._restate.append(call.id)
                    return {"recording_state": _UNKNOWN}
                return {}
            state = own_recording_view(own).status
        else:
            state = recording_view(call, None).status
        self.stated.add(call.id)
        return {"recording_state": state}

    async def flush(self, now: datetime) -> list[ev.Event]:
        self.stated.clear()
        self._restate.clear()
        events = await super().flush(now)
        if self._restate:
            await self.conn.execute(RESTATE, {"b_ids": self._restate})
        return events

    async def get_by_sid(self, call_sid: str) -> Call | None:
        return await self._first(self._by_sid, {"call_sid": call_sid})

    async def page(self, query: CallQuery) -> list[Call]:
        if query.recording_status is not None and query.recording_status not in RECORDING_STATES:
            raise ValueError(f"unknown recording status filter {query.recording_status!r}")
        shape = _PageShape(
            kinds=tuple(k.value for k in query.kinds),
            platform=query.org_id is None,
            started_from=query.started_from is not None,
            started_to=query.started_to is not None,
            after=query.after is not None,
            recording=query.recording_status is not None,
            before=query.before is not None,
            caller=query.caller_prefix is not None,
            engaged=query.hide_non_engagement,
        )
        params: dict[str, Any] = {
            "org_id": query.org_id,
            "recording_state": query.recording_status,
            "started_from": query.started_from,
            "started_to": query.started_to,
            "limit": query.limit,
        }
        if query.after is not None and query.before is not None:
            raise ValueError("a calls page is either after or before a position, not both")
        position = query.after or query.before
        if position is not None:
            params["after_started_at"], params["after_id"] = position.started_at, position.id
        if query.caller_prefix is not None:
            prefix = query.caller_prefix
            if not prefix[1:].isdigit() or prefix[0] != "+" or len(prefix) > E164_MAX_LENGTH:
                raise ValueError(f"caller prefix {prefix!r} is not a '+' and digits")
            params["caller_low"] = prefix
            params["caller_high"] = prefix + "9" * (E164_MAX_LENGTH - len(prefix))
            params["caller_like"] = prefix + "%"
        return await self._all(_page(shape), params)

    async def settling(self, *, ended_before: datetime, limit: int) -> list[Call]:
        return await self._all(_SETTLING, {"ended_before": ended_before, "limit": limit})


def _of_calls(where: ColumnElement[bool]) -> Select[Any]:
    """The calls' own recordings (``calls.recording_id``), not their additional ones."""
    return select(t.recordings).join(t.calls, _c.recording_id == _r.id).where(where)


_RECORDING_STATE_OF_ITS_CALL = (
    update(t.calls)
    .where(_c.id == bindparam("b_call"), _c.recording_id == bindparam("b_recording"))
    .values(recording_state=case((_c.recorded, bindparam("b_state")), else_="not_recorded"))
)


class SqlAlchemyRecordingRepository(Repository[Recording]):
    mapping = AggregateMapping(
        Recording, t.recordings, fields={"audio": Embedded(), "pauses": Json()}, derived=["paused_since"]
    )
    _by_sid = select(t.recordings).where(_r.recording_sid == bindparam("recording_sid"))
    _for_call = _of_calls(_c.id == bindparam("call_id"))
    _for_calls = _of_calls(_c.id.in_(bindparam("call_ids", expanding=True)))
    _every_for_call = (
        select(t.recordings).where(_r.call_id == bindparam("call_id")).order_by(_r.requested_at, _r.id)
    )
    _stuck = (
        select(t.recordings)
        .where(
            _r.status.in_(bindparam("statuses", expanding=True)),
            # ix_recordings_status_updated; rows written before migration 0002 have no updated_at
            or_(
                _r.updated_at < bindparam("updated_before", type_=_r.updated_at.type),
                _r.updated_at.is_(None),
            ),
        )
        .order_by(_r.updated_at, _r.id)
        .limit(bindparam("limit", type_=Integer()))
    )

    _paused_too_long = (
        select(t.recordings)
        .join(t.calls, _c.id == _r.call_id)
        .where(
            _r.paused_since.is_not(None),  # ix_recordings_paused_since
            or_(
                _r.paused_since <= bindparam("paused_before", type_=_r.paused_since.type),
                _c.ended_at.is_not(None),
            ),
        )
        .order_by(_r.paused_since, _r.id)
        .limit(bindparam("limit", type_=Integer()))
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: SqlAlchemyCallRepository | None = None  # of the same unit of work

    def derived(self, recording: Recording) -> Mapping[str, Any]:
        """When the pause in force began (None: not paused): what the automatic resume looks for."""
        pause = recording.open_pause
        return {"paused_since": pause.paused_at if pause is not None else None}

    async def paused_too_long(self, *, paused_before: datetime, limit: int) -> list[Recording]:
        """Recordings paused since before ``paused_before``, or whose call has ended, oldest first."""
        return await self._all(self._paused_too_long, {"paused_before": paused_before, "limit": limit})

    async def flush(self, now: datetime) -> list[ev.Event]:
        """Write the recordings, then the recording state of each call whose own recording changed
        it, unless the call's row was just written with it (one statement for all of them)."""
        events = await super().flush(now)
        stated = self.calls.stated if self.calls is not None else set()
        changed = []
        for recording, loaded in self.written:
            if recording.call_id in stated:
                continue
            state = own_recording_view(recording).status
            if loaded is not None and state == own_recording_view(self.mapping.load(loaded.row)).status:
                continue
            changed.append({"b_call": recording.call_id, "b_recording": recording.id, "b_state": state})
        if changed:
            await self.conn.execute(_RECORDING_STATE_OF_ITS_CALL, changed)
        return events

    async def get_by_sid(self, recording_sid: str) -> Recording | None:
        return await self._first(self._by_sid, {"recording_sid": recording_sid})

    async def get_for_call(self, call_id: str) -> Recording | None:
        return await self._first(self._for_call, {"call_id": call_id})

    async def get_for_calls(self, call_ids: list[str]) -> dict[str, Recording]:
        if not call_ids:
            return {}
        found = await self._all(self._for_calls, {"call_ids": call_ids})
        return {rec.call_id: rec for rec in found}

    async def for_call(self, call_id: str) -> list[Recording]:
        return await self._all(self._every_for_call, {"call_id": call_id})

    async def stuck(
        self, *, statuses: Collection[RecordingStatus], updated_before: datetime, limit: int
    ) -> list[Recording]:
        params = {"statuses": [s.value for s in statuses], "updated_before": updated_before, "limit": limit}
        return await self._all(self._stuck, params)
