"""The ``RecordingStore`` contract, run against the in-memory fake, the filesystem store and the S3
store (on a local moto server; ``tests/integration/test_s3_store.py`` has what only S3 promises).

Then what only the filesystem store promises: keys never leave its root, objects appear atomically,
large objects stream, and its signed URLs are served by the media route with HTTP Range.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.filesystem_store import (
    FilesystemRecordingStore,
    SignedUrlExpired,
    SignedUrlInvalid,
    StoredObjectNotFound,
)
from adapters.s3_store import S3RecordingStore
from application.ports import RecordingStore, StorageError
from entrypoints.http.media import RangeNotSatisfiable, content_disposition, media_router, parse_byte_range
from tests.fakes_store import InMemoryRecordingStore

START = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
SIGNING_KEY = b"0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://callrec.example"


class MovableClock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def chunks_of(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def failing_after(parts: Iterable[bytes], error: Exception) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise error


class DownloadBroke(Exception):
    pass


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def expires_of(url: str) -> int:
    query = parse_qs(urlsplit(url).query)
    if "X-Amz-Expires" in query:  # an S3 presigned URL: signed at X-Amz-Date, valid X-Amz-Expires seconds
        signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return int(signed.timestamp()) + int(query["X-Amz-Expires"][0])
    return int(query["expires"][0])


def download_name_of(url: str) -> str:
    query = parse_qs(urlsplit(url).query)
    if "response-content-disposition" in query:
        return query["response-content-disposition"][0].split('filename="', 1)[1].split('"', 1)[0]
    return query["download"][0]


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture(params=["in_memory", "filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: MovableClock) -> RecordingStore:
    if request.param == "s3":  # moto; presigned URLs carry the real time they were signed at
        s3_store: RecordingStore = request.getfixturevalue("s3_store")
        clock.now = datetime.now(UTC)
        return s3_store
    if request.param == "in_memory":
        return InMemoryRecordingStore(public_url=PUBLIC_URL, max_url_lifetime=timedelta(hours=1), clock=clock)
    return FilesystemRecordingStore(
        tmp_path / "recordings", PUBLIC_URL, SIGNING_KEY, max_url_lifetime=timedelta(hours=1), clock=clock
    )


@pytest.fixture
def fs_store(tmp_path: Path, clock: MovableClock) -> FilesystemRecordingStore:
    return FilesystemRecordingStore(
        tmp_path / "recordings", PUBLIC_URL, SIGNING_KEY, max_url_lifetime=timedelta(hours=1), clock=clock
    )


AUDIO = bytes(range(256)) * 40 + b"tail"
KEY = "org-1/calls/CA123/RE456.mp3"


# --- the contract -------------------------------------------------------------------------------


async def test_put_returns_the_size_and_sha256_of_the_input(store: RecordingStore) -> None:
    stored = await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={"call": "CA123"})

    assert (stored.key, stored.size, stored.sha256, stored.content_type) == (
        KEY,
        len(AUDIO),
        sha(AUDIO),
        "audio/mpeg",
    )


async def test_verify_measures_what_is_stored(store: RecordingStore) -> None:
    await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})

    measured = await store.verify(KEY)

    assert measured is not None
    assert (measured.size, measured.sha256, measured.content_type) == (len(AUDIO), sha(AUDIO), "audio/mpeg")


async def test_an_empty_object_can_be_stored_and_verified(store: RecordingStore) -> None:
    stored = await store.put("empty.mp3", chunks_of(b""), content_type="audio/mpeg", metadata={})

    assert (stored.size, stored.sha256) == (0, sha(b""))
    assert await store.verify("empty.mp3") == stored


async def test_writing_a_key_twice_is_idempotent(store: RecordingStore) -> None:
    first = await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    second = await store.put(KEY, chunks_of(AUDIO, size=1000), content_type="audio/mpeg", metadata={})

    assert first == second
    assert await store.verify(KEY) == first


async def test_writing_a_key_again_replaces_its_content(store: RecordingStore) -> None:
    await store.put(KEY, chunks_of(b"old audio"), content_type="audio/mpeg", metadata={})
    await store.put(KEY, chunks_of(b"new audio!"), content_type="audio/wav", metadata={})

    measured = await store.verify(KEY)

    assert measured is not None
    assert (measured.size, measured.sha256, measured.content_type) == (10, sha(b"new audio!"), "audio/wav")


async def test_confirm_vouches_for_what_put_wrote_and_for_nothing_else(store: RecordingStore) -> None:
    written = await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    assert await store.confirm(written)

    await store.put(KEY, chunks_of(AUDIO[::-1]), content_type="audio/mpeg", metadata={})  # same length
    assert not await store.confirm(written)
    assert not await store.confirm(dataclasses.replace(written, key="org-1/never-written.mp3"))


async def test_verify_of_a_missing_key_is_none(store: RecordingStore) -> None:
    assert await store.verify("org-1/never-written.mp3") is None


async def test_delete_removes_the_object_and_leaves_its_neighbours(store: RecordingStore) -> None:
    neighbour = KEY + ".other.mp3"  # shares the key as a prefix: must survive
    await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    await store.put(neighbour, chunks_of(b"keep me"), content_type="audio/mpeg", metadata={})

    await store.delete(KEY)

    assert await store.verify(KEY) is None
    kept = await store.verify(neighbour)
    assert kept is not None and kept.sha256 == sha(b"keep me")


async def test_deleting_a_missing_key_or_twice_is_not_an_error(store: RecordingStore) -> None:
    await store.delete("org-1/never-written.mp3")
    await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    await store.delete(KEY)
    await store.delete(KEY)
    assert await store.verify(KEY) is None


async def test_a_put_whose_chunks_fail_midway_leaves_nothing_under_the_key(store: RecordingStore) -> None:
    with pytest.raises(DownloadBroke):
        await store.put(
            KEY,
            failing_after([b"a" * 100, b"b" * 100], DownloadBroke()),
            content_type="audio/mpeg",
            metadata={},
        )

    assert await store.verify(KEY) is None


async def test_a_failed_overwrite_keeps_the_previous_object(store: RecordingStore) -> None:
    before = await store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})

    with pytest.raises(DownloadBroke):
        await store.put(
            KEY, failing_after([b"partial"], DownloadBroke()), content_type="audio/mpeg", metadata={}
        )

    assert await store.verify(KEY) == before


async def test_signed_url_lifetime_is_capped_at_the_maximum(
    store: RecordingStore, clock: MovableClock
) -> None:
    url = await store.signed_url(KEY, expires_in=timedelta(days=30))

    assert abs(expires_of(url) - int((clock.now + store.max_url_lifetime).timestamp())) <= 1


async def test_signed_url_within_the_cap_expires_when_asked(
    store: RecordingStore, clock: MovableClock
) -> None:
    url = await store.signed_url(KEY, expires_in=timedelta(minutes=5))

    assert abs(expires_of(url) - int((clock.now + timedelta(minutes=5)).timestamp())) <= 1
    assert urlsplit(url).path.endswith(f"/{KEY}")
    if not isinstance(store, S3RecordingStore):
        assert urlsplit(url).path == f"/media/{KEY}"
        assert url.startswith(PUBLIC_URL)


async def test_signed_url_for_download_carries_the_filename(store: RecordingStore) -> None:
    url = await store.signed_url(KEY, expires_in=timedelta(minutes=5), download_filename="call 42.mp3")

    assert download_name_of(url) == "call 42.mp3"


# --- the fake's own helpers (so application tests can rely on them) ------------------------------


async def test_the_fake_lets_verification_catch_a_corrupted_object() -> None:
    fake = InMemoryRecordingStore()
    stored = await fake.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})

    fake.corrupt(KEY)
    corrupted = await fake.verify(KEY)

    assert corrupted is not None
    assert corrupted.size == stored.size and corrupted.sha256 != stored.sha256


async def test_the_fake_lets_verification_catch_a_truncated_object() -> None:
    fake = InMemoryRecordingStore()
    stored = await fake.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})

    fake.truncate(KEY)
    truncated = await fake.verify(KEY)

    assert truncated is not None
    assert truncated.size < stored.size


async def test_the_fake_fails_the_next_put_and_then_recovers() -> None:
    fake = InMemoryRecordingStore()
    fake.fail_next("put")

    with pytest.raises(StorageError):
        await fake.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    assert await fake.verify(KEY) is None

    await fake.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    assert fake.data(KEY) == AUDIO


async def test_the_fake_fails_the_next_verify_with_the_given_error() -> None:
    fake = InMemoryRecordingStore()
    fake.fail_next("verify", TimeoutError("slow disk"))

    with pytest.raises(TimeoutError):
        await fake.verify(KEY)
    assert await fake.verify(KEY) is None


# --- filesystem store: keys ---------------------------------------------------------------------

ESCAPING_KEYS = [
    "",
    "/etc/passwd",
    "../outside.mp3",
    "org/../../outside.mp3",
    "org/./file.mp3",
    "..",
    ".",
    "org//file.mp3",
    "org/",
    "org\\..\\file.mp3",
    "org/file.mp3\x00",
    "org/fi le.mp3",
    "org/fïle.mp3",
    "org/file.mp3#1.tmp",
    "org/file.mp3?x=1",
]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
async def test_keys_that_are_not_plain_relative_paths_are_refused(
    fs_store: FilesystemRecordingStore, tmp_path: Path, key: str
) -> None:
    with pytest.raises(ValueError):
        await fs_store.put(key, chunks_of(b"x"), content_type="audio/mpeg", metadata={})
    with pytest.raises(ValueError):
        await fs_store.verify(key)
    with pytest.raises(ValueError):
        await fs_store.signed_url(key, expires_in=timedelta(minutes=1))
    with pytest.raises(SignedUrlInvalid):
        fs_store.resolve_signed(key, {"expires": "9999999999", "sig": "x"})

    assert files_under(tmp_path) == []


async def test_objects_are_kept_under_the_root(fs_store: FilesystemRecordingStore) -> None:
    await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})

    files = files_under(fs_store.root)

    assert files and all(p.resolve().is_relative_to(fs_store.root.resolve()) for p in files)
    assert (fs_store.root / "objects" / KEY).read_bytes() == AUDIO


@pytest.mark.parametrize("filename", ["", "../x.mp3", 'a"b.mp3', "a\nb.mp3", "a/b.mp3"])
async def test_unsafe_download_filenames_are_refused(
    fs_store: FilesystemRecordingStore, filename: str
) -> None:
    with pytest.raises(ValueError):
        await fs_store.signed_url(KEY, expires_in=timedelta(minutes=1), download_filename=filename)


def test_a_short_signing_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FilesystemRecordingStore(tmp_path, PUBLIC_URL, b"short")


# --- filesystem store: atomicity, streaming, durability -----------------------------------------


async def test_an_object_is_invisible_until_its_put_completes(fs_store: FilesystemRecordingStore) -> None:
    halfway = asyncio.Event()
    finish = asyncio.Event()

    async def slow_chunks() -> AsyncIterator[bytes]:
        yield b"first half " * 200_000
        halfway.set()
        await finish.wait()
        yield b"second half"

    put = asyncio.create_task(fs_store.put(KEY, slow_chunks(), content_type="audio/mpeg", metadata={}))
    await halfway.wait()
    await asyncio.sleep(0.05)

    assert await fs_store.verify(KEY) is None
    assert not (fs_store.root / "objects" / KEY).exists()

    finish.set()
    stored = await put
    assert await fs_store.verify(KEY) == stored


async def test_an_overwrite_in_progress_still_shows_the_previous_object(
    fs_store: FilesystemRecordingStore,
) -> None:
    before = await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    halfway = asyncio.Event()
    finish = asyncio.Event()

    async def slow_chunks() -> AsyncIterator[bytes]:
        yield b"x" * 2_000_000
        halfway.set()
        await finish.wait()

    put = asyncio.create_task(fs_store.put(KEY, slow_chunks(), content_type="audio/mpeg", metadata={}))
    await halfway.wait()
    await asyncio.sleep(0.05)

    assert await fs_store.verify(KEY) == before

    finish.set()
    after = await put
    assert await fs_store.verify(KEY) == after


async def test_a_failed_put_leaves_no_temporary_file(fs_store: FilesystemRecordingStore) -> None:
    with pytest.raises(DownloadBroke):
        await fs_store.put(
            KEY, failing_after([b"a" * 3_000_000], DownloadBroke()), content_type="audio/mpeg", metadata={}
        )

    assert files_under(fs_store.root) == []


async def test_a_cancelled_put_leaves_no_object_and_no_temporary_file(
    fs_store: FilesystemRecordingStore,
) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"z" * 1_500_000
            started.set()
            await asyncio.sleep(0)

    put = asyncio.create_task(fs_store.put(KEY, endless(), content_type="audio/mpeg", metadata={}))
    await started.wait()
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    for _ in range(100):  # a write cancelled mid-flight finishes in its thread, then cleans up
        if not files_under(fs_store.root):
            break
        await asyncio.sleep(0.01)

    assert await fs_store.verify(KEY) is None
    assert files_under(fs_store.root) == []


async def test_a_20_mb_put_is_streamed_without_holding_it_in_memory(
    fs_store: FilesystemRecordingStore,
) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB
    count = 20 * 1024 * 1024 // len(chunk)
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(chunk)

    async def twenty_megabytes() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield chunk

    tracemalloc.start()
    try:
        stored = await fs_store.put(KEY, twenty_megabytes(), content_type="audio/mpeg", metadata={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (stored.size, stored.sha256) == (20 * 1024 * 1024, expected.hexdigest())
    assert peak < 8 * 1024 * 1024
    assert await fs_store.verify(KEY) == stored


async def test_objects_survive_a_new_store_on_the_same_root(fs_store: FilesystemRecordingStore) -> None:
    stored = await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={"call": "CA1"})

    reopened = FilesystemRecordingStore(fs_store.root, PUBLIC_URL, SIGNING_KEY)

    assert await reopened.verify(KEY) == stored


async def test_verify_measures_the_file_not_the_sidecar(fs_store: FilesystemRecordingStore) -> None:
    stored = await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    (fs_store.root / "objects" / KEY).write_bytes(AUDIO[:-1])

    measured = await fs_store.verify(KEY)

    assert measured is not None
    assert (measured.size, measured.sha256) == (stored.size - 1, sha(AUDIO[:-1]))


async def test_a_key_blocked_by_a_directory_raises_storage_error(fs_store: FilesystemRecordingStore) -> None:
    await fs_store.put("org/a/b.mp3", chunks_of(b"x"), content_type="audio/mpeg", metadata={})

    with pytest.raises(StorageError):
        await fs_store.put("org/a", chunks_of(b"y"), content_type="audio/mpeg", metadata={})
    assert await fs_store.verify("org/a") is None


# --- filesystem store: checking signed URLs -----------------------------------------------------


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


async def test_a_signed_url_resolves_to_the_file_its_content_type_and_download_name(
    fs_store: FilesystemRecordingStore,
) -> None:
    await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    url = await fs_store.signed_url(KEY, expires_in=timedelta(minutes=5), download_filename="call.mp3")

    path, content_type, download = fs_store.resolve_signed(KEY, query_of(url))

    assert (path.read_bytes(), content_type, download) == (AUDIO, "audio/mpeg", "call.mp3")


async def test_a_signed_url_is_refused_from_the_moment_it_expires(
    fs_store: FilesystemRecordingStore, clock: MovableClock
) -> None:
    await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    url = await fs_store.signed_url(KEY, expires_in=timedelta(minutes=5))

    clock.advance(timedelta(minutes=4, seconds=59))
    fs_store.resolve_signed(KEY, query_of(url))
    clock.advance(timedelta(seconds=1))
    with pytest.raises(SignedUrlExpired):
        fs_store.resolve_signed(KEY, query_of(url))


async def test_a_valid_url_for_a_missing_object_is_not_found(fs_store: FilesystemRecordingStore) -> None:
    url = await fs_store.signed_url(KEY, expires_in=timedelta(minutes=5))

    with pytest.raises(StoredObjectNotFound):
        fs_store.resolve_signed(KEY, query_of(url))


async def test_urls_signed_with_another_key_are_refused(
    fs_store: FilesystemRecordingStore, clock: MovableClock
) -> None:
    await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    other = FilesystemRecordingStore(
        fs_store.root, PUBLIC_URL, b"another-signing-key-32-bytes....", clock=clock
    )
    url = await other.signed_url(KEY, expires_in=timedelta(minutes=5))

    with pytest.raises(SignedUrlInvalid):
        fs_store.resolve_signed(KEY, query_of(url))


async def test_lowering_the_lifetime_cap_also_shortens_urls_already_issued(
    fs_store: FilesystemRecordingStore, clock: MovableClock
) -> None:
    await fs_store.put(KEY, chunks_of(AUDIO), content_type="audio/mpeg", metadata={})
    url = await fs_store.signed_url(KEY, expires_in=timedelta(hours=1))
    stricter = FilesystemRecordingStore(
        fs_store.root, PUBLIC_URL, SIGNING_KEY, max_url_lifetime=timedelta(minutes=10), clock=clock
    )

    with pytest.raises(SignedUrlInvalid):
        stricter.resolve_signed(KEY, query_of(url))


# --- the media route ----------------------------------------------------------------------------

BIG = bytes((i * 7) % 251 for i in range(200_000))  # spans several 64 KiB stream chunks


@pytest.fixture
async def client(fs_store: FilesystemRecordingStore) -> AsyncIterator[AsyncTestClient[Litestar]]:
    await fs_store.put(KEY, chunks_of(BIG, size=50_000), content_type="audio/mpeg", metadata={})
    app = Litestar(route_handlers=[media_router(fs_store)])
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def with_params(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    params = {**query_of(url), **changes}
    return f"{parts.path}?{urlencode(params)}"


async def signed(store: FilesystemRecordingStore, **kwargs: Any) -> str:
    return local(await store.signed_url(KEY, expires_in=timedelta(minutes=5), **kwargs))


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


async def test_a_signed_url_serves_the_whole_recording_inline(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store))

    assert response.status_code == 200
    assert response.content == BIG
    assert response.headers["content-type"] == "audio/mpeg"
    assert response.headers["content-length"] == str(len(BIG))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["content-disposition"] == "inline"
    assert "content-range" not in response.headers


async def test_a_byte_range_is_served_as_partial_content(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store), headers={"Range": "bytes=60000-140000"})

    assert response.status_code == 206
    assert response.content == BIG[60000:140001]
    assert response.headers["content-range"] == f"bytes 60000-140000/{len(BIG)}"
    assert response.headers["content-length"] == "80001"


async def test_an_open_ended_range_runs_to_the_end(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store), headers={"Range": "bytes=199990-"})

    assert response.status_code == 206
    assert response.content == BIG[199990:]
    assert response.headers["content-range"] == f"bytes 199990-199999/{len(BIG)}"


async def test_a_suffix_range_serves_the_last_bytes(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store), headers={"Range": "bytes=-100"})

    assert response.status_code == 206
    assert response.content == BIG[-100:]
    assert response.headers["content-range"] == f"bytes {len(BIG) - 100}-{len(BIG) - 1}/{len(BIG)}"


async def test_a_range_past_the_end_is_not_satisfiable(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store), headers={"Range": f"bytes={len(BIG)}-"})

    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(BIG)}"
    assert error_code(response) == "range_not_satisfiable"


async def test_a_range_for_another_version_of_the_object_gets_the_whole_object(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(
        await signed(fs_store), headers={"Range": "bytes=0-9", "If-Range": '"some-other-version"'}
    )

    assert response.status_code == 200
    assert response.content == BIG


async def test_a_range_for_the_same_version_is_honoured(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    url = await signed(fs_store)
    etag = (await client.get(url, headers={"Range": "bytes=0-0"})).headers["etag"]

    response = await client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})

    assert response.status_code == 206
    assert response.content == BIG[:10]


async def test_a_download_url_serves_an_attachment(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store, download_filename="call CA123.mp3"))

    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="call CA123.mp3"'


async def test_a_non_ascii_download_name_is_sent_with_an_ascii_fallback(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    response = await client.get(await signed(fs_store, download_filename="appel-déjà.mp3"))

    assert response.headers["content-disposition"] == (
        "attachment; filename=\"appel-d_j_.mp3\"; filename*=UTF-8''appel-d%C3%A9j%C3%A0.mp3"
    )


async def test_an_expired_url_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore, clock: MovableClock
) -> None:
    url = await signed(fs_store)
    clock.advance(timedelta(minutes=6))

    response = await client.get(url)

    assert response.status_code == 403
    assert error_code(response) == "url_expired"
    assert response.headers["cache-control"] == "private, no-store"


async def test_a_tampered_signature_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    url = await signed(fs_store)
    sig = query_of(url)["sig"]
    forged = ("A" if sig[0] != "A" else "B") + sig[1:]

    response = await client.get(with_params(url, sig=forged))

    assert response.status_code == 403
    assert error_code(response) == "invalid_signature"


async def test_a_url_moved_to_another_key_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    other_key = "org-2/calls/CA999/RE999.mp3"
    await fs_store.put(other_key, chunks_of(b"secret"), content_type="audio/mpeg", metadata={})
    url = await signed(fs_store)

    response = await client.get(url.replace(KEY, other_key))

    assert response.status_code == 403
    assert error_code(response) == "invalid_signature"


async def test_an_extended_expiry_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    url = await signed(fs_store)

    response = await client.get(with_params(url, expires=str(int(query_of(url)["expires"]) + 60)))

    assert response.status_code == 403
    assert error_code(response) == "invalid_signature"


async def test_a_download_filename_added_or_changed_after_signing_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    inline_url = await signed(fs_store)
    download_url = await signed(fs_store, download_filename="call.mp3")

    added = await client.get(with_params(inline_url, download="evil.exe"))
    changed = await client.get(with_params(download_url, download="evil.exe"))
    emptied = await client.get(with_params(download_url, download=""))

    assert [r.status_code for r in (added, changed, emptied)] == [403, 403, 403]


async def test_a_repeated_signed_parameter_is_refused(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    url = await signed(fs_store, download_filename="call.mp3")

    response = await client.get(url + "&download=evil.exe")

    assert response.status_code == 403


async def test_an_unsigned_request_is_refused_without_revealing_whether_the_object_exists(
    client: AsyncTestClient[Litestar],
) -> None:
    existing = await client.get(f"/media/{KEY}")
    missing = await client.get("/media/org-1/nothing.mp3")

    assert (existing.status_code, missing.status_code) == (403, 403)
    assert error_code(existing) == error_code(missing) == "invalid_signature"


async def test_a_path_traversal_request_is_refused(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/media/..%2F..%2Fetc%2Fpasswd?expires=9999999999&sig=x")

    assert response.status_code in (403, 404)
    assert b"root:" not in response.content


async def test_a_valid_url_for_a_missing_recording_is_not_found(
    client: AsyncTestClient[Litestar], fs_store: FilesystemRecordingStore
) -> None:
    url = local(await fs_store.signed_url("org-1/missing.mp3", expires_in=timedelta(minutes=5)))

    response = await client.get(url)

    assert response.status_code == 404
    assert error_code(response) == "not_found"


# --- range parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-200", 100, (90, 100)),
        ("bytes=10-", 100, (10, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("BYTES=0-0", 100, (0, 1)),
        ("bytes=5-2", 100, None),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
        ("bytes=x-1", 100, None),
        ("bytes=-5", 0, None),
    ],
)
def test_range_headers_are_read_as_one_half_open_range_or_ignored(
    header: str, size: int, expected: tuple[int, int] | None
) -> None:
    assert parse_byte_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0)]
)
def test_ranges_outside_the_object_are_not_satisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_byte_range(header, size)


@given(
    size=st.integers(min_value=0, max_value=10_000),
    first=st.integers(min_value=0, max_value=12_000) | st.none(),
    last=st.integers(min_value=0, max_value=12_000) | st.none(),
)
def test_a_satisfiable_range_always_lies_within_the_object(
    size: int, first: int | None, last: int | None
) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    try:
        result = parse_byte_range(header, size)
    except RangeNotSatisfiable:
        return
    if result is not None:
        start, stop = result
        assert 0 <= start < stop <= size


def test_inline_disposition_when_no_download_was_signed() -> None:
    assert content_disposition(None) == "inline"
