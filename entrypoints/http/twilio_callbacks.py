"""Twilio → service: form-encoded callbacks, each checked against ``X-Twilio-Signature``.

The signature covers the full URL Twilio called, which is ``CALLREC_PUBLIC_URL`` plus the path (and
query) of the request: behind a proxy the URL this process sees is not the one Twilio signed.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException, ValidationException
from structlog.contextvars import bind_contextvars
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from application import commands
from application.errors import UnknownNumber
from application.handlers import CallDecision
from domain.model import CallStatus, StreamEvent
from entrypoints.config import Settings
from entrypoints.http.deps import Bus
from entrypoints.http.forms import FORM_MAX_BYTES, read_form

log = logging.getLogger(__name__)

# What a signed callback's fields must look like before they go any further (and into columns of a
# bounded width): Twilio's SIDs, phone numbers or SIP/client addresses, and numeric error codes.
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
_ADDRESS = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_GRAMMAR = {
    "CallSid": _SID,
    "AccountSid": _SID,
    "RecordingSid": _SID,
    "StreamSid": _SID,
    "From": _ADDRESS,
    "To": _ADDRESS,
    "ErrorCode": re.compile(r"[0-9]{1,10}"),
}
# X-Twilio-Signature: base64 of an HMAC (SHA-1 today: 28 characters).
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27,88}={0,2}")


async def signed_form(request: Request[Any, Any, State]) -> dict[str, str]:
    """The request's form fields, only if Twilio's signature over them is valid (403 otherwise).

    A request without a well-formed signature header is refused before its body is read.
    """
    settings: Settings = request.app.state.settings
    signature = request.headers.get("x-twilio-signature", "")
    if not settings.twilio_auth_token or not _SIGNATURE.fullmatch(signature):
        log.warning("refused a Twilio callback without a signature on %s", request.url.path)
        raise PermissionDeniedException("invalid Twilio signature")
    params = await read_form(request)
    url = settings.public_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    if not RequestValidator(settings.twilio_auth_token).validate(url, params, signature):
        log.warning("refused a Twilio callback with a bad signature on %s", request.url.path)
        raise PermissionDeniedException("invalid Twilio signature")
    for key, grammar in _GRAMMAR.items():
        value = params.get(key, "")
        if value and not grammar.fullmatch(value):
            raise ValidationException(f"form field {key} is not a valid value")
    if params.get("CallSid"):
        bind_contextvars(call_sid=params["CallSid"])  # on this request's log lines
    return params


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise ValidationException(f"missing form field {name}")
    return value


# Twilio ends a call after 24 hours at most; a week leaves room and keeps every value a small integer.
MAX_SECONDS = 7 * 24 * 3600
_COUNT = re.compile(r"[0-9]{1,7}")


def _seconds(params: dict[str, str], name: str) -> int | None:
    """A duration: whole seconds from 0 to ``MAX_SECONDS``; None when absent.

    ``-1`` is Twilio's "not known yet" (a recording still in progress has that duration), so None too.
    """
    value = params.get(name, "")
    if value in ("", "-1"):
        return None
    if not _COUNT.fullmatch(value) or int(value) > MAX_SECONDS:
        raise ValidationException(f"form field {name} must be a whole number from 0 to {MAX_SECONDS}")
    return int(value)


def _twiml(body: str) -> Response[str]:
    return Response(body, media_type="text/xml")


def connect_twiml(decision: CallDecision, settings: Settings) -> str:
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(
        url=settings.agent_stream_url, status_callback=f"{settings.public_url}/twilio/stream-status"
    )
    stream.parameter(name="call_id", value=decision.call_id)
    stream.parameter(name="greeting", value=decision.greeting)
    stream.parameter(name="recording", value="on" if decision.recorded else "off")
    response.append(connect)
    return str(response.to_xml())


class TwilioCallbacks(Controller):
    path = "/twilio"
    include_in_schema = False
    request_max_body_size = FORM_MAX_BYTES

    @post("/voice", status_code=200)
    async def voice(self, request: Request[Any, Any, State], bus: Bus) -> Response[str]:
        """A call arrives: answer with the Stream TwiML, or Reject for a number nobody owns."""
        params = await signed_form(request)
        command = commands.StartCall(
            call_sid=_required(params, "CallSid"),
            account_sid=params.get("AccountSid", ""),
            from_number=params.get("From", ""),
            to_number=_required(params, "To"),
        )
        try:
            decision: CallDecision = await bus.handle(command)
        except UnknownNumber:
            log.info("rejected call %s to unknown number %s", command.call_sid, command.to_number)
            reject = VoiceResponse()
            reject.reject()
            return _twiml(str(reject.to_xml()))
        bind_contextvars(call_id=decision.call_id)
        log.info("call %s arrived (recording %s)", command.call_sid, "on" if decision.recorded else "off")
        return _twiml(connect_twiml(decision, request.app.state.settings))

    @post("/stream-status", status_code=204)
    async def stream_status(self, request: Request[Any, Any, State], bus: Bus) -> None:
        """``stream-started`` means the agent answered; capture begins now and not before."""
        params = await signed_form(request)
        word = _required(params, "StreamEvent")
        try:
            event = StreamEvent(word)
        except ValueError:
            log.info("ignored stream event %r of call %s", word, params.get("CallSid"))
            return
        await bus.handle(
            commands.RecordStreamEvent(
                call_sid=_required(params, "CallSid"),
                stream_sid=params.get("StreamSid", ""),
                event=event,
            )
        )

    @post("/recording-status", status_code=204)
    async def recording_status(self, request: Request[Any, Any, State], bus: Bus) -> None:
        """Recording lifecycle callbacks; duplicates and out-of-order ones are harmless."""
        from adapters.twilio_telephony import recording_status  # imported after start (container.py)

        params = await signed_form(request)
        error_code = params.get("ErrorCode") or None
        word = _required(params, "RecordingStatus")
        status = recording_status(word)
        if status is None:
            raise ValidationException(f"unknown RecordingStatus {word!r}")
        await bus.handle(
            commands.RecordRecordingStatus(
                call_sid=_required(params, "CallSid"),
                recording_sid=_required(params, "RecordingSid"),
                status=status[0],
                media_url=params.get("RecordingUrl") or None,
                duration_s=_seconds(params, "RecordingDuration"),
                error_code=None if error_code == "0" else error_code,
            )
        )

    @post("/call-status", status_code=204)
    async def call_status(self, request: Request[Any, Any, State], bus: Bus) -> None:
        """The call ends (completed, busy, failed, no-answer, canceled)."""
        params = await signed_form(request)
        status = _required(params, "CallStatus")
        if status in ("queued", "ringing", "in-progress", "initiated"):
            return
        await bus.handle(
            commands.EndCall(
                call_sid=_required(params, "CallSid"),
                status=CallStatus.parse(status),
                duration_s=_seconds(params, "CallDuration"),
            )
        )
