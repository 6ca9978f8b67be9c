"""The message bus: commands to their one handler, events to every interested consumer.

Commands are handled at once and may return a result. Events are never handled inline: they are
committed to the outbox with the change that caused them and reach ``EventDispatcher`` through a
relay (in-process, or Kafka workers), so an event committed before a crash is still handled after.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from typing import Any

from application.commands import Command
from application.handlers import COMMAND_HANDLERS, EVENT_HANDLERS, CommandHandler, EventHandler
from application.retry import Sleep, retry_conflicts
from application.services import Services
from domain.events import Event

log = logging.getLogger(__name__)


class HandlerFailed(Exception):
    """One or more consumers of an event failed; the event is retried for those consumers only."""

    def __init__(self, event: Event, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        detail = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failures)
        super().__init__(f"{type(event).__name__} {event.id}: {detail}")


class MessageBus:
    def __init__(
        self,
        services: Services,
        command_handlers: dict[type[Command], CommandHandler] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.services = services
        self.command_handlers = command_handlers if command_handlers is not None else COMMAND_HANDLERS
        self.sleep = sleep

    async def handle(self, command: Command) -> Any:
        """Run the command's handler; a lost optimistic-concurrency race is retried from a fresh read."""
        handler = self.command_handlers[type(command)]
        return await retry_conflicts(
            lambda: handler(command, self.services), what=type(command).__name__, sleep=self.sleep
        )


class EventDispatcher:
    """Hands one event to each of its consumers, exactly once in effect.

    A consumer that already recorded ``(consumer, event id)`` is skipped; one consumer's failure does
    not stop the others, and the event is reported failed so it is delivered again later.
    """

    def __init__(
        self,
        services: Services,
        event_handlers: dict[type[Event], list[tuple[str, EventHandler]]] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.services = services
        self.event_handlers = event_handlers if event_handlers is not None else EVENT_HANDLERS
        self.sleep = sleep

    def all_consumers(self) -> set[str]:
        return {name for handlers in self.event_handlers.values() for name, _ in handlers}

    async def dispatch(self, event: Event, only: Iterable[str] | None = None) -> None:
        wanted = set(only) if only is not None else None
        failures: list[tuple[str, BaseException]] = []
        for name, handler in self.event_handlers.get(type(event), []):
            if wanted is not None and name not in wanted:
                continue
            services = self.services.for_consumer(name, event.id)
            async with services.reader() as uow:
                if await uow.processed.contains(name, event.id):
                    continue
            try:
                await retry_conflicts(
                    functools.partial(handler, event, services),
                    what=f"{name} on {type(event).__name__}",
                    sleep=self.sleep,
                )
            except Exception as exc:
                log.warning("consumer %s failed on %s %s: %s", name, type(event).__name__, event.id, exc)
                failures.append((name, exc))
        if failures:
            raise HandlerFailed(event, failures)
