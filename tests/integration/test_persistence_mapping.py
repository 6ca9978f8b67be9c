"""The aggregate mappings: every field has a column (or says why not), and every field survives a round trip.

Each repository's ``AggregateMapping`` is built when ``adapters.sqlalchemy`` is imported and refuses a
field without a column or a column without a field, so a forgotten column fails every test here.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, MetaData, Text, delete
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import tables as t
from adapters.sqlalchemy.mapping import AggregateMapping, Embedded, Json, MappingError, Spec
from adapters.sqlalchemy.repositories import (
    SqlAlchemyCallRepository,
    SqlAlchemyOrganizationRepository,
    SqlAlchemyRecordingRepository,
)
from adapters.sqlalchemy.repository import Repository
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from adapters.sqlalchemy.webhooks import (
    SqlAlchemyWebhookDeliveryRepository,
    SqlAlchemyWebhookEndpointRepository,
)
from domain.model import Call, Organization, Recording
from domain.webhooks import DeliveryAttempt, WebhookDelivery, WebhookEndpoint


@dataclasses.dataclass
class RecordingWithSurprise(Recording):
    surprise: str | None = None


RECORDING_FIELDS: dict[str, Spec] = {"audio": Embedded(), "pauses": Json()}


def test_a_field_without_a_column_is_refused() -> None:
    with pytest.raises(
        MappingError, match=r"RecordingWithSurprise\.surprise has no column recordings\.surprise"
    ):
        AggregateMapping(
            RecordingWithSurprise, t.recordings, fields=RECORDING_FIELDS, derived=["paused_since"]
        )
    # Declared as no column, it is accepted.
    AggregateMapping(
        RecordingWithSurprise,
        t.recordings,
        fields=RECORDING_FIELDS,
        derived=["paused_since"],
        exclude=["surprise"],
    )


CALL_FIELDS = {"consent": Embedded(), "legal_hold": Embedded(prefix="legal_hold_")}


def test_a_column_without_a_field_is_refused() -> None:
    calls = t.calls.to_metadata(MetaData())
    calls.append_column(Column("surprise", Text))
    with pytest.raises(MappingError, match=r"calls columns \['surprise'\] map to no field of Call"):
        AggregateMapping(Call, calls, fields=CALL_FIELDS, derived=["recording_state"])
    # Declared as derived (written by the repository, not from a field), it is accepted.
    AggregateMapping(Call, calls, fields=CALL_FIELDS, derived=["recording_state", "surprise"])


def test_every_aggregate_maps_every_column_of_its_table() -> None:
    repositories: list[type[Repository[Any]]] = [
        SqlAlchemyOrganizationRepository,
        SqlAlchemyCallRepository,
        SqlAlchemyRecordingRepository,
        SqlAlchemyWebhookEndpointRepository,
        SqlAlchemyWebhookDeliveryRepository,
    ]
    for repository in repositories:
        mapping = repository.mapping
        written = {column for f in mapping.fields for column in f.columns}
        assert written | {"updated_at", *mapping.derived} >= set(mapping.table.c.keys()), mapping.table.name


# --- round trip: values for every field, derived from the domain's type hints --------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=16)
MOMENT = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
NUMBER = st.from_regex(r"\+1555[0-9]{7}", fullmatch=True)


def values(hint: Any) -> st.SearchStrategy[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        (inner,) = [a for a in get_args(hint) if a is not type(None)]
        return st.none() | values(inner)
    if get_origin(hint) is list:
        return st.lists(values(get_args(hint)[0]), max_size=3)
    if get_origin(hint) is dict:
        key, value = get_args(hint)
        return st.dictionaries(values(key), values(value), max_size=3)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return aggregates(hint)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: TEXT,
        bool: st.booleans(),
        int: st.integers(0, 2**31 - 1),
        datetime: MOMENT,
    }
    return simple[hint]


def fields_of(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls if dataclasses.is_dataclass(cls) else cls.__init__)  # type: ignore[misc]
    return {name: hints[name] for name in inspect.signature(cls).parameters if name != "events"}


def aggregates(cls: type, **fixed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{name: fixed.get(name, values(hint)) for name, hint in fields_of(cls).items()})


def with_ids(cls: type, **fixed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return aggregates(cls, id=st.just(f"{cls.__name__.lower()}-1"), version=st.just(0), **fixed)


ORGS = with_ids(Organization, phone_numbers=st.lists(NUMBER, max_size=3))
CALLS = with_ids(Call)
RECORDINGS = with_ids(Recording, call_id=st.just("call-1"))
ENDPOINTS = with_ids(WebhookEndpoint)
DELIVERIES = with_ids(
    WebhookDelivery,
    endpoint_id=st.just("webhookendpoint-1"),
    new_attempts=st.just([]),
    attempt_count=st.just(0),
)
ATTEMPTS = st.lists(aggregates(DeliveryAttempt, delivery_id=st.just("webhookdelivery-1")), max_size=3)


def same_fields(loaded: Any, expected: Any) -> dict[str, tuple[Any, Any]]:
    """The fields that differ (phone numbers compared as a set: their order is not kept)."""
    differ = {}
    for name in fields_of(type(expected)):
        if name in ("new_attempts", "version"):
            continue
        got, want = getattr(loaded, name), getattr(expected, name)
        if name == "phone_numbers":
            got, want = sorted(got), sorted(want)
        if got != want:
            differ[name] = (got, want)
    return differ


def repositories(uow: SqlAlchemyUnitOfWork) -> list[Any]:
    return [uow.organizations, uow.calls, uow.recordings, uow.webhook_endpoints, uow.webhook_deliveries]


async def empty(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            await conn.execute(delete(table))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.tuples(ORGS, CALLS, RECORDINGS, ENDPOINTS, DELIVERIES),
    second=st.tuples(ORGS, CALLS, RECORDINGS, ENDPOINTS, DELIVERIES),
    attempts=ATTEMPTS,
)
async def test_every_field_of_every_aggregate_survives_insert_update_and_load(
    engine: AsyncEngine, first: tuple[Any, ...], second: tuple[Any, ...], attempts: list[DeliveryAttempt]
) -> None:
    attempts = [dataclasses.replace(a, number=n) for n, a in enumerate(attempts, 1)]
    first[-1].new_attempts = list(attempts)
    try:
        async with SqlAlchemyUnitOfWork(engine) as uow:
            for repository, aggregate in zip(repositories(uow), first, strict=True):
                repository.add(aggregate)
            await uow.commit()
        assert first[-1].new_attempts == []

        async with SqlAlchemyUnitOfWork(engine) as uow:
            for repository, aggregate, changed in zip(repositories(uow), first, second, strict=True):
                loaded = await repository.get(aggregate.id)
                assert same_fields(loaded, aggregate) == {}
                assert loaded.version == 0
                for name in fields_of(type(changed)):
                    if name not in ("id", "version", "new_attempts"):
                        setattr(loaded, name, getattr(changed, name))
            assert await uow.webhook_deliveries.attempts(["webhookdelivery-1"]) == (
                {"webhookdelivery-1": attempts} if attempts else {}
            )
            await uow.commit()

        async with SqlAlchemyUnitOfWork(engine) as uow:
            for repository, aggregate, changed in zip(repositories(uow), first, second, strict=True):
                loaded = await repository.get(aggregate.id)
                assert same_fields(loaded, changed) == {}
                # A change bumps the version; an update to equal values writes nothing.
                assert loaded.version == (1 if same_fields(changed, aggregate) else 0)
    finally:
        await empty(engine)
