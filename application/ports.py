"""Ports: everything the application needs from the outside world, as Protocols.

Adapters in ``adapters/`` implement these; the composition root in ``entrypoints/`` picks which.
Nothing here imports an infrastructure library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.webhooks import SendResult


class Clock(Protocol):
    """Tells the time. Always timezone-aware UTC."""

    def now(self) -> datetime: ...


# --- telephony (Twilio) -------------------------------------------------------------------------


class TelephonyError(Exception):
    """A telephony call failed in a way that may succeed if retried (network, 5xx, 429)."""


class MediaNotFound(TelephonyError):
    """The provider holds no media for this recording (404)."""


@dataclass(frozen=True)
class MediaStream:
    """An open download of a recording's audio; ``chunks`` yields it piece by piece."""

    content_type: str
    content_length: int | None
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class ProviderRecording:
    """A recording as the provider lists it.

    ``status`` is the provider's own word: ``in-progress``, ``paused``, ``stopped``, ``processing``,
    ``completed``, ``absent`` or ``failed``. ``duration_s`` is None until the provider knows it.
    """

    sid: str
    call_sid: str
    status: str
    duration_s: int | None = None
    media_url: str | None = None
    error_code: str | None = None


class Telephony(Protocol):
    """The telephony provider's REST API (Twilio in production)."""

    async def start_recording(self, call_sid: str, status_callback_url: str) -> str:
        """Start a dual-channel recording of a live call; returns the provider's recording id.

        Status callbacks go to ``status_callback_url`` for in-progress, completed and absent.
        """
        ...

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None:
        """Stop an in-progress recording (the provider then reports it completed)."""
        ...

    def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AbstractAsyncContextManager[MediaStream]:
        """Open the recording's audio (mp3) as a stream, never holding it whole in memory.

        ``media_url`` is the provider's ``RecordingUrl`` when known; an adapter may ignore it and
        build the URL itself (it must never send credentials to a host it does not trust).
        Raises ``MediaNotFound`` when the provider has no such recording.
        """
        ...

    async def delete_recording(self, recording_sid: str) -> bool:
        """Delete the provider's copy. Returns False when it was already gone (404), True otherwise."""
        ...

    async def list_call_recordings(self, call_sid: str) -> list[ProviderRecording]:
        """The recordings the provider holds for a call (not those deleted), newest first.

        A call the provider does not know (404) has none: an empty list, not an error.
        How the reconciliation sweep finds what a lost status callback never told us.
        """
        ...


# --- recording store ----------------------------------------------------------------------------


class StorageError(Exception):
    """The recording store failed; the operation may be retried."""


@dataclass(frozen=True)
class StoredObject:
    """What the store holds under a key, as measured by the store."""

    key: str
    size: int
    sha256: str  # lowercase hex
    content_type: str


class RecordingStore(Protocol):
    """Durable storage for recording audio (a filesystem or an S3 bucket)."""

    max_url_lifetime: timedelta

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        """Stream ``chunks`` into ``key`` (overwriting: writing a key twice is idempotent).

        The object becomes visible only once complete. Returns size and SHA-256 of what was written.
        """
        ...

    async def verify(self, key: str) -> StoredObject | None:
        """Measure what is stored under ``key`` right now (size and SHA-256), or None if absent."""
        ...

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        """A short-lived URL that serves the object (with HTTP Range), optionally as an attachment.

        ``expires_in`` is capped at ``max_url_lifetime``.
        """
        ...


# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookMessage:
    """One try of one webhook: the exact body to sign and send, and the secrets that sign it."""

    url: str
    message_id: str  # the ``webhook-id`` header: the same on every try
    body: bytes
    secrets: tuple[str, ...]  # ``whsec_…``; each adds a signature (two during a rotation)


class WebhookSender(Protocol):
    """Sends Standard Webhooks v1 messages to subscriber URLs, never to our own networks."""

    async def check_target(self, url: str) -> None:
        """Raise ``WebhookTargetRefused`` for a URL that must not be used (scheme, or a host that
        resolves to a loopback, private, link-local, metadata or otherwise non-public address)."""
        ...

    async def send(self, message: WebhookMessage) -> SendResult:
        """Sign and POST ``message.body`` byte for byte; the target is checked again first.

        Never raises for what the receiver or the network did: a refused target, a timeout or a
        connection error comes back as a result without a status code.
        """
        ...


class SecretBox(Protocol):
    """Keeps webhook signing secrets unreadable at rest (a database dump does not hand them out)."""

    def seal(self, secret: str) -> str: ...

    def open(self, sealed: str) -> str: ...
