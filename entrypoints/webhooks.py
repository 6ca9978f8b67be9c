"""Running the webhook delivery scheduler beside the HTTP app or the Kafka worker.

``callrec serve`` starts it in both bus modes (deliveries are database rows, so the process that
sends need not be the one that consumed the event); ``callrec worker`` may run it too. Several
schedulers over one database are safe: each claims the deliveries it sends.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from application.webhook_delivery import WebhookDeliveryScheduler
from entrypoints.config import Settings

log = logging.getLogger(__name__)

PRIVATE_NETWORKS_WARNING = (
    "!!! CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true: webhooks may be sent over plain http and to "
    "loopback, private and link-local addresses (including cloud metadata services). "
    "For development and tests only: never set it in production. !!!"
)


def announce_webhook_policy(settings: Settings) -> None:
    """Say loudly, at start, that webhook SSRF protection is off."""
    if settings.webhook_allow_private_networks:
        for _ in range(3):
            log.warning(PRIVATE_NETWORKS_WARNING)


async def start_webhook_delivery(container: Any, stop: asyncio.Event) -> asyncio.Task[None]:
    """Start ``container.webhook_scheduler`` until ``stop`` is set; commits wake it up.

    In the Kafka worker: ``task = await start_webhook_delivery(container, stop)`` after
    ``init_resources()``, then ``await task`` once ``stop`` is set.
    """
    settings = container.settings()
    announce_webhook_policy(settings)
    scheduler = container.webhook_scheduler()
    if inspect.isawaitable(scheduler):
        scheduler = await scheduler
    assert isinstance(scheduler, WebhookDeliveryScheduler)
    container.commit_signal().listeners.append(scheduler.wake)
    return asyncio.create_task(scheduler.run_forever(stop), name="webhook-delivery")
