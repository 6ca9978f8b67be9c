"""The webhook policy announced at start. The delivery scheduler is one of the background loops of
``entrypoints/runtime.py``.
"""

from __future__ import annotations

import logging

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
