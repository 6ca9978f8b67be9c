"""The in-process event publisher: a committed outbox event goes straight to its handlers."""

from __future__ import annotations

from application.messagebus import EventDispatcher
from application.ports import OutboxMessage
from domain.events import decode_event


class InProcessEventPublisher:
    """Implements the relay's ``EventPublisher`` port without a broker (the embedded default)."""

    def __init__(self, dispatcher: EventDispatcher) -> None:
        self.dispatcher = dispatcher

    async def publish(self, message: OutboxMessage) -> None:
        await self.dispatcher.dispatch(decode_event(message.type, message.payload))
