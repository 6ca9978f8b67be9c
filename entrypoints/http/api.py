"""Dashboard users → service: settings, calls and recordings of the caller's own org only."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, put
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import Parameter
from litestar.response import Redirect

from application import commands, views
from application.messagebus import MessageBus
from application.services import Services
from application.unit_of_work import CallCursor
from domain.model import DISCLOSURE_TEXT, CallKind
from domain.model import Organization as OrganizationModel
from entrypoints.http.auth import Principal, admin_guard, dashboard_guard
from entrypoints.http.schemas import Call, CallList, Recording, RecordingSetting, RecordingSettingUpdate

CUSTOMER = (CallKind.CUSTOMER,)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def encode_cursor(cursor: CallCursor) -> str:
    raw = json.dumps([cursor.started_at.isoformat(), cursor.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> CallCursor:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        started_at, call_id = json.loads(raw)
        parsed = datetime.fromisoformat(started_at)
        if parsed.tzinfo is None or not isinstance(call_id, str):
            raise ValueError
        return CallCursor(parsed, call_id)
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ValidationException("cursor: malformed cursor") from None


def call_body(view: views.CallView, base_path: str = "/api/v1/calls") -> Call:
    call, rec = view.call, view.recording
    available = rec.status == "available"
    return Call(
        id=call.id,
        from_=call.from_number,
        to=call.to_number,
        status=call.status.value,
        started_at=_iso(call.started_at) or "",
        answered_at=_iso(call.answered_at),
        ended_at=_iso(call.ended_at),
        duration_s=call.duration_s,
        non_engagement=call.non_engagement,
        recording=Recording(
            status=rec.status,  # type: ignore[arg-type]
            reason=rec.reason,  # type: ignore[arg-type]
            duration_s=rec.duration_s,
            size_bytes=rec.size_bytes,
            content_type=rec.content_type,
            playback_url=f"{base_path}/{call.id}/recording" if available else None,
            download_url=f"{base_path}/{call.id}/recording?download=true" if available else None,
        ),
    )


def _principal(request: Request[Any, Any, State]) -> Principal:
    principal: Principal = request.scope["state"]["principal"]
    return principal


def _setting(org: OrganizationModel) -> RecordingSetting:
    return RecordingSetting(enabled=org.recording_enabled, disclosure=DISCLOSURE_TEXT)


CallId = Annotated[str, Parameter(max_length=64)]


class DashboardApi(Controller):
    path = "/api/v1"
    guards = [dashboard_guard]
    tags = ["dashboard"]

    @get("/settings/call-recording")
    async def get_recording_setting(
        self, request: Request[Any, Any, State], services: Services
    ) -> RecordingSetting:
        """The org's recording toggle and the disclosure callers hear when it is on."""
        async with services.uow() as uow:
            org = await uow.organizations.get(_principal(request).org_id)
        if org is None:
            from application.errors import NotFound

            raise NotFound("organization not found")
        return _setting(org)

    @put("/settings/call-recording", guards=[admin_guard])
    async def put_recording_setting(
        self, request: Request[Any, Any, State], data: RecordingSettingUpdate, bus: MessageBus
    ) -> RecordingSetting:
        """Turn recording on or off for the next call (admins only)."""
        principal = _principal(request)
        org = await bus.handle(
            commands.SetCallRecording(org_id=principal.org_id, enabled=data.enabled, changed_by=principal.sub)
        )
        return _setting(org)

    @get("/calls")
    async def list_calls(
        self,
        request: Request[Any, Any, State],
        services: Services,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
        from_: Annotated[date | None, Parameter(query="from")] = None,
        to: Annotated[date | None, Parameter(query="to")] = None,
    ) -> CallList:
        """The org's calls, newest first, a keyset page at a time."""
        after = decode_cursor(cursor) if cursor else None
        started_from = datetime.combine(from_, time.min, UTC) if from_ else None
        started_to = datetime.combine(to, time.min, UTC) + timedelta(days=1) if to else None
        page, next_cursor = await views.list_calls(
            services,
            org_id=_principal(request).org_id,
            kinds=CUSTOMER,
            limit=limit,
            after=after,
            started_from=started_from,
            started_to=started_to,
        )
        return CallList(
            items=[call_body(v) for v in page],
            next_cursor=encode_cursor(next_cursor) if next_cursor else None,
        )

    @get("/calls/{call_id:str}")
    async def get_call(self, request: Request[Any, Any, State], call_id: CallId, services: Services) -> Call:
        """One call with its recording (or the reason there is none)."""
        view = await views.get_call(
            services, org_id=_principal(request).org_id, call_id=call_id, kinds=CUSTOMER
        )
        return call_body(view)

    @get("/calls/{call_id:str}/recording", status_code=307)
    async def get_recording(
        self, request: Request[Any, Any, State], call_id: CallId, services: Services, download: bool = False
    ) -> Response[Any]:
        """307 to a short-lived signed URL of the audio (an attachment with ``download=true``)."""
        url = await views.recording_url(
            services, org_id=_principal(request).org_id, call_id=call_id, kinds=CUSTOMER, download=download
        )
        return Redirect(url, status_code=307, headers={"Cache-Control": "no-store"})
