"""``S3RecordingStore``: the ``RecordingStore`` port on an S3 bucket (aioboto3), streamed and checksummed.

Writing (``put``)
    Chunks are cut into parts of ``part_size`` bytes as they arrive. A recording that ends within
    ``multipart_threshold`` bytes goes up in one ``PutObject``; a longer one as a multipart upload of
    fixed-size parts with at most ``upload_concurrency`` parts in flight, so memory stays bounded by
    about ``(2 * upload_concurrency + 2) * part_size`` whatever the recording's length (each part in
    flight, the socket's copy of what it has not sent yet, the part being filled). Nothing is ever
    visible under the key before the upload completes; a failure aborts the multipart upload and
    the key keeps whatever it held before. A failure of the chunk iterator (the download) propagates
    unchanged; S3 failures raise ``StorageError``.

    While streaming, the store computes the SHA-256 of every part and of the whole object. Every
    part (and a single PUT) is sent with ``x-amz-checksum-sha256``: S3 recomputes it on receipt and
    refuses a part whose bytes changed in transit (``BadDigest``); such a part is sent again, up to
    three times. After ``CompleteMultipartUpload`` the composite checksum S3 reports (SHA-256 of the
    parts' SHA-256s, ``…-N``, computed by the server from what it received; asked with
    ``HeadObject`` when the completion leaves it out, as moto does) must equal the one computed
    here, which is returned as ``StoredObject.checksum`` (None when S3 reported none).

    Object metadata: what the caller passes (org, call and recording ids), plus ``sha256`` (hex, of
    the whole object) and ``size`` on a single PUT, or ``part-size`` on a multipart upload (the whole
    SHA-256 is only known at the end; the database keeps it, and with ``part-size`` anyone can check
    the object against S3's composite checksum). Nothing is copied or rewritten after the upload.

    Every request that creates an object asks for server-side encryption: ``AES256`` (SSE-S3) by
    default, ``aws:kms`` with ``kms_key_id`` when configured; the answer must confirm it.

Confirming and verifying (``confirm``, ``verify``)
    ``confirm(written)``, what the archive asks before Twilio's copy may be deleted: for a multipart
    object, ``HeadObject`` with ``ChecksumMode=ENABLED`` must show the written length and the very
    composite SHA-256 that S3 computed on receipt and ``put`` already compared with ours (the bytes
    are not read again). For a single PUT (at most ``multipart_threshold`` bytes: S3 may only echo
    the checksum it was sent, as moto does) and for an object S3 reported no checksum for, it is a
    verifying read. ``verify(key)`` is that verifying read: the object is streamed back with
    ``GetObject`` and its size and SHA-256 are measured by this process, relying on nothing the
    server says.

URLs (``signed_url``)
    Presigned ``GetObject`` URLs (SigV4, so at most 7 days), capped at ``max_url_lifetime``; a
    download sets ``response-content-disposition`` to an attachment with the filename. They serve
    HTTP Range requests (S3 does). ``public_endpoint_url`` signs for the host browsers reach when it
    differs from the one the service uses. URLs signed with temporary credentials (an instance role,
    STS) stop working when those credentials expire, whatever their own expiry says.

Keys
    The application's keys are used as they are (``orgs/{org}/{yyyy}/{mm}/{dd}/…`` and
    ``platform/{kind}/…``). Keys under ``platform/`` go to ``platform_bucket`` when one is set.

Retries
    botocore's ``standard`` retry mode: exponential backoff with jitter (``rand(0,1) * 2^attempt``,
    at most 20 s) on 5xx, throttling (``SlowDown``, 429/503) and connection errors, for at most
    ``max_attempts`` attempts per request. Bodies are in-memory bytes, so a retried part is sent
    again whole. What is still failing after that fails the archive, which the outbox retries later.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlsplit

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from adapters.filesystem_store import validate_download_filename, validate_key
from application.ports import StorageError, StoredObject

__all__ = [
    "MAX_PRESIGN_LIFETIME",
    "MIN_PART_SIZE",
    "S3RecordingStore",
    "composite_sha256",
    "content_disposition",
]

log = logging.getLogger(__name__)

MIN_PART_SIZE: Final = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PARTS: Final = 10_000
MAX_PRESIGN_LIFETIME: Final = timedelta(days=7)  # SigV4's limit
PLATFORM_PREFIX: Final = "platform/"
SSE_ALGORITHMS: Final = ("AES256", "aws:kms")

_READ_CHUNK: Final = 1024 * 1024
_PART_ATTEMPTS: Final = 3
_DIGEST_ERRORS: Final = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_T = TypeVar("_T")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_sha256(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: base64 SHA-256 of the parts' SHA-256s, then ``-N``."""
    return f"{_b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def _same_checksum(reported: str, ours: str) -> bool:
    """S3's composite ``…-N`` against ours; some servers (moto) leave out the ``-N``."""
    value, _, parts = reported.partition("-")
    our_value, _, our_parts = ours.partition("-")
    return value == our_value and parts in ("", our_parts)


