"""What only the S3 store promises, against a local moto server (through a fault proxy where needed).

moto stores whatever bytes arrive and validates no checksum, so the tests that damage a transfer
show that the store's own checks (and its verifying read) catch it, not the server.
"""

from __future__ import annotations

import base64
import hashlib
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from adapters.s3_store import MIN_PART_SIZE, S3RecordingStore, composite_sha256
from application.ports import StorageError
from tests.support.s3 import MotoServer, S3FaultProxy, s3_store_on

KEY = "orgs/org-1/2026/11/24/call-1/rec-1.mp3"
METADATA = {"org-id": "org-1", "call-id": "call-1", "recording-id": "rec-1", "recording-sid": "RE1"}
PART = MIN_PART_SIZE


def audio(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


class DownloadBroke(Exception):
    pass


async def failing_after(data: bytes, at: int) -> AsyncIterator[bytes]:
    async for chunk in chunks_of(data[:at]):
        yield chunk
    raise DownloadBroke()


@pytest.fixture
async def proxied(s3_proxy: S3FaultProxy, s3_bucket: str) -> AsyncIterator[S3RecordingStore]:
    async with s3_store_on(s3_proxy.endpoint_url, s3_bucket) as store:
        yield store


@pytest.fixture
def other_bucket(s3_client: Any) -> Iterator[str]:
    name = f"callrec-platform-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for obj in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
        s3_client.delete_object(Bucket=name, Key=obj["Key"])
    s3_client.delete_bucket(Bucket=name)


def operations(proxy: S3FaultProxy) -> list[str]:
    return [r.operation for r in proxy.seen()]


def leftovers(s3_client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


# --- how objects are written ---------------------------------------------------------------------


async def test_a_short_recording_goes_up_in_one_encrypted_put_with_its_sha256_and_ids(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy, s3_client: Any, s3_bucket: str
) -> None:
    data = audio(200_000)

    stored = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata=METADATA)

    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert operations(s3_proxy) == ["PutObject"]
    [put] = s3_proxy.seen("PutObject")
    assert put.headers["x-amz-checksum-sha256"] == b64sha(data)
    assert put.headers["x-amz-server-side-encryption"] == "AES256"
    head = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {**METADATA, "sha256": sha(data), "size": str(len(data))}
    assert head["ContentType"] == "audio/mpeg"


async def test_a_long_recording_goes_up_in_fixed_size_parts_each_with_its_own_sha256(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy, s3_client: Any, s3_bucket: str
) -> None:
    data = audio(2 * PART + 12345)

    stored = await proxied.put(KEY, chunks_of(data, 100_000), content_type="audio/mpeg", metadata=METADATA)

    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert sorted(operations(s3_proxy)) == sorted(
        [
            "CreateMultipartUpload",
            "UploadPart",
            "UploadPart",
            "UploadPart",
            "CompleteMultipartUpload",
            "HeadObject",  # moto leaves the composite checksum out of the completion's answer
        ]
    )
    parts = sorted(s3_proxy.seen("UploadPart"), key=lambda r: r.part_number or 0)
    pieces = [data[:PART], data[PART : 2 * PART], data[2 * PART :]]
    assert [int(p.headers["Content-Length"]) for p in parts] == [len(piece) for piece in pieces]
    assert [p.headers["x-amz-checksum-sha256"] for p in parts] == [b64sha(piece) for piece in pieces]
    [create] = s3_proxy.seen("CreateMultipartUpload")
    assert create.headers["x-amz-server-side-encryption"] == "AES256"
    head = s3_client.head_object(Bucket=s3_bucket, Key=KEY, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["Metadata"] == {**METADATA, "part-size": str(PART)}
    assert stored.checksum == composite_sha256([hashlib.sha256(piece).digest() for piece in pieces])
    assert head["ChecksumSHA256"] + "-3" == stored.checksum  # computed by moto on receipt
    assert await proxied.verify(KEY) == stored


async def test_the_composite_checksum_is_the_sha256_of_the_parts_sha256s() -> None:
    parts = [b"a" * 10, b"b" * 3]
    digests = [hashlib.sha256(p).digest() for p in parts]
    assert (
        composite_sha256(digests)
        == base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode() + "-2"
    )


async def test_memory_stays_flat_however_long_the_recording(moto_server: MotoServer, s3_bucket: str) -> None:
    chunk = audio(64 * 1024)
    count = 64 * 1024 * 1024 // len(chunk)
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(chunk)

    async def sixty_four_megabytes() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    async with s3_store_on(moto_server.endpoint_url, s3_bucket, upload_concurrency=2) as store:
        tracemalloc.start()
        try:
            stored = await store.put(KEY, sixty_four_megabytes(), content_type="audio/mpeg", metadata={})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert await store.verify(KEY) == stored

    assert (stored.size, stored.sha256) == (count * len(chunk), expected.hexdigest())
    # Per part in flight: its buffer and, while the socket is slower, the transport's copy of what is
    # unsent; plus the part being filled. Bounded by the concurrency, not by the recording's length.
    assert peak < (2 * 2 + 3) * PART < stored.size, peak


async def test_platform_recordings_go_to_their_own_bucket_when_one_is_configured(
    moto_server: MotoServer, s3_bucket: str, other_bucket: str, s3_client: Any
) -> None:
    platform_key = "platform/support/2026/11/24/call-2/rec-2.mp3"
    async with s3_store_on(moto_server.endpoint_url, s3_bucket, platform_bucket=other_bucket) as store:
        await store.put(KEY, chunks_of(b"customer"), content_type="audio/mpeg", metadata={})
        await store.put(platform_key, chunks_of(b"platform"), content_type="audio/mpeg", metadata={})
        assert (await store.verify(platform_key)) is not None

    in_main = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    in_platform = [o["Key"] for o in s3_client.list_objects_v2(Bucket=other_bucket).get("Contents", [])]
    assert (in_main, in_platform) == ([KEY], [platform_key])


async def test_kms_encryption_is_requested_with_the_configured_key(
    s3_proxy: S3FaultProxy, s3_bucket: str, s3_client: Any
) -> None:
    key_id = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    async with s3_store_on(s3_proxy.endpoint_url, s3_bucket, sse="aws:kms", kms_key_id=key_id) as store:
        await store.put(KEY, chunks_of(audio(1000)), content_type="audio/mpeg", metadata={})

    [put] = s3_proxy.seen("PutObject")
    assert put.headers["x-amz-server-side-encryption"] == "aws:kms"
    assert put.headers["x-amz-server-side-encryption-aws-kms-key-id"] == key_id
    head = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert head["ServerSideEncryption"] == "aws:kms"


# --- retries -------------------------------------------------------------------------------------


async def test_a_5xx_on_one_part_is_retried_and_the_upload_completes_verified(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    data = audio(2 * PART + 999)
    s3_proxy.fail_next("UploadPart", 500, part_number=2)

    stored = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    assert [(r.part_number, r.status) for r in s3_proxy.seen("UploadPart") if r.part_number == 2] == [
        (2, 500),
        (2, 200),
    ]
    assert (stored.size, stored.sha256) == (len(data), sha(data))
    assert await proxied.verify(KEY) == stored


async def test_throttling_is_retried_with_backoff(proxied: S3RecordingStore, s3_proxy: S3FaultProxy) -> None:
    s3_proxy.fail_next("PutObject", 503, times=2, code="SlowDown")

    stored = await proxied.put(KEY, chunks_of(b"x" * 1000), content_type="audio/mpeg", metadata={})

    assert [r.status for r in s3_proxy.seen("PutObject")] == [503, 503, 200]
    assert await proxied.verify(KEY) == stored


async def test_a_part_that_keeps_failing_fails_the_put_and_its_upload_is_aborted(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy, s3_client: Any, s3_bucket: str
) -> None:
    s3_proxy.fail_next("UploadPart", 500, times=100, part_number=2)

    with pytest.raises(StorageError):
        await proxied.put(KEY, chunks_of(audio(2 * PART + 1)), content_type="audio/mpeg", metadata={})

    assert len([r for r in s3_proxy.seen("UploadPart") if r.part_number == 2]) == 3  # max_attempts
    assert "AbortMultipartUpload" in operations(s3_proxy)
    assert leftovers(s3_client, s3_bucket) == []
    assert await proxied.verify(KEY) is None


async def test_a_download_breaking_off_aborts_the_upload_and_keeps_the_previous_object(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy, s3_client: Any, s3_bucket: str
) -> None:
    before = await proxied.put(
        KEY, chunks_of(audio(2 * PART, seed=2)), content_type="audio/mpeg", metadata={}
    )

    with pytest.raises(DownloadBroke):
        await proxied.put(
            KEY, failing_after(audio(3 * PART), 2 * PART + 10), content_type="audio/mpeg", metadata={}
        )

    assert leftovers(s3_client, s3_bucket) == []
    assert await proxied.verify(KEY) == before


# --- damage on the way in is caught by our own code ------------------------------------------------


async def test_a_part_corrupted_on_the_way_in_is_caught_although_the_server_accepted_it(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    data = audio(2 * PART + 5)
    s3_proxy.corrupt_next("UploadPart", part_number=2)

    with pytest.raises(StorageError, match="SHA-256"):
        await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    assert [r.status for r in s3_proxy.seen("UploadPart") if r.spoiled] == [200]  # moto took it
    measured = await proxied.verify(KEY)
    assert measured is not None and measured.size == len(data) and measured.sha256 != sha(data)


async def test_a_last_part_cut_short_on_the_way_in_is_caught(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    data = audio(2 * PART + 100_000)
    s3_proxy.truncate_next("UploadPart", part_number=3)

    with pytest.raises(StorageError):
        await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    measured = await proxied.verify(KEY)
    assert measured is None or measured.size < len(data)


async def test_a_single_put_corrupted_on_the_way_in_is_exposed_by_the_verifying_read(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    data = audio(300_000)
    s3_proxy.corrupt_next("PutObject")

    written = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})
    measured = await proxied.verify(KEY)

    assert written.sha256 == sha(data)  # what was sent; moto echoed the checksum without checking it
    assert measured is not None and measured.size == len(data) and measured.sha256 != sha(data)


async def test_confirm_reads_a_single_put_back_and_so_catches_one_damaged_on_the_way_in(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    data = audio(300_000)
    s3_proxy.corrupt_next("PutObject")
    damaged = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})
    assert not await proxied.confirm(damaged)  # moto kept the damaged bytes and echoed our checksum

    intact = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})
    assert intact.checksum is None and await proxied.confirm(intact)
    assert len(s3_proxy.seen("GetObject")) == 2


async def test_confirm_checks_a_multipart_object_by_the_checksum_s3_keeps_without_reading_it(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy, s3_client: Any, s3_bucket: str
) -> None:
    data = audio(2 * PART + 99)
    written = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    assert await proxied.confirm(written)
    # Replaced behind the store's back by an object of the same length and parts: no longer ours.
    replaced = audio(2 * PART + 99, seed=9)
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="SHA256")
    parts = []
    for number, offset in enumerate(range(0, len(replaced), PART), start=1):
        r = s3_client.upload_part(
            Bucket=s3_bucket,
            Key=KEY,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=replaced[offset : offset + PART],
            ChecksumAlgorithm="SHA256",
        )
        parts.append({"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
    s3_client.complete_multipart_upload(
        Bucket=s3_bucket, Key=KEY, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert not await proxied.confirm(written)
    s3_client.delete_object(Bucket=s3_bucket, Key=KEY)
    assert not await proxied.confirm(written)
    assert s3_proxy.seen("GetObject") == []


async def test_where_s3_validates_checksums_a_damaged_part_is_refused_and_sent_again(
    proxied: S3RecordingStore, s3_proxy: S3FaultProxy
) -> None:
    s3_proxy.validate_checksums = True  # as AWS S3 does
    data = audio(2 * PART + 7)
    s3_proxy.corrupt_next("UploadPart", part_number=1)

    stored = await proxied.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    assert [(r.status, r.spoiled) for r in s3_proxy.seen("UploadPart") if r.part_number == 1] == [
        (400, "corrupt"),
        (200, None),
    ]
    assert await proxied.verify(KEY) == stored


async def test_verify_measures_the_bytes_not_the_metadata(
    s3_store: S3RecordingStore, s3_client: Any, s3_bucket: str
) -> None:
    data = audio(100_000)
    stored = await s3_store.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata=METADATA)
    head = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    s3_client.put_object(
        Bucket=s3_bucket, Key=KEY, Body=tampered, Metadata=head["Metadata"], ContentType="audio/mpeg"
    )

    measured = await s3_store.verify(KEY)

    assert measured is not None and measured.sha256 == sha(tampered) != stored.sha256


# --- presigned URLs ------------------------------------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_a_presigned_url_serves_the_recording_whole_and_by_range(s3_store: S3RecordingStore) -> None:
    data = audio(250_000)
    await s3_store.put(KEY, chunks_of(data), content_type="audio/mpeg", metadata={})

    url = await s3_store.signed_url(KEY, expires_in=timedelta(minutes=15))
    async with httpx.AsyncClient() as client:
        whole = await client.get(url)
        ranged = await client.get(url, headers={"Range": "bytes=1000-1999"})

    assert query_of(url)["X-Amz-Expires"] == "900"
    assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, data, "audio/mpeg")
    assert (ranged.status_code, ranged.content) == (206, data[1000:2000])


async def test_a_download_url_makes_s3_answer_with_an_attachment(s3_store: S3RecordingStore) -> None:
    await s3_store.put(KEY, chunks_of(b"audio"), content_type="audio/mpeg", metadata={})

    url = await s3_store.signed_url(KEY, expires_in=timedelta(minutes=5), download_filename="appel-déjà.mp3")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)

    expected = "attachment; filename=\"appel-d_j_.mp3\"; filename*=UTF-8''appel-d%C3%A9j%C3%A0.mp3"
    assert unquote(urlsplit(url).query).count("attachment") == 1
    assert response.headers["content-disposition"] == expected


