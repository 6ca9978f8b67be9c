"""``FilesystemRecordingStore``: the ``RecordingStore`` port on a local directory.

Layout under ``root``::

    objects/<key>          the audio, exactly as written
    meta/<key>.json        sidecar: content type, metadata, size and SHA-256 at write time

Writes stream into a temporary file next to the target (``<name>#<random>.tmp``; ``#`` can never
appear in a key, so a temporary file can neither be served nor collide with an object), are fsynced
and then renamed into place, so a reader sees either the previous object or the complete new one.
The data file is the truth: ``verify`` re-reads it, and an object exists exactly when its data file
does. The sidecar is renamed into place before the data file, so a visible object always has one.

Signed URLs are bearer capabilities served by ``entrypoints.http.media``:
``{public_url}/media/{key}?expires=<unix seconds>&sig=<base64url HMAC-SHA256>[&download=<name>]``.
The HMAC covers a versioned canonical string of the key, the expiry and the download filename, so
changing any of them invalidates the URL. ``resolve_signed`` checks a request against it.

Blocking file I/O runs in worker threads; a file descriptor is closed only once no thread is using
it, so a cancelled upload or download never races its own cleanup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, urlencode

from application.ports import StorageError, StoredObject

__all__ = [
    "FilesystemRecordingStore",
    "MediaFile",
    "ResolvedMedia",
    "SignedUrlExpired",
    "SignedUrlInvalid",
    "SignedUrlRejected",
    "StoredObjectNotFound",
    "validate_download_filename",
    "validate_key",
]

_T = TypeVar("_T")

_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_KEY_LENGTH = 1024
_MAX_FILENAME_LENGTH = 255
_SIGNATURE_VERSION = "callrec-media-v1"
_WRITE_BATCH_BYTES = 1024 * 1024
_READ_CHUNK_BYTES = 1024 * 1024
_STREAM_CHUNK_BYTES = 64 * 1024
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_MIN_SIGNING_KEY_BYTES = 16
_CLOCK_SKEW = timedelta(minutes=1)  # between the process that signs a URL and the one that serves it


# --- errors raised when checking a signed URL ---------------------------------------------------


class SignedUrlRejected(Exception):
    """A signed media URL does not grant access. ``code`` is a stable machine-readable reason."""

    code = "url_rejected"


class SignedUrlInvalid(SignedUrlRejected):
    """The URL was not issued by this store: bad or missing signature, or a changed key/expiry/filename."""

    code = "invalid_signature"


class SignedUrlExpired(SignedUrlRejected):
    """The URL carries a valid signature but its expiry has passed."""

    code = "url_expired"


class StoredObjectNotFound(LookupError):
    """The URL is valid but nothing is stored under its key."""

    code = "not_found"


# --- keys and filenames -------------------------------------------------------------------------


def validate_key(key: str) -> tuple[str, ...]:
    """Return the key's segments, or raise ``ValueError`` if the key could leave the store's root.

    A key is relative and ``/``-separated; each segment is non-empty, made of ``[A-Za-z0-9._-]``,
    and neither ``.`` nor ``..``.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if len(key) > _MAX_KEY_LENGTH:
        raise ValueError(f"storage key is longer than {_MAX_KEY_LENGTH} characters")
    segments = tuple(key.split("/"))
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in {".", ".."}:
            raise ValueError(f"invalid storage key {key!r}: bad segment {segment!r}")
    return segments


def validate_download_filename(filename: str) -> str:
    """Return ``filename`` if it is safe in a ``Content-Disposition`` header, else raise ``ValueError``.

    Any printable Unicode is allowed except path separators and double quotes.
    """
    if not isinstance(filename, str) or not filename or filename in {".", ".."}:
        raise ValueError("download filename must be a non-empty name")
    if len(filename) > _MAX_FILENAME_LENGTH:
        raise ValueError(f"download filename is longer than {_MAX_FILENAME_LENGTH} characters")
    for char in filename:
        if char in '/\\"' or not char.isprintable():
            raise ValueError(f"download filename {filename!r} contains a forbidden character {char!r}")
    return filename


# --- what a checked URL resolves to -------------------------------------------------------------


