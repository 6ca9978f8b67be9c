"""``InMemoryRecordingStore``: a small, real ``RecordingStore`` for tests.

It behaves like the filesystem store (the contract suite in
``tests/integration/test_recording_store_contract.py`` runs against both) and adds what application
tests need to prove they do not trust a store blindly: ``corrupt`` and ``truncate`` damage a stored
object behind the application's back, and ``fail_next`` makes the next call of an operation raise
``StorageError``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote, urlencode

from application.ports import StorageError, StoredObject

Operation = Literal["put", "verify", "signed_url", "delete"]

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


def _check_key(key: str) -> None:
    segments = key.split("/") if key else [""]
    if any(not _SEGMENT.fullmatch(s) or s in {".", ".."} for s in segments):
        raise ValueError(f"invalid storage key {key!r}")


@dataclass
class StoredBlob:
    data: bytes
    content_type: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class IssuedUrl:
    key: str
    expires_in: timedelta
    download_filename: str | None
    url: str


@dataclass
class InMemoryRecordingStore:
    """Objects kept in a dict; an object appears only after its chunk iterator is exhausted."""

    public_url: str = "https://store.test"
    max_url_lifetime: timedelta = timedelta(days=7)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    objects: dict[str, StoredBlob] = field(default_factory=dict)
    issued_urls: list[IssuedUrl] = field(default_factory=list)
    put_count: int = 0
    deleted_keys: list[str] = field(default_factory=list)
    _failures: dict[str, list[Exception]] = field(default_factory=dict)

    # -- failure injection and damage --

    def fail_next(self, operation: Operation, error: Exception | None = None) -> None:
        """Make the next call of ``operation`` raise ``error`` (a ``StorageError`` by default).

        A failing ``put`` has read part of its chunks, like a store that broke mid-upload.
        """
        self._failures.setdefault(operation, []).append(
            error or StorageError(f"injected {operation} failure")
        )

    def _maybe_fail(self, operation: Operation) -> None:
        pending = self._failures.get(operation)
        if pending:
            raise pending.pop(0)

    def corrupt(self, key: str) -> None:
        """Flip one byte of the stored object (size unchanged, SHA-256 changed)."""
        blob = self.objects[key]
        if not blob.data:
            blob.data = b"\x00"
            return
        middle = len(blob.data) // 2
        blob.data = blob.data[:middle] + bytes([blob.data[middle] ^ 0xFF]) + blob.data[middle + 1 :]

    def truncate(self, key: str, size: int | None = None) -> None:
        """Cut the stored object to ``size`` bytes (default: half of it)."""
        blob = self.objects[key]
        blob.data = blob.data[: len(blob.data) // 2 if size is None else size]

    def data(self, key: str) -> bytes | None:
        blob = self.objects.get(key)
        return None if blob is None else blob.data

    # -- the port --

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        _check_key(key)
        self.put_count += 1
        buffer = bytearray()
        digest = hashlib.sha256()
        failure = self._failures.get("put")
        async for chunk in chunks:
            if failure:
                self._maybe_fail("put")
            buffer += chunk
            digest.update(chunk)
        self._maybe_fail("put")
        self.objects[key] = StoredBlob(bytes(buffer), content_type, dict(metadata))
        return StoredObject(key=key, size=len(buffer), sha256=digest.hexdigest(), content_type=content_type)

    async def verify(self, key: str) -> StoredObject | None:
        _check_key(key)
        self._maybe_fail("verify")
        blob = self.objects.get(key)
        if blob is None:
            return None
        return StoredObject(
            key=key,
            size=len(blob.data),
            sha256=hashlib.sha256(blob.data).hexdigest(),
            content_type=blob.content_type,
        )

    async def confirm(self, written: StoredObject) -> bool:
        measured = await self.verify(written.key)
        return measured is not None and (measured.size, measured.sha256) == (written.size, written.sha256)

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        _check_key(key)
        self._maybe_fail("signed_url")
        if expires_in <= timedelta(0):
            raise ValueError("expires_in must be positive")
        expires = int((self.clock() + min(expires_in, self.max_url_lifetime)).timestamp())
        params = {"expires": str(expires), "sig": "fake"}
        if download_filename is not None:
            params["download"] = download_filename
        url = f"{self.public_url.rstrip('/')}/media/{key}?{urlencode(params, quote_via=quote)}"
        self.issued_urls.append(IssuedUrl(key, expires_in, download_filename, url))
        return url

    async def delete(self, key: str) -> None:
        _check_key(key)
        self._maybe_fail("delete")
        self.objects.pop(key, None)
        self.deleted_keys.append(key)
