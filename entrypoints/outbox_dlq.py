"""``callrec dlq`` on the in-process bus: the outbox messages the relay gave up on.

In-process, an event that failed ``CALLREC_OUTBOX_MAX_ATTEMPTS`` times stays in the outbox marked dead
(see ``application.outbox``). ``list`` shows them; ``replay`` makes them due again with a fresh count of
attempts, for the running ``callrec serve`` to hand to their consumers. Consumers that had already
handled the event skip it (their ``(consumer, event id)`` marker), so only the ones that failed run.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence

from adapters.sqlalchemy.outbox import SqlAlchemyOutbox
from adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from entrypoints.config import Settings
from entrypoints.container import Container


async def _with_outbox(settings: Settings) -> tuple[Container, SqlAlchemyUnitOfWork]:
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    factory = container.uow_factory()
    if inspect.isawaitable(factory):
        factory = await factory
    uow: SqlAlchemyUnitOfWork = factory()
    return container, uow


async def outbox_dlq_list(settings: Settings, *, as_json: bool) -> int:
    container, uow = await _with_outbox(settings)
    try:
        async with uow:
            outbox: SqlAlchemyOutbox = uow.outbox
            dead = await outbox.dead_letters()
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
    for letter in dead:
        m = letter.message
        entry = {
            "event_id": m.id,
            "event_type": m.type,
            "aggregate_type": m.aggregate_type,
            "aggregate_id": m.aggregate_id,
            "org_id": m.org_id,
            "occurred_at": m.occurred_at.isoformat(),
            "attempts": m.attempts,
            "dead_at": letter.dead_at.isoformat(),
            "error": letter.error,
        }
        if as_json:
            print(json.dumps(entry))
        else:
            print(
                f"{m.seq} {m.type} {m.id} {m.aggregate_type}={m.aggregate_id} attempts={m.attempts} "
                f"dead_at={entry['dead_at']}\n    {letter.error}"
            )
    if not as_json:
        print(f"{len(dead)} dead letter(s)")
    return 0


async def outbox_dlq_replay(settings: Settings, *, event_ids: Sequence[str]) -> int:
    container, uow = await _with_outbox(settings)
    try:
        async with uow:
            revived = await uow.outbox.revive(event_ids, now=uow.clock())
            await uow.commit()
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
    for event_id in revived:
        print(f"replayed {event_id}: due now for the running service's relay")
    print(f"{len(revived)} dead letter(s) replayed")
    return 0