class ResolvedMedia(NamedTuple):
    """What a valid signed URL points at."""

    path: Path
    content_type: str
    download_filename: str | None


class _GuardedFd:
    """A file descriptor used from worker threads, closed only once no thread is using it.

    ``close`` may be called while a blocking call is still running in a thread (its awaiting task was
    cancelled); the descriptor is then closed, and ``on_close`` run, when that call finishes.
    """

    def __init__(self, fd: int, on_close: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._on_close = on_close
        self._lock = threading.Lock()
        self._in_flight = 0
        self._close_requested = False
        self._closed = False

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(self._call, fn, *args)

    def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            if self._close_requested:
                raise ValueError("file descriptor is closed")
            self._in_flight += 1
        try:
            return fn(self._fd, *args)
        finally:
            with self._lock:
                self._in_flight -= 1
                close_now = self._close_requested and self._in_flight == 0 and not self._closed
                if close_now:
                    self._closed = True
            if close_now:
                self._really_close()

    def close(self) -> None:
        with self._lock:
            self._close_requested = True
            close_now = self._in_flight == 0 and not self._closed
            if close_now:
                self._closed = True
        if close_now:
            self._really_close()

    def _really_close(self) -> None:
        try:
            os.close(self._fd)
        finally:
            if self._on_close is not None:
                self._on_close()


@dataclass
class MediaFile:
    """An open stored object, ready to be streamed whole or by byte range.

    ``size``, ``etag`` and ``last_modified`` describe the file that was opened, even if the key is
    overwritten meanwhile. Iterate ``chunks`` once, or call ``close`` if the body will not be sent.
    """

    size: int
    content_type: str
    download_filename: str | None
    etag: str
    last_modified: str
    _fd: _GuardedFd

    async def chunks(self, start: int, stop: int) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, stop)`` in modest chunks, then close the file."""
        try:
            position = start
            while position < stop:
                wanted = min(_STREAM_CHUNK_BYTES, stop - position)
                data = await self._fd.run(os.pread, wanted, position)
                if not data:
                    break
                position += len(data)
                yield data
        finally:
            self._fd.close()

    def close(self) -> None:
        self._fd.close()


# --- the store ----------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_batch(fd: int, batch: list[bytes], digest: Any) -> None:
    for chunk in batch:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _unlink_quietly(path: Path) -> None:
    # A leftover temporary file is harmless: its name can never be read as a key.
    with contextlib.suppress(OSError):
        path.unlink()


class FilesystemRecordingStore:
    """Durable recording storage in a local directory, with HMAC-signed media URLs.

    ``clock`` returns timezone-aware UTC; it is injected so tests can move time.
    ``signing_key`` must be at least 16 bytes (32 random bytes recommended).
    """

    def __init__(
        self,
        root: Path,
        public_url: str,
        signing_key: bytes,
        max_url_lifetime: timedelta = timedelta(days=7),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if len(signing_key) < _MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"signing_key must be at least {_MIN_SIGNING_KEY_BYTES} bytes")
        if max_url_lifetime <= timedelta(0):
            raise ValueError("max_url_lifetime must be positive")
        self.root = Path(root)
        self.public_url = public_url.rstrip("/")
        self.max_url_lifetime = max_url_lifetime
        self._signing_key = bytes(signing_key)
        self._clock = clock or _utc_now
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"

    # -- paths --

    def _object_path(self, segments: tuple[str, ...]) -> Path:
        return self._objects.joinpath(*segments)

    def _meta_path(self, segments: tuple[str, ...]) -> Path:
        *parents, name = segments
        return self._meta.joinpath(*parents, f"{name}.json")

    # -- writing --

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        """Stream ``chunks`` into ``key``; the object appears only once complete, fsynced and renamed.

        A failure of the chunk iterator propagates unchanged and leaves the key as it was; a failure
        of the filesystem raises ``StorageError``. An invalid key raises ``ValueError`` before any I/O.
        """
        segments = validate_key(key)
        target = self._object_path(segments)
        meta_target = self._meta_path(segments)
        sidecar_metadata = dict(metadata)
        tmp = target.parent / f"{target.name}#{secrets.token_hex(8)}.tmp"

        def open_tmp() -> int:
            target.parent.mkdir(parents=True, exist_ok=True)
            meta_target.parent.mkdir(parents=True, exist_ok=True)
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)

        try:
            fd_number = await asyncio.to_thread(open_tmp)
        except OSError as exc:
            raise StorageError(f"cannot create {tmp}: {exc}") from exc

        committed = False

        def discard_unless_committed() -> None:
            if not committed:
                _unlink_quietly(tmp)

        fd = _GuardedFd(fd_number, on_close=discard_unless_committed)
        digest = hashlib.sha256()
        size = 0
        try:
            batch: list[bytes] = []
            batch_bytes = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                batch.append(bytes(chunk))
                batch_bytes += len(chunk)
                if batch_bytes >= _WRITE_BATCH_BYTES:
                    await self._io(fd, _write_batch, batch, digest)
                    size += batch_bytes
                    batch, batch_bytes = [], 0
            if batch:
                await self._io(fd, _write_batch, batch, digest)
                size += batch_bytes
            sha256 = digest.hexdigest()
            sidecar = {
                "content_type": content_type,
                "metadata": sidecar_metadata,
                "size": size,
                "sha256": sha256,
                "stored_at": self._clock().isoformat(),
            }
            # Through the guarded descriptor, so a cancelled put cannot discard the file mid-commit.
            await self._io(fd, self._commit, tmp, target, meta_target, sidecar)
            committed = True
        finally:
            fd.close()
        return StoredObject(key=key, size=size, sha256=sha256, content_type=content_type)

    @staticmethod
    async def _io(fd: _GuardedFd, fn: Callable[..., None], *args: Any) -> None:
        try:
            await fd.run(fn, *args)
        except OSError as exc:
            raise StorageError(f"filesystem store failed: {exc}") from exc

    @staticmethod
    def _commit(fd: int, tmp: Path, target: Path, meta_target: Path, sidecar: dict[str, Any]) -> None:
        os.fsync(fd)
        meta_tmp = meta_target.parent / f"{meta_target.name}#{secrets.token_hex(8)}.tmp"
        try:
            with open(meta_tmp, "x", encoding="utf-8") as handle:
                json.dump(sidecar, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(meta_tmp, meta_target)
        except BaseException:
            _unlink_quietly(meta_tmp)
            raise
        os.replace(tmp, target)
        _fsync_dir(meta_target.parent)
        _fsync_dir(target.parent)

    # -- reading --

    async def verify(self, key: str) -> StoredObject | None:
        """Re-read the object and measure it (size, SHA-256); None when nothing is stored under ``key``."""
        segments = validate_key(key)
        try:
            return await asyncio.to_thread(self._measure, key, segments)
        except OSError as exc:
            raise StorageError(f"cannot verify {key!r}: {exc}") from exc

    async def confirm(self, written: StoredObject) -> bool:
        """Whether ``written.key`` holds what ``put`` wrote: a measuring read (``verify``)."""
        measured = await self.verify(written.key)
        return measured is not None and (measured.size, measured.sha256) == (written.size, written.sha256)

    def _measure(self, key: str, segments: tuple[str, ...]) -> StoredObject | None:
        path = self._object_path(segments)
        digest = hashlib.sha256()
        size = 0
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        with handle:
            while block := handle.read(_READ_CHUNK_BYTES):
                digest.update(block)
                size += len(block)
        return StoredObject(
            key=key, size=size, sha256=digest.hexdigest(), content_type=self._read_content_type(segments)
        )

    async def delete(self, key: str) -> None:
        """Unlink the object and its sidecar (a missing one is fine); signed URLs then answer 404."""
        segments = validate_key(key)

        def unlink() -> None:
            for path in (self._object_path(segments), self._meta_path(segments)):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    path.unlink()
            _fsync_dir(self._object_path(segments).parent)

        try:
            await asyncio.to_thread(unlink)
        except FileNotFoundError:
            pass  # the directory itself is gone: nothing to delete
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r}: {exc}") from exc

    def _read_content_type(self, segments: tuple[str, ...]) -> str:
        try:
            sidecar = json.loads(self._meta_path(segments).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return _DEFAULT_CONTENT_TYPE
        content_type = sidecar.get("content_type") if isinstance(sidecar, dict) else None
        return content_type if isinstance(content_type, str) and content_type else _DEFAULT_CONTENT_TYPE

    # -- signed URLs --

    def _signature(self, key: str, expires: int, download_filename: str | None) -> str:
        canonical = "\n".join(
            [
                _SIGNATURE_VERSION,
                key,
                str(expires),
                "attachment" if download_filename is not None else "inline",
                download_filename or "",
            ]
        )
        mac = hmac.new(self._signing_key, canonical.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        """``{public_url}/media/{key}?expires=…&sig=…[&download=…]``, valid at most ``max_url_lifetime``."""
        validate_key(key)
        if download_filename is not None:
            validate_download_filename(download_filename)
        if expires_in <= timedelta(0):
            raise ValueError("expires_in must be positive")
        lifetime = min(expires_in, self.max_url_lifetime)
        expires = int((self._clock() + lifetime).timestamp())
        params = {"expires": str(expires), "sig": self._signature(key, expires, download_filename)}
        if download_filename is not None:
            params["download"] = download_filename
        return f"{self.public_url}/media/{key}?{urlencode(params, quote_via=quote)}"

    def resolve_signed(self, key: str, query_params: Mapping[str, str]) -> ResolvedMedia:
        """Check a media request (its key and ``expires``/``sig``/``download`` query parameters).

        Raises ``SignedUrlInvalid`` for a missing, malformed or wrong signature (including any change
        to the key, the expiry or the download filename), ``SignedUrlExpired`` once the expiry has
        passed, and ``StoredObjectNotFound`` when the URL is valid but no object is stored. The
        signature is checked first, so an unsigned request learns nothing about what exists.
        """
        try:
            segments = validate_key(key)
        except ValueError:
            raise SignedUrlInvalid("not a signed media URL") from None
        expires_text = query_params.get("expires")
        signature = query_params.get("sig")
        download_filename = query_params.get("download")
        if not expires_text or not signature:
            raise SignedUrlInvalid("the URL has no signature")
        if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12):
            raise SignedUrlInvalid("malformed expiry")
        expires = int(expires_text)
        if download_filename is not None:
            try:
                validate_download_filename(download_filename)
            except ValueError:
                raise SignedUrlInvalid("malformed download filename") from None
        expected = self._signature(key, expires, download_filename)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise SignedUrlInvalid("the signature does not match")
        now = self._clock().timestamp()
        if now >= expires:
            raise SignedUrlExpired("the URL has expired")
        if expires - now > (self.max_url_lifetime + _CLOCK_SKEW).total_seconds():
            # Reachable only after the cap was lowered (or a clock jumped back): it applies to old URLs too.
            raise SignedUrlInvalid("the URL outlives the maximum URL lifetime")
        path = self._object_path(segments)
        if not path.is_file():
            raise StoredObjectNotFound("no recording is stored under this key")
        return ResolvedMedia(path, self._read_content_type(segments), download_filename)

    async def open_signed(self, key: str, query_params: Mapping[str, str]) -> MediaFile:
        """``resolve_signed``, then open the object for streaming (all blocking work in a thread)."""

        def resolve_and_open() -> MediaFile:
            resolved = self.resolve_signed(key, query_params)
            try:
                fd_number = os.open(resolved.path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, IsADirectoryError):
                raise StoredObjectNotFound("no recording is stored under this key") from None
            try:
                stat = os.fstat(fd_number)
            except BaseException:
                os.close(fd_number)
                raise
            modified = datetime.fromtimestamp(stat.st_mtime, UTC).replace(microsecond=0)
            return MediaFile(
                size=stat.st_size,
                content_type=resolved.content_type,
                download_filename=resolved.download_filename,
                etag=f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"',
                last_modified=format_datetime(modified, usegmt=True),
                _fd=_GuardedFd(fd_number),
            )

        try:
            return await asyncio.to_thread(resolve_and_open)
        except OSError as exc:
            raise StorageError(f"cannot open {key!r}: {exc}") from exc
