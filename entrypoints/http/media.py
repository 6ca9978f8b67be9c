"""``GET /media/{key}``: serves recordings of the filesystem store through its signed URLs.

The URL is a bearer capability (``?expires=…&sig=…[&download=…]``, issued by
``FilesystemRecordingStore.signed_url``); the route takes no other authentication.

Responses:

- ``200`` the whole object, ``Accept-Ranges: bytes``;
- ``206`` one byte range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) with ``Content-Range``;
  a Range header with several ranges, another unit or bad syntax is ignored (RFC 9110 allows it) and
  the whole object is sent, as it is when ``If-Range`` names another version of the object;
- ``416`` a range that starts past the end, with ``Content-Range: bytes */{size}``;
- ``403`` ``invalid_signature``: missing, malformed or wrong signature, or a changed key, expiry or
  download filename;
- ``403`` ``url_expired``: a genuine URL past its expiry. 403 rather than 410 because the recording is
  not gone, only this capability is, and S3 presigned URLs answer the same way, so clients see one
  behaviour whichever store is configured;
- ``404`` ``not_found``: a genuine URL whose object is not stored;
- ``503`` ``storage_unavailable``: the filesystem failed.

Errors are JSON ``{"error": {"code": …, "message": …}}``. Every response carries
``Cache-Control: private, no-store``: the URL is a secret and shared caches must not keep the audio.
``Content-Disposition`` is ``attachment; filename="…"`` when the URL was signed with a download
filename (plus ``filename*`` for non-ASCII names), ``inline`` otherwise.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, Router, get
from litestar.params import FromPath
from litestar.response import Stream
from litestar.types import ExceptionHandlersMap

from adapters.filesystem_store import (
    FilesystemRecordingStore,
    SignedUrlInvalid,
    SignedUrlRejected,
    StoredObjectNotFound,
)
from application.ports import StorageError

__all__ = ["RangeNotSatisfiable", "content_disposition", "media_router", "parse_byte_range"]

_NO_STORE = "private, no-store"
_SIGNED_PARAMS = ("expires", "sig", "download")
_SINGLE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE | re.ASCII)


class RangeNotSatisfiable(Exception):
    """The requested byte range lies wholly outside an object of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for {size} bytes")
        self.size = size


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The half-open ``[start, stop)`` a single-range ``Range`` header asks of ``size`` bytes.

    Returns None when the header should be ignored (whole object sent): several ranges, another
    unit, bad syntax, or a suffix range of an empty object. Raises ``RangeNotSatisfiable`` when the
    range starts at or past the end, or is an empty suffix (``bytes=-0``).
    """
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = (_position(group) for group in match.groups())
    if first is None:
        if last is None:
            return None
        if last == 0:
            raise RangeNotSatisfiable(size)
        if size == 0:
            return None
        return max(0, size - last), size
    if last is not None and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable(size)
    end = last if last is not None else size - 1
    return first, min(end, size - 1) + 1


# Byte positions past this are all "beyond any object" alike; it also keeps ``int()`` away from
# numbers thousands of digits long (Python refuses to parse those).
_MAX_POSITION = 10**18


def _position(digits: str) -> int | None:
    """A byte position from the header's digits: None when absent, capped at ``_MAX_POSITION``."""
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return _MAX_POSITION if len(digits) > 18 else int(digits)


def content_disposition(download_filename: str | None) -> str:
    """``inline``, or ``attachment`` with the filename (ASCII fallback plus RFC 6266 ``filename*``)."""
    if download_filename is None:
        return "inline"
    fallback = "".join(c if " " <= c <= "~" else "_" for c in download_filename)
    header = f'attachment; filename="{fallback}"'
    if fallback != download_filename:
        header += f"; filename*=UTF-8''{quote(download_filename, safe='')}"
    return header


def _signed_params(request: Request[Any, Any, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in _SIGNED_PARAMS:
            if name in params:
                raise SignedUrlInvalid(f"the query parameter {name!r} is repeated")
            params[name] = value
    return params


def _error(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content={"error": {"code": code, "message": message}},
        status_code=status_code,
        headers={"Cache-Control": _NO_STORE, **(headers or {})},
        media_type="application/json",
    )


def _handle_rejected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    code = exc.code if isinstance(exc, SignedUrlRejected) else "invalid_signature"
    return _error(403, code, str(exc) or "access denied")


def _handle_not_found(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _error(404, "not_found", str(exc) or "not found")


def _handle_unsatisfiable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    size = exc.size if isinstance(exc, RangeNotSatisfiable) else 0
    return _error(
        416,
        "range_not_satisfiable",
        f"the requested range lies outside the {size} bytes of this recording",
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


def _handle_storage_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return _error(503, "storage_unavailable", "the recording store is unavailable; try again")


_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    SignedUrlRejected: _handle_rejected,
    StoredObjectNotFound: _handle_not_found,
    RangeNotSatisfiable: _handle_unsatisfiable,
    StorageError: _handle_storage_error,
}


def media_router(store: FilesystemRecordingStore, *, path: str = "/media") -> Router:
    """A router serving ``GET {path}/{key}`` for the store's signed URLs (see the module docstring)."""

    @get("/{key:path}", name="media", include_in_schema=False)
    async def serve_media(request: Request[Any, Any, Any], key: FromPath[str]) -> Stream:
        """Stream a stored recording, whole or by byte range, to the holder of a valid signed URL."""
        key = key.removeprefix("/")
        media = await store.open_signed(key, _signed_params(request))
        try:
            byte_range: tuple[int, int] | None = None
            range_header = request.headers.get("range")
            if_range = request.headers.get("if-range")
            if range_header is not None and (
                if_range is None or if_range in (media.etag, media.last_modified)
            ):
                byte_range = parse_byte_range(range_header, media.size)
        except BaseException:
            media.close()
            raise
        headers = {
            "Accept-Ranges": "bytes",
            "Cache-Control": _NO_STORE,
            "Content-Disposition": content_disposition(media.download_filename),
            "ETag": media.etag,
            "Last-Modified": media.last_modified,
            "X-Content-Type-Options": "nosniff",
        }
        if byte_range is None:
            start, stop, status_code = 0, media.size, 200
        else:
            start, stop = byte_range
            status_code = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{media.size}"
        headers["Content-Length"] = str(stop - start)
        return Stream(
            media.chunks(start, stop),
            status_code=status_code,
            headers=headers,
            media_type=media.content_type,
        )

    return Router(path=path, route_handlers=[serve_media], exception_handlers=_EXCEPTION_HANDLERS)