async def test_url_lifetimes_are_capped_at_the_maximum(moto_server: MotoServer, s3_bucket: str) -> None:
    async with s3_store_on(moto_server.endpoint_url, s3_bucket, max_url_lifetime=timedelta(days=7)) as store:
        webhook = await store.signed_url(KEY, expires_in=timedelta(hours=24))
        too_long = await store.signed_url(KEY, expires_in=timedelta(days=30))

    assert query_of(webhook)["X-Amz-Expires"] == str(24 * 3600)
    assert query_of(too_long)["X-Amz-Expires"] == str(7 * 24 * 3600)
    with pytest.raises(ValueError):
        s3_store_on(moto_server.endpoint_url, s3_bucket, max_url_lifetime=timedelta(days=8))


async def test_urls_are_signed_for_the_public_endpoint_when_one_is_set(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    public = "http://recordings.example.test:9000"
    async with s3_store_on(moto_server.endpoint_url, s3_bucket, public_endpoint_url=public) as store:
        url = await store.signed_url(KEY, expires_in=timedelta(minutes=1))

    assert url.startswith(f"{public}/{s3_bucket}/{KEY}?")


def test_settings_that_s3_would_refuse_are_refused_up_front() -> None:
    for bad in (
        {"part_size": PART - 1},
        {"sse": "none"},
        {"sse": "AES256", "kms_key_id": "k"},
        {"upload_concurrency": 0},
    ):
        with pytest.raises(ValueError):
            S3RecordingStore("bucket", **bad)


# --- deletion ------------------------------------------------------------------------------------


async def test_delete_on_a_versioned_bucket_leaves_no_version_and_no_delete_marker(
    s3_store: S3RecordingStore, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    key, neighbour = "orgs/org-1/2026/11/01/call-1/rec-1.mp3", "orgs/org-1/2026/11/01/call-1/rec-1.mp3x"
    await s3_store.put(key, chunks_of(audio(1000)), content_type="audio/mpeg", metadata={})
    await s3_store.put(key, chunks_of(audio(1000, seed=2)), content_type="audio/mpeg", metadata={})
    s3_client.delete_object(Bucket=s3_bucket, Key=key)  # a plain delete: only a marker on top
    await s3_store.put(key, chunks_of(audio(1000, seed=3)), content_type="audio/mpeg", metadata={})
    await s3_store.put(neighbour, chunks_of(b"keep"), content_type="audio/mpeg", metadata={})
    listed = s3_client.list_object_versions(Bucket=s3_bucket, Prefix=key)
    assert len([v for v in listed["Versions"] if v["Key"] == key]) == 3 and listed["DeleteMarkers"]

    await s3_store.delete(key)

    listed = s3_client.list_object_versions(Bucket=s3_bucket, Prefix=key)
    assert [v["Key"] for v in listed.get("Versions", [])] == [neighbour]
    assert listed.get("DeleteMarkers", []) == []
    assert await s3_store.verify(key) is None
    for version in s3_client.list_object_versions(Bucket=s3_bucket)["Versions"]:  # the fixture's cleanup
        s3_client.delete_object(Bucket=s3_bucket, Key=version["Key"], VersionId=version["VersionId"])
