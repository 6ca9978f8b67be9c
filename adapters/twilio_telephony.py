"""The ``Telephony`` port on Twilio's REST API (official ``twilio`` SDK, async client).

Recording control (start, stop, delete) goes through the SDK's ``*_async`` methods on an
``AsyncTwilioHttpClient`` subclass that

* creates its aiohttp session lazily, inside the running loop (nothing connects, and no loop is needed,
  at construction or import time);
* rewrites scheme, host and port of every request URL to ``api_base`` when that is not Twilio's own
  (``TWILIO_EDGE``/``TWILIO_REGION`` only ever rewrite to ``*.twilio.com`` hosts);
* always passes a finite timeout (the SDK passes ``timeout=None``, which aiohttp reads as "no timeout
  at all", not as "the session's default");
* remembers the last response of the current task so that ``Retry-After`` of a 429/503 can be put on
  the exception (``TwilioRestException`` drops the response headers).

Recording media is downloaded with aiohttp directly (the SDK reads every response whole into a str), as
a stream of chunks, with HTTP basic auth sent only to ``api_base``'s origin.

Callers only ever see the port's exceptions: ``TelephonyError`` (here as ``TwilioTelephonyError``
carrying ``status``, ``code`` and ``retry_after``) and ``MediaNotFound`` (``TwilioMediaNotFound``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from adapters.retry import NO_RETRY, RetryPolicy, Sleep, parse_retry_after, retrying
from application.ports import MediaNotFound, MediaStream, ProviderRecording, TelephonyError
from domain.model import ProviderRecordingStatus

__all__ = [
    "DEFAULT_API_BASE",
    "MEDIA_CHUNK_SIZE",
    "RECORDING_STATUS_CALLBACK_EVENTS",
    "TwilioMediaNotFound",
    "TwilioTelephony",
    "TwilioTelephonyError",
    "basic_auth_header",
    "recording_status",
]

DEFAULT_API_BASE: Final = "https://api.twilio.com"
MEDIA_CHUNK_SIZE: Final = 64 * 1024
RECORDING_STATUS_CALLBACK_EVENTS: Final = ("in-progress", "completed", "absent")

# Twilio's words for a recording's state (its callbacks use the first four, its list all of them),
# in the service's: the status, and whether audio is still being captured.
_RECORDING_STATUSES: Final = {
    "in-progress": (ProviderRecordingStatus.CAPTURING, True),
    "paused": (ProviderRecordingStatus.CAPTURING, True),
    "stopped": (ProviderRecordingStatus.CAPTURING, False),
    "processing": (ProviderRecordingStatus.CAPTURING, False),
    "completed": (ProviderRecordingStatus.COMPLETED, False),
    "absent": (ProviderRecordingStatus.ABSENT, False),
    "failed": (ProviderRecordingStatus.FAILED, False),
}


def recording_status(word: str) -> tuple[ProviderRecordingStatus, bool] | None:
    """Twilio's ``RecordingStatus`` word as ``(status, capturing)``; None for a word it never used."""
    return _RECORDING_STATUSES.get(word)


_API_TIMEOUT_S: Final = 30.0
_MEDIA_TIMEOUT: Final = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=10, sock_read=60)
_MAX_MEDIA_REDIRECTS: Final = 5
_SID_RE: Final = re.compile(r"[A-Za-z0-9]{2,64}")
_T = TypeVar("_T")

# The last response the SDK's http client received in the current task (contextvars are shared by a
# coroutine and the coroutines it awaits, so the adapter sees what its SDK call set).
_last_response: ContextVar[TwilioResponse | None] = ContextVar("twilio_last_response", default=None)


# --- exceptions -----------------------------------------------------------------------------------


class TwilioTelephonyError(TelephonyError):
    """A Twilio request failed.

    ``status`` is the HTTP status (None for network errors and timeouts), ``code`` Twilio's error code
    when it sent one, ``retry_after`` the seconds Twilio asked to wait (429/503 ``Retry-After``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Network errors, timeouts, 429 and 5xx may succeed later; other 4xx will not."""
        return self.status is None or self.status == 429 or self.status >= 500


class TwilioMediaNotFound(MediaNotFound, TwilioTelephonyError):
    """Twilio answered 404 for the recording's media."""


# --- helpers --------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, parts.hostname.lower(), port


def basic_auth_header(user: str, password: str) -> str:
    """An HTTP basic ``Authorization`` value (aiohttp's ``BasicAuth`` is deprecated)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _form_pairs(values: dict[str, object]) -> list[tuple[str, str]]:
    """Form or query pairs; a list value becomes repeated fields, as the SDK's own clients send it."""
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is not None:
                pairs.append((key, str(item)))
    return pairs


