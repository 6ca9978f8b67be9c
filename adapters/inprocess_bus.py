"""The in-process event publisher: a committed outbox event goes straight to its handlers."""

from __future__ import annotations

from structlog.contextvars import bound_contextvars

from application.messagebus import EventDispatcher
from application.ports import OutboxMessage
from domain.events import decode_event, log_context


class InProcessEventPublisher:
    """Implements the relay's ``EventPublisher`` port without a broker (the embedded default)."""

    def __init__(self, dispatcher: EventDispatcher) -> None:
        self.dispatcher = dispatcher

    async def publish(self, message: OutboxMessage) -> None:
        event = decode_event(message.type, message.payload)
        with bound_contextvars(**log_context(event)):  # on the handlers' log lines
            await self.dispatcher.dispatch(event)
