"""``callrec worker`` and ``callrec dlq``: the Kafka side of the service, composed from the container."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import signal
from collections.abc import Sequence
from typing import Any

from adapters.kafka.dlq import list_dead_letters, replay_dead_letters
from adapters.kafka.worker import KafkaWorker
from entrypoints.config import Settings
from entrypoints.container import Container, kafka_options
from entrypoints.reconcile import start_periodic_sweep
from entrypoints.webhooks import start_webhook_delivery

log = logging.getLogger(__name__)


async def _resolve(provider: Any) -> Any:
    value = provider()
    if inspect.isawaitable(value):
        value = await value
    return value


async def run_worker(settings: Settings, consumers: Sequence[str] | None = None) -> None:
    """Run the consumers (all by default) until SIGTERM or SIGINT, then leave the groups cleanly."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        dispatcher = await _resolve(container.dispatcher)
        worker = KafkaWorker(dispatcher, container.kafka_options(), consumers or None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info(
            "worker starting: %s on Kafka %s",
            ", ".join(c.name for c in worker.consumers),
            settings.kafka_bootstrap,
        )
        # Webhook deliveries are database rows: sending them here too is safe (each try is claimed).
        webhook_task = await start_webhook_delivery(container, stop)
        sweep_task = await start_periodic_sweep(container, stop)  # every worker may run one: idempotent
        await worker.run(stop)
        stop.set()
        if sweep_task is not None:
            sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep_task
        await webhook_task
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


async def dlq_list(settings: Settings, *, as_json: bool, pending_only: bool) -> int:
    letters = await list_dead_letters(kafka_options(settings))
    shown = [d.summary() for d in letters if not (pending_only and d.replayed)]
    for entry in shown:
        if as_json:
            print(json.dumps(entry))
        else:
            state = "replayed" if entry["replayed"] else "pending"
            print(
                f"{entry['partition']}@{entry['offset']} {state} {entry['event_type']} {entry['event_id']} "
                f"consumer={entry['consumer']} attempts={entry['attempts']} failed_at={entry['failed_at']}\n"
                f"    {entry['error']}"
            )
    if not as_json:
        print(f"{len(shown)} dead letter(s)")
    return 0


async def dlq_replay(settings: Settings, *, event_ids: Sequence[str], consumer: str | None) -> int:
    replayed = await replay_dead_letters(kafka_options(settings), event_ids=event_ids, consumer_name=consumer)
    for d in replayed:
        print(f"replayed {d.event_type} {d.event_id} for {d.consumer} to {d.original_topic}")
    print(f"{len(replayed)} dead letter(s) replayed")
    return 0