def _check_sid(value: str, what: str) -> str:
    if not _SID_RE.fullmatch(value):  # `$` alone would let a trailing newline in
        raise TwilioTelephonyError(f"malformed {what}: {value!r}", status=400)
    return value


class _ApiBaseHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client with a lazy session, a finite timeout and optional URL rewriting."""

    def __init__(self, api_base: str | None, timeout: float) -> None:
        # pool_connections=False: the parent would otherwise build a ClientSession right here, which
        # needs a running loop. The session is made on first use instead (see ensure_session).
        super().__init__(pool_connections=False, timeout=timeout)
        self.session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._rewrite: tuple[str, str, str] | None = None
        if api_base is not None:
            parts = urlsplit(api_base)
            self._rewrite = (parts.scheme, parts.netloc, parts.path.rstrip("/"))

    async def ensure_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self.session is not None and not self.session.closed and self._session_loop is not loop:
            # Made in another (probably finished) event loop, where it can be neither used nor closed.
            self.session = None
        if self.session is None or self.session.closed:
            self._session_loop = loop
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=32),
            )
        return self.session

    def rewrite(self, url: str) -> str:
        if self._rewrite is None:
            return url
        scheme, netloc, prefix = self._rewrite
        parts = urlsplit(url)
        return urlunsplit((scheme, netloc, prefix + parts.path, parts.query, parts.fragment))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the SDK's signature)
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        # Not delegated to the parent: it passes ``timeout=None`` through (aiohttp then has no timeout at
        # all) and uses aiohttp's deprecated ``BasicAuth``/``auth=``.
        if timeout is not None and timeout <= 0:
            raise ValueError(timeout)
        session = await self.ensure_session()
        url = self.rewrite(url)
        send_headers = dict(headers or {})
        if auth is not None:
            send_headers["Authorization"] = basic_auth_header(*auth)
        body: str | None = None
        json_body: object = None
        if data:
            if send_headers.get("Content-Type", "").startswith(("application/json", "application/scim+json")):
                json_body = data
            else:
                body = urlencode(_form_pairs(data))
        self.log_request({"method": method.upper(), "url": url, "params": params, "headers": send_headers})
        async with session.request(
            method.upper(),
            url,
            params=_form_pairs(params) if params else None,
            data=body,
            json=json_body,
            headers=send_headers,
            timeout=aiohttp.ClientTimeout(total=timeout if timeout is not None else self.timeout),
            allow_redirects=allow_redirects,
        ) as raw:
            text = await raw.text(errors="replace")
            self.log_response(raw.status, raw)
            response = TwilioResponse(raw.status, text, raw.headers)
        _last_response.set(response)
        return response

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None and not session.closed and self._session_loop is asyncio.get_running_loop():
            await session.close()


# --- the adapter ----------------------------------------------------------------------------------


class TwilioTelephony:
    """``Telephony`` on Twilio. Use as ``async with TwilioTelephony(...) as t:`` or call ``aclose()``."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str = DEFAULT_API_BASE,
        *,
        retry: RetryPolicy = NO_RETRY,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``retry``: how calls that are safe to repeat are retried on network errors, 429 and 5xx
        (honouring ``Retry-After``): stop, delete, list, opening media; a start only on 429."""
        self._retry = retry
        self._sleep = sleep
        api_base = api_base.rstrip("/")
        self._api_origin = _origin(api_base)  # validates api_base
        self._api_base = api_base
        self._account_sid = account_sid
        self._auth_token = auth_token
        rewrite = None if self._api_origin == _origin(DEFAULT_API_BASE) else api_base
        self._http = _ApiBaseHttpClient(rewrite, timeout=_API_TIMEOUT_S)
        self._client: Any = Client(account_sid, auth_token, http_client=self._http)

    @property
    def api_base(self) -> str:
        return self._api_base

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (if one was ever opened). The adapter may be used again afterwards."""
        await self._http.close()

    # --- recording control (SDK) ------------------------------------------------------------------

    async def start_recording(self, call_sid: str, status_callback_url: str) -> str:
        _check_sid(call_sid, "call sid")
        instance = await self._retried(
            f"start recording of call {call_sid}",
            lambda: self._client.calls(call_sid).recordings.create_async(
                recording_channels="dual",
                recording_status_callback=status_callback_url,
                recording_status_callback_method="POST",
                recording_status_callback_event=list(RECORDING_STATUS_CALLBACK_EVENTS),
            ),
            only_throttled=True,  # a 5xx may have started one: never start a second
        )
        sid = getattr(instance, "sid", None)
        if not isinstance(sid, str) or not sid:
            raise TwilioTelephonyError(f"start recording of call {call_sid}: Twilio returned no sid")
        return sid

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None:
        _check_sid(call_sid, "call sid")
        _check_sid(recording_sid, "recording sid")
        await self._retried(
            f"stop recording {recording_sid} of call {call_sid}",
            lambda: self._client.calls(call_sid).recordings(recording_sid).update_async(status="stopped"),
        )

    async def pause_recording(self, call_sid: str, recording_sid: str, *, pause_behavior: str) -> bool:
        return await self._update_recording(call_sid, recording_sid, "paused", pause_behavior)

    async def resume_recording(self, call_sid: str, recording_sid: str) -> bool:
        return await self._update_recording(call_sid, recording_sid, "in-progress")

    async def _update_recording(
        self, call_sid: str, recording_sid: str, status: str, pause_behavior: str | None = None
    ) -> bool:
        """``Status=paused`` (with ``PauseBehavior``) or ``in-progress``: setting a state, so retried."""
        _check_sid(call_sid, "call sid")
        _check_sid(recording_sid, "recording sid")
        extra = {"pause_behavior": pause_behavior} if pause_behavior is not None else {}
        try:
            await self._retried(
                f"set recording {recording_sid} of call {call_sid} {status}",
                lambda: (
                    self._client.calls(call_sid)
                    .recordings(recording_sid)
                    .update_async(status=status, **extra)
                ),
            )
        except TwilioTelephonyError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def delete_recording(self, recording_sid: str) -> bool:
        _check_sid(recording_sid, "recording sid")
        try:
            await self._retried(
                f"delete recording {recording_sid}",
                lambda: self._client.recordings(recording_sid).delete_async(),
            )
        except TwilioTelephonyError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def list_call_recordings(self, call_sid: str) -> list[ProviderRecording]:
        """A call Twilio does not know (404) has no recordings there: an empty list, asked once."""
        _check_sid(call_sid, "call sid")
        try:
            instances = await self._retried(
                f"list recordings of call {call_sid}",
                lambda: self._client.recordings.list_async(call_sid=call_sid, page_size=100),
            )
        except TwilioTelephonyError as error:
            if error.status == 404:
                return []
            raise
        return [
            ProviderRecording(
                sid=str(instance.sid),
                call_sid=str(instance.call_sid or call_sid),
                status=status[0] if (status := recording_status(str(instance.status or ""))) else None,
                capturing=status[1] if status else False,
                duration_s=_duration(instance.duration),
                media_url=instance.media_url or None,
                error_code=None if instance.error_code in (None, 0, "0") else str(instance.error_code),
            )
            for instance in instances
        ]

    async def _retried(
        self, what: str, call: Callable[[], Awaitable[_T]], *, only_throttled: bool = False
    ) -> _T:
        def retryable(error: Exception) -> bool:
            if not isinstance(error, TwilioTelephonyError) or not error.retryable:
                return False
            return error.status == 429 or not only_throttled

        return await retrying(
            lambda: self._sdk(what, call),
            self._retry,
            retryable=retryable,
            retry_after=lambda error: getattr(error, "retry_after", None),
            sleep=self._sleep,
            what=what,
        )

    async def _sdk(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        token = _last_response.set(None)
        try:
            return await call()
        except (TwilioRestException, TwilioServiceException) as error:
            status = error.status if isinstance(error.status, int) else None
            code = error.code if isinstance(error.code, int) else None
            message = getattr(error, "msg", None) or getattr(error, "title", None) or str(error)
            raise TwilioTelephonyError(
                f"{what}: Twilio answered {status}: {message}",
                status=status,
                code=code,
                retry_after=self._retry_after_of(_last_response.get(), status),
            ) from error
        except TwilioException as error:
            # A page of a list that is not 200 is a bare ``TwilioException("Unable to fetch page",
            # response)``: its status is in that response, and without it a 404 would look like a
            # network error and be retried.
            response = next((a for a in error.args if isinstance(a, TwilioResponse)), None)
            if response is None:
                raise TwilioTelephonyError(f"{what}: {error}") from error
            status = response.status_code
            raise TwilioTelephonyError(
                f"{what}: Twilio answered {status}: {_read_error(response)}",
                status=status,
                code=_error_code(response),
                retry_after=self._retry_after_of(response, status),
            ) from error
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise TwilioTelephonyError(f"{what}: network error: {error!r}") from error
        except ValueError as error:  # unreadable JSON in a 2xx answer
            raise TwilioTelephonyError(f"{what}: unreadable answer: {error}") from error
        finally:
            _last_response.reset(token)

    @staticmethod
    def _retry_after_of(response: TwilioResponse | None, status: int | None) -> float | None:
        if response is None or status not in (429, 503) or response.status_code != status:
            return None
        headers = response.headers
        value = headers.get("Retry-After") if headers is not None else None
        return parse_retry_after(value if isinstance(value, str) else None)

    # --- media (aiohttp, streamed) ----------------------------------------------------------------

    def media_url_for(self, recording_sid: str, media_url: str | None = None) -> str:
        """The URL the audio is fetched from: ``media_url`` + ``.mp3`` when it is on ``api_base``'s
        origin and names this recording, else built from the sid (credentials go nowhere else)."""
        if media_url:
            try:
                same_origin = _origin(media_url) == self._api_origin
            except ValueError:
                same_origin = False
            parts = urlsplit(media_url)
            stem = parts.path.rsplit("/", 1)[-1]
            for extension in (".mp3", ".wav", ".json"):
                stem = stem.removesuffix(extension)
            if same_origin and stem == recording_sid and "/Recordings/" in parts.path:
                path = parts.path
                for extension in (".mp3", ".wav", ".json"):
                    path = path.removesuffix(extension)
                return urlunsplit((parts.scheme, parts.netloc, path + ".mp3", "", ""))
        return (
            f"{self._api_base}/2010-04-01/Accounts/{quote(self._account_sid, safe='')}"
            f"/Recordings/{quote(recording_sid, safe='')}.mp3"
        )

    @asynccontextmanager
    async def open_media(
        self, recording_sid: str, media_url: str | None = None
    ) -> AsyncIterator[MediaStream]:
        """Open the media, retrying the request (not a download that broke off midway)."""
        async with AsyncExitStack() as stack:
            attempts = 0
            while True:
                attempts += 1
                try:
                    media = await stack.enter_async_context(self._open_media_once(recording_sid, media_url))
                    break
                except TwilioTelephonyError as error:
                    retryable = error.retryable and not isinstance(error, MediaNotFound)
                    delay = self._retry.delay(attempts, error.retry_after) if retryable else None
                    if delay is None:
                        raise
                    await self._sleep(delay)
            yield media

    @asynccontextmanager
    async def _open_media_once(
        self, recording_sid: str, media_url: str | None = None
    ) -> AsyncIterator[MediaStream]:
        _check_sid(recording_sid, "recording sid")
        url = self.media_url_for(recording_sid, media_url)
        what = f"download recording {recording_sid}"
        session = await self._http.ensure_session()
        try:
            # aiohttp drops the Authorization header when a redirect leaves the origin (Twilio may
            # redirect media to a signed storage URL), and never adds it back.
            response = await session.get(
                url,
                headers={
                    "Authorization": basic_auth_header(self._account_sid, self._auth_token),
                    "Accept": "audio/mpeg, */*",
                    "Accept-Encoding": "identity",
                },
                timeout=_MEDIA_TIMEOUT,
                allow_redirects=True,
                max_redirects=_MAX_MEDIA_REDIRECTS,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise TwilioTelephonyError(f"{what}: network error: {error!r}") from error
        try:
            status = response.status
            if status == 404:
                raise TwilioMediaNotFound(f"{what}: Twilio has no such media (404)", status=404)
            if not 200 <= status < 300:
                detail = await _read_some(response)
                raise TwilioTelephonyError(
                    f"{what}: Twilio answered {status}: {detail}",
                    status=status,
                    retry_after=(
                        parse_retry_after(response.headers.get("Retry-After"))
                        if status in (429, 503)
                        else None
                    ),
                )
            content_type = response.headers.get("Content-Type", "audio/mpeg").split(";")[0].strip()
            chunks = _stream(response, what)
            try:
                yield MediaStream(
                    content_type=content_type or "audio/mpeg",
                    content_length=response.content_length,
                    chunks=chunks,
                )
            finally:
                await chunks.aclose()
        finally:
            response.release()


def _error_body(response: TwilioResponse) -> dict[str, Any]:
    try:
        body = json.loads(response.text or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _read_error(response: TwilioResponse) -> str:
    message = _error_body(response).get("message")
    return message if isinstance(message, str) else (response.text or "")[:512]


def _error_code(response: TwilioResponse) -> int | None:
    code = _error_body(response).get("code")
    return code if isinstance(code, int) else None


def _duration(value: object) -> int | None:
    """Twilio's duration: seconds as a string, ``-1`` while unknown."""
    try:
        seconds = int(str(value))
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


async def _read_some(response: aiohttp.ClientResponse, limit: int = 512) -> str:
    try:
        data = await response.content.read(limit)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return "(unreadable body)"
    return data.decode("utf-8", "replace")


async def _stream(response: aiohttp.ClientResponse, what: str) -> AsyncGenerator[bytes, None]:
    expected = response.content_length
    received = 0
    try:
        async for chunk in response.content.iter_chunked(MEDIA_CHUNK_SIZE):
            received += len(chunk)
            yield chunk
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise TwilioTelephonyError(
            f"{what}: download broke off after {received} of {expected} bytes: {error!r}"
        ) from error
    if expected is not None and received != expected:
        raise TwilioTelephonyError(f"{what}: received {received} bytes, Content-Length said {expected}")
