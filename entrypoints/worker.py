"""``callrec worker`` and ``callrec dlq``: the Kafka side of the service, composed from the container."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Sequence

from adapters.kafka.dlq import list_dead_letters, replay_dead_letters
from adapters.kafka.worker import KafkaWorker
from entrypoints.config import Settings
from entrypoints.container import Container, kafka_options
from entrypoints.runtime import BackgroundRuntime, resolve, worker_loops

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, consumers: Sequence[str] | None = None) -> None:
    """Run the consumers (all by default) until SIGTERM or SIGINT, then leave the groups cleanly.

    Beside them: webhook deliveries and settling (database rows: sending them here too is safe,
    each try is claimed) and the periodic sweep (idempotent: every worker may run one).
    """
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)  # this process's counters (archives, webhook tries)
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        dispatcher = await resolve(container.dispatcher)
        worker = KafkaWorker(dispatcher, container.kafka_options(), consumers or None)
        runtime = BackgroundRuntime(await worker_loops(container, worker))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runtime.stopping.set)
        log.info(
            "worker starting: %s on Kafka %s",
            ", ".join(c.name for c in worker.consumers),
            settings.kafka_bootstrap,
        )
        await runtime.run()
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
