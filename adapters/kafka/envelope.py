"""The contract's message shape: a JSON envelope around the event's own fields, plus two headers.

Value: ``{"id", "type", "occurred_at", "org_id", "aggregate_id", "data"}``; key: the aggregate's id;
headers ``event-id`` and ``event-type``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from application.ports import OutboxMessage
from domain.events import EVENT_TYPES, Event

EVENT_ID_HEADER = "event-id"
EVENT_TYPE_HEADER = "event-type"

Headers = list[tuple[str, bytes]]


class Envelope(msgspec.Struct, frozen=True):
    id: str
    type: str
    occurred_at: str
    org_id: str | None
    aggregate_id: str
    data: dict[str, Any]


class UndecodableMessage(Exception):
    """A message that is not a valid envelope of a known event type: retrying it cannot help."""


def envelope_of(message: OutboxMessage) -> bytes:
    """The envelope of an outbox message (its payload is the event as JSON)."""
    fields = msgspec.json.decode(message.payload)
    if not isinstance(fields, dict):
        raise ValueError(f"outbox payload of {message.id} is not a JSON object")
    envelope = Envelope(
        id=fields.pop("id", message.id),
        type=message.type,
        occurred_at=fields.pop("occurred_at"),
        org_id=fields.pop("org_id", message.org_id),
        aggregate_id=message.aggregate_id,
        data=fields,
    )
    return msgspec.json.encode(envelope)


def headers_of(message: OutboxMessage) -> Headers:
    return [(EVENT_ID_HEADER, message.id.encode()), (EVENT_TYPE_HEADER, message.type.encode())]


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    """The last value of header ``name`` as text, or None."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = value.decode("utf-8", "replace") if value is not None else ""
    return found


def decode_envelope(value: bytes | None, expected_type: str | None = None) -> Event:
    """The domain event inside an envelope; raises ``UndecodableMessage`` if there is none."""
    if value is None:
        raise UndecodableMessage("the message has no value")
    try:
        envelope = msgspec.json.decode(value, type=Envelope)
    except msgspec.DecodeError as exc:
        raise UndecodableMessage(f"not an event envelope: {exc}") from exc
    if expected_type is not None and envelope.type != expected_type:
        raise UndecodableMessage(f"header says {expected_type}, envelope says {envelope.type}")
    event_type = EVENT_TYPES.get(envelope.type)
    if event_type is None:
        raise UndecodableMessage(f"unknown event type {envelope.type!r}")
    fields = {
        **envelope.data,
        "id": envelope.id,
        "occurred_at": envelope.occurred_at,
        "org_id": envelope.org_id,
    }
    try:
        return msgspec.convert(fields, event_type)
    except msgspec.ValidationError as exc:
        raise UndecodableMessage(f"{envelope.type} {envelope.id}: {exc}") from exc


def without(headers: Sequence[tuple[str, bytes]] | None, *prefixes: str) -> Headers:
    """The headers whose names start with none of ``prefixes``."""
    return [(k, v) for k, v in headers or () if not k.startswith(prefixes)]