def content_disposition(download_filename: str) -> str:
    """``attachment`` with the filename (ASCII fallback plus RFC 6266 ``filename*`` when needed)."""
    fallback = "".join(c if " " <= c <= "~" else "_" for c in download_filename)
    header = f'attachment; filename="{fallback}"'
    if fallback != download_filename:
        header += f"; filename*=UTF-8''{quote(download_filename, safe='')}"
    return header


class _ChunkReader:
    """Turns an iterator of arbitrary chunks into reads of exact sizes (fewer bytes only at the end).

    Each read fills one preallocated ``bytearray``: one copy of the bytes, and the buffer goes to
    the HTTP client as it is (botocore would wrap ``bytes`` in a ``BytesIO``, which aiohttp copies
    once more).
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks.__aiter__()
        self._carry = memoryview(b"")
        self._exhausted = False

    async def _next(self) -> bool:
        while not self._carry and not self._exhausted:
            try:
                self._carry = memoryview(await self._chunks.__anext__())
            except StopAsyncIteration:
                self._exhausted = True
        return bool(self._carry)

    async def read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        filled = 0
        with memoryview(buffer) as view:
            while filled < size and await self._next():
                piece = self._carry[: size - filled]
                view[filled : filled + len(piece)] = piece
                filled += len(piece)
                self._carry = self._carry[len(piece) :]
        if filled < size:
            del buffer[filled:]
        return buffer

    async def at_end(self) -> bool:
        return not await self._next()

    def unread(self, data: bytearray) -> None:
        if self._carry:
            data += self._carry
        self._carry = memoryview(data)


class S3RecordingStore:
    """Recording storage in S3 (or an S3-compatible server at ``endpoint_url``).

    Open it with ``await store.open()`` (or ``async with store``) inside the event loop that will use
    it, and ``await store.aclose()`` at shutdown; a store used before ``open`` opens itself.
    """

    def __init__(
        self,
        bucket: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        platform_bucket: str | None = None,
        sse: str = "AES256",
        kms_key_id: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        multipart_threshold: int = 8 * 1024 * 1024,
        upload_concurrency: int = 4,
        max_attempts: int = 5,
        max_url_lifetime: timedelta = MAX_PRESIGN_LIFETIME,
        addressing_style: str | None = None,
        session: aioboto3.Session | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket is required (CALLREC_S3_BUCKET)")
        if sse not in SSE_ALGORITHMS:
            raise ValueError(f"server-side encryption must be one of {SSE_ALGORITHMS}, not {sse!r}")
        if kms_key_id and sse != "aws:kms":
            raise ValueError("a KMS key id needs aws:kms server-side encryption")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if multipart_threshold < 1 or multipart_threshold > 5 * 1024**3:
            raise ValueError("multipart_threshold must be between 1 byte and 5 GiB")
        if upload_concurrency < 1 or max_attempts < 1:
            raise ValueError("upload_concurrency and max_attempts must be at least 1")
        if not timedelta(0) < max_url_lifetime <= MAX_PRESIGN_LIFETIME:
            raise ValueError("max_url_lifetime must be positive and at most 7 days (SigV4's limit)")
        self.bucket = bucket
        self.platform_bucket = platform_bucket or None
        self.region = region
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        self.upload_concurrency = upload_concurrency
        self.max_url_lifetime = max_url_lifetime
        self._addressing_style = addressing_style or ("path" if endpoint_url else "auto")
        self._session = session or aioboto3.Session()
        style = addressing_style or ("path" if endpoint_url else "auto")
        self._config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=120,  # CompleteMultipartUpload of a large object answers only when done
            max_pool_connections=max(10, 2 * upload_concurrency),
            # Checksums are chosen and sent explicitly (SHA-256), never added behind our back.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._presigner: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the S3 client(s) in the running loop. Nothing is sent over the network."""
        async with self._opening:
            if self._client is not None:
                return
            self._client = await self._exit.enter_async_context(
                self._session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
            )
            if self.public_endpoint_url and self.public_endpoint_url != self.endpoint_url:
                self._presigner = await self._exit.enter_async_context(
                    self._session.client("s3", endpoint_url=self.public_endpoint_url, config=self._config)
                )
            else:
                self._presigner = self._client

    async def aclose(self) -> None:
        async with self._opening:
            self._client = self._presigner = None
            await self._exit.aclose()
            self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def ping(self) -> None:
        """Raise unless the bucket(s) answer (``HeadBucket``): readiness, not a full check."""
        s3 = await self._s3()
        for bucket in dict.fromkeys(b for b in (self.bucket, self.platform_bucket) if b):
            await s3.head_bucket(Bucket=bucket)

    async def _s3(self) -> Any:
        if self._client is None:
            await self.open()
        return self._client

    # --- keys and request parameters --------------------------------------------------------------

    @property
    def media_origins(self) -> tuple[str, ...]:
        """The origins of the presigned URLs browsers are sent to (a page's CSP ``media-src``)."""
        buckets = [b for b in (self.bucket, self.platform_bucket) if b]
        endpoint = self.public_endpoint_url or self.endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            origins = [f"{parts.scheme}://{parts.netloc}"]
            if self._addressing_style == "virtual":
                origins += [f"{parts.scheme}://{b}.{parts.netloc}" for b in buckets]
            return tuple(origins)
        origins = []
        for b in buckets:
            origins += [f"https://{b}.s3.{self.region}.amazonaws.com", f"https://{b}.s3.amazonaws.com"]
        return (*origins, f"https://s3.{self.region}.amazonaws.com")

    def locate(self, key: str) -> tuple[str, str]:
        """(bucket, object key) of a store key; refuses keys that are not plain relative paths."""
        validate_key(key)
        if self.platform_bucket and key.startswith(PLATFORM_PREFIX):
            return self.platform_bucket, key
        return self.bucket, key

    def _encryption(self) -> dict[str, str]:
        params = {"ServerSideEncryption": self.sse}
        if self.kms_key_id:
            params["SSEKMSKeyId"] = self.kms_key_id
        return params

    def _check_encryption(self, response: Mapping[str, Any], what: str) -> None:
        applied = response.get("ServerSideEncryption")
        if applied is not None and applied != self.sse:
            raise StorageError(f"{what}: S3 applied {applied} encryption, {self.sse} was requested")

    @staticmethod
    def _metadata(metadata: Mapping[str, str], **extra: str) -> dict[str, str]:
        merged = {**{k.lower(): str(v) for k, v in metadata.items()}, **extra}
        for name, value in merged.items():
            if not (name.isascii() and value.isascii()):
                raise ValueError(f"S3 object metadata must be ASCII: {name}={value!r}")
        return merged

    @staticmethod
    async def _call(what: str, request: Awaitable[_T]) -> _T:
        try:
            return await request
        except ClientError as error:
            raise StorageError(f"{what}: S3 answered {_error_code(error)}: {error}") from error
        except (BotoCoreError, OSError, TimeoutError) as error:
            raise StorageError(f"{what}: {error!r}") from error

    # --- writing ----------------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        """Stream ``chunks`` into ``key`` (see the module docstring); returns size and SHA-256 sent."""
        bucket, object_key = self.locate(key)
        self._metadata(metadata)  # refuse unusable metadata before reading anything
        s3 = await self._s3()
        reader = _ChunkReader(chunks)
        head = await reader.read(self.multipart_threshold)
        if await reader.at_end():
            return await self._put_single(s3, bucket, object_key, key, head, content_type, metadata)
        reader.unread(head)
        del head
        return await self._put_multipart(s3, bucket, object_key, key, reader, content_type, metadata)

    async def _put_single(
        self,
        s3: Any,
        bucket: str,
        object_key: str,
        key: str,
        data: bytearray,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        digest = hashlib.sha256(data)
        checksum = _b64(digest.digest())
        what = f"put s3://{bucket}/{object_key}"
        response: dict[str, Any] = {}
        for attempt in range(1, _PART_ATTEMPTS + 1):
            try:
                response = await s3.put_object(
                    Bucket=bucket,
                    Key=object_key,
                    Body=data,
                    ContentLength=len(data),
                    ContentType=content_type,
                    Metadata=self._metadata(metadata, sha256=digest.hexdigest(), size=str(len(data))),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                    **self._encryption(),
                )
                break
            except ClientError as error:
                if _error_code(error) in _DIGEST_ERRORS and attempt < _PART_ATTEMPTS:
                    log.warning(
                        "%s: S3 refused the body's checksum (attempt %d), sending it again", what, attempt
                    )
                    continue
                raise StorageError(f"{what}: S3 answered {_error_code(error)}: {error}") from error
            except (BotoCoreError, OSError, TimeoutError) as error:
                raise StorageError(f"{what}: {error!r}") from error
        self._check_encryption(response, what)
        reported = response.get("ChecksumSHA256")
        if reported is not None and reported != checksum:
            raise StorageError(f"{what}: S3 stored SHA-256 {reported}, {checksum} was sent")
        return StoredObject(key=key, size=len(data), sha256=digest.hexdigest(), content_type=content_type)

    async def _put_multipart(
        self,
        s3: Any,
        bucket: str,
        object_key: str,
        key: str,
        reader: _ChunkReader,
        content_type: str,
        metadata: Mapping[str, str],
    ) -> StoredObject:
        what = f"multipart upload to s3://{bucket}/{object_key}"
        creating = asyncio.ensure_future(
            self._call(
                what,
                s3.create_multipart_upload(
                    Bucket=bucket,
                    Key=object_key,
                    ContentType=content_type,
                    Metadata=self._metadata(metadata, **{"part-size": str(self.part_size)}),
                    ChecksumAlgorithm="SHA256",
                    **self._encryption(),
                ),
            )
        )
        try:
            created = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Cancelled while S3 may be beginning the upload: abort it once its id is known.
            with contextlib.suppress(Exception):
                await self._abort(s3, bucket, object_key, (await creating)["UploadId"])
            raise
        self._check_encryption(created, what)
        upload_id: str = created["UploadId"]
        digest = hashlib.sha256()
        size = 0
        part_digests: list[bytes] = []
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        slots = asyncio.Semaphore(self.upload_concurrency)
        failed: list[asyncio.Task[dict[str, Any]]] = []

        def part_done(task: asyncio.Task[dict[str, Any]]) -> None:
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                failed.append(task)

        try:
            while True:
                await slots.acquire()
                if failed:  # stop reading: the upload cannot complete
                    slots.release()
                    await failed[0]  # raises its error
                data = await reader.read(self.part_size)
                if not data:
                    slots.release()
                    break
                if len(part_digests) == MAX_PARTS:
                    slots.release()
                    raise StorageError(f"{what}: more than {MAX_PARTS} parts of {self.part_size} bytes")
                digest.update(data)
                size += len(data)
                part_digest = hashlib.sha256(data).digest()
                part_digests.append(part_digest)
                task = asyncio.create_task(
                    self._upload_part(s3, bucket, object_key, upload_id, len(part_digests), data, part_digest)
                )
                task.add_done_callback(part_done)
                tasks.append(task)
                del data
            parts = [await task for task in tasks]
            completed = await self._call(
                what,
                s3.complete_multipart_upload(
                    Bucket=bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._abort(s3, bucket, object_key, upload_id))
            raise
        self._check_encryption(completed, what)
        expected = composite_sha256(part_digests)
        reported = completed.get("ChecksumSHA256")
        if reported is None:  # not every S3 says it on completion (moto does not): ask for it
            head = await self._head(bucket, object_key)
            reported = None if head is None else head.get("ChecksumSHA256")
        if reported is not None and not _same_checksum(reported, expected):
            raise StorageError(f"{what}: S3 computed the composite SHA-256 {reported}, ours is {expected}")
        return StoredObject(
            key=key,
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
            checksum=None if reported is None else expected,
        )

    async def _upload_part(
        self,
        s3: Any,
        bucket: str,
        object_key: str,
        upload_id: str,
        number: int,
        data: bytearray,
        part_digest: bytes,
    ) -> dict[str, Any]:
        checksum = _b64(part_digest)
        what = f"part {number} of s3://{bucket}/{object_key}"
        for attempt in range(1, _PART_ATTEMPTS + 1):
            try:
                response = await s3.upload_part(
                    Bucket=bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                    ContentLength=len(data),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
            except ClientError as error:
                if _error_code(error) in _DIGEST_ERRORS and attempt < _PART_ATTEMPTS:
                    log.warning(
                        "%s: S3 refused the part's checksum (attempt %d), sending it again", what, attempt
                    )
                    continue
                raise StorageError(f"{what}: S3 answered {_error_code(error)}: {error}") from error
            except (BotoCoreError, OSError, TimeoutError) as error:
                raise StorageError(f"{what}: {error!r}") from error
            reported = response.get("ChecksumSHA256")
            if reported is not None and reported != checksum:
                raise StorageError(f"{what}: S3 stored SHA-256 {reported}, {checksum} was sent")
            return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}
        raise AssertionError("unreachable")

    async def _abort(self, s3: Any, bucket: str, object_key: str, upload_id: str) -> None:
        try:
            await s3.abort_multipart_upload(Bucket=bucket, Key=object_key, UploadId=upload_id)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as error:
            # The bucket's lifecycle rule (AbortIncompleteMultipartUpload) removes what is left.
            log.warning("could not abort multipart upload %s of %s: %r", upload_id, object_key, error)

    # --- reading ----------------------------------------------------------------------------------

    async def verify(self, key: str) -> StoredObject | None:
        """Read the object back and measure it (size, SHA-256); None when nothing is under ``key``."""
        bucket, object_key = self.locate(key)
        s3 = await self._s3()
        what = f"verifying read of s3://{bucket}/{object_key}"
        try:
            response = await s3.get_object(Bucket=bucket, Key=object_key)
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND:
                return None
            raise StorageError(f"{what}: S3 answered {_error_code(error)}: {error}") from error
        except (BotoCoreError, OSError, TimeoutError) as error:
            raise StorageError(f"{what}: {error!r}") from error
        digest = hashlib.sha256()
        size = 0
        body = response["Body"]
        try:
            while chunk := await body.read(_READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except (BotoCoreError, OSError, TimeoutError) as error:
            raise StorageError(f"{what}: broke off after {size} bytes: {error!r}") from error
        finally:
            body.close()
        announced = response.get("ContentLength")
        if announced is not None and announced != size:
            raise StorageError(f"{what}: read {size} bytes, S3 announced {announced}")
        content_type = response.get("ContentType") or "application/octet-stream"
        return StoredObject(key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    async def confirm(self, written: StoredObject) -> bool:
        """Whether ``written.key`` still holds what ``put`` wrote (see the module docstring)."""
        if written.checksum is None:
            measured = await self.verify(written.key)
            return measured is not None and (measured.size, measured.sha256) == (written.size, written.sha256)
        head = await self._head(*self.locate(written.key))
        if head is None or head.get("ContentLength") != written.size:
            return False
        reported = head.get("ChecksumSHA256")
        return reported is not None and _same_checksum(reported, written.checksum)

    async def _head(self, bucket: str, object_key: str) -> dict[str, Any] | None:
        """``HeadObject`` with the checksum S3 keeps for the object; None when there is no object."""
        s3 = await self._s3()
        try:
            head: dict[str, Any] = await s3.head_object(Bucket=bucket, Key=object_key, ChecksumMode="ENABLED")
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND:
                return None
            raise StorageError(f"head s3://{bucket}/{object_key}: {error}") from error
        except (BotoCoreError, OSError, TimeoutError) as error:
            raise StorageError(f"head s3://{bucket}/{object_key}: {error!r}") from error
        return head

    async def stored_metadata(self, key: str) -> dict[str, Any] | None:
        """``HeadObject`` of the key (metadata, encryption, length) or None; for operators and tests."""
        bucket, object_key = self.locate(key)
        s3 = await self._s3()
        try:
            head: dict[str, Any] = await s3.head_object(Bucket=bucket, Key=object_key)
        except ClientError as error:
            if _error_code(error) in _NOT_FOUND:
                return None
            raise StorageError(f"head s3://{bucket}/{object_key}: {error}") from error
        return head

    async def delete(self, key: str) -> None:
        """Delete every version and delete marker of exactly ``key`` (the current object too), then the
        key itself: on a versioned bucket a plain DELETE would only hide the audio behind a marker.
        A missing key is not an error. Needs ``s3:ListBucketVersions`` and ``s3:DeleteObjectVersion``."""
        bucket, object_key = self.locate(key)
        s3 = await self._s3()
        what = f"delete s3://{bucket}/{object_key}"
        versions: list[str] = []
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": object_key}
        while True:
            page = await self._call(what, s3.list_object_versions(**params))
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry.get("Key") == object_key and entry.get("VersionId"):
                    versions.append(entry["VersionId"])
            if not page.get("IsTruncated"):
                break
            params["KeyMarker"] = page.get("NextKeyMarker")
            params["VersionIdMarker"] = page.get("NextVersionIdMarker")
        for version_id in versions:
            await self._call(what, s3.delete_object(Bucket=bucket, Key=object_key, VersionId=version_id))
        if not versions:  # a store that lists no versions (unversioned, "null" not listed): the key
            await self._call(what, s3.delete_object(Bucket=bucket, Key=object_key))

    async def signed_url(
        self, key: str, *, expires_in: timedelta, download_filename: str | None = None
    ) -> str:
        """A presigned GET of the object, valid for ``expires_in`` capped at ``max_url_lifetime``."""
        bucket, object_key = self.locate(key)
        if expires_in <= timedelta(0):
            raise ValueError("expires_in must be positive")
        params: dict[str, str] = {"Bucket": bucket, "Key": object_key}
        if download_filename is not None:
            params["ResponseContentDisposition"] = content_disposition(
                validate_download_filename(download_filename)
            )
        seconds = max(1, int(min(expires_in, self.max_url_lifetime).total_seconds()))
        await self._s3()
        url: str = await self._presigner.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=seconds
        )
        return url


def _error_code(error: ClientError) -> str:
    response: dict[str, Any] = getattr(error, "response", {}) or {}
    code = response.get("Error", {}).get("Code")
    if code:
        return str(code)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status is not None else "unknown"
