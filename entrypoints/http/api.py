"""Dashboard users → service: settings, calls and recordings of the caller's own org only.

Every object is looked up within the caller's org: another org's call answers 404 exactly like a
missing one, and no URL is minted and no storage touched for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, put
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.response import Redirect

from application import audit, commands, views
from application.errors import NotFound
from application.ports import AuditCursor, CallCursor, CallQuery
from domain.audit import AuditEntry
from domain.model import DISCLOSURE_TEXT, Call, CallKind, NumberRecordingMode, Organization, PauseInterval
from entrypoints.http import call_list
from entrypoints.http.auth import admin_guard, audit_actor, customer_guard, principal_of
from entrypoints.http.cursors import BeforeQuery, CursorQuery, decode_keyset, encode_keyset
from entrypoints.http.deps import Bus, ServicesDep
from entrypoints.http.errors import AUDIT_DOWN, AUTH_ERRORS, BAD_REQUEST, BODY_ERRORS, GONE, NOT_FOUND
from entrypoints.http.schemas import (
    AdditionalRecordingResponse,
    AuditEntryResponse,
    AuditPage,
    CallDetailResponse,
    CallPage,
    CallResponse,
    ConsentResponse,
    IdPath,
    LegalHoldResponse,
    LegalHoldUpdate,
    NumberPath,
    NumberRecordingSetting,
    NumberRecordingUpdate,
    PauseResponse,
    RecordingResponse,
    RecordingSetting,
    RecordingSettingUpdate,
    RetentionSetting,
    RetentionSettingUpdate,
)

CUSTOMER = (CallKind.CUSTOMER,)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def encode_cursor(cursor: CallCursor) -> str:
    return encode_keyset(cursor.started_at, cursor.id)


def decode_cursor(value: str) -> CallCursor:
    return CallCursor(*decode_keyset(value))


def call_body(view: views.CallView, base_path: str = "/api/v1/calls") -> CallResponse:
    call, rec = view.call, view.recording
    available = rec.status == "available"
    return CallResponse(
        id=call.id,
        from_=call.from_number,
        to=call.to_number,
        status=call.status.value,
        started_at=_iso(call.started_at) or "",
        answered_at=_iso(call.answered_at),
        ended_at=_iso(call.ended_at),
        duration_s=call.duration_s,
        non_engagement=view.non_engagement,
        consent=ConsentResponse(
            recorded=call.consent.recorded,
            disclosure_text=call.consent.disclosure_text,
            disclosure_version=call.consent.disclosure_version,
            disclosed_at=_iso(call.consent.disclosed_at),
        ),
        recording=RecordingResponse(
            status=rec.status,  # type: ignore[arg-type]
            reason=rec.reason,  # type: ignore[arg-type]
            duration_s=rec.duration_s,
            size_bytes=rec.size_bytes,
            content_type=rec.content_type,
            playback_url=f"{base_path}/{call.id}/recording" if available else None,
            download_url=f"{base_path}/{call.id}/recording?download=true" if available else None,
            purged_at=_iso(rec.purged_at),
        ),
        legal_hold=legal_hold_body(call),
    )


def legal_hold_body(call: Call) -> LegalHoldResponse:
    hold = call.legal_hold
    if hold is None:
        return LegalHoldResponse(held=False, reason=None, held_by=None, held_at=None)
    return LegalHoldResponse(held=True, reason=hold.reason, held_by=hold.held_by, held_at=_iso(hold.held_at))


def call_detail_body(view: views.CallView, base_path: str = "/api/v1/calls") -> CallDetailResponse:
    """``call_body`` and the fate of the call's additional recordings."""
    body = call_body(view, base_path)
    return CallDetailResponse(
        **{name: getattr(body, name) for name in CallResponse.__struct_fields__},
        additional_recordings=[
            AdditionalRecordingResponse(
                status=rec.status,  # type: ignore[arg-type]
                reason=rec.reason,  # type: ignore[arg-type]
                duration_s=rec.duration_s,
                size_bytes=rec.size_bytes,
                content_type=rec.content_type,
            )
            for rec in view.additional_recordings
        ],
        pauses=pause_bodies(view.pauses),
    )


def _number_setting(view: views.NumberRecordingView) -> NumberRecordingSetting:
    return NumberRecordingSetting(
        number=view.number,
        mode=view.mode,  # type: ignore[arg-type]
        effective=view.effective,
        changed_by=view.changed_by,
        changed_at=_iso(view.changed_at),
    )


def pause_bodies(pauses: Iterable[PauseInterval]) -> list[PauseResponse]:
    return [
        PauseResponse(
            paused_at=_iso(p.paused_at) or "",
            resumed_at=_iso(p.resumed_at),
            paused_by=p.paused_by,
            resumed_by=p.resumed_by,
            resume_reason=p.resume_reason.value if p.resume_reason else None,
        )
        for p in pauses
    ]


def _setting(org: Organization) -> RecordingSetting:
    return RecordingSetting(
        enabled=org.recording_enabled,
        disclosure=DISCLOSURE_TEXT,
        changed_by=org.recording_changed_by,
        changed_at=_iso(org.recording_changed_at),
        numbers=[_number_setting(v) for v in views.number_recording_views(org)],
        keep_non_engagement=org.keep_non_engagement,
    )


CallId = IdPath


def encode_audit_cursor(cursor: AuditCursor) -> str:
    return encode_keyset(cursor.occurred_at, cursor.id)


def decode_audit_cursor(value: str) -> AuditCursor:
    return AuditCursor(*decode_keyset(value))


def audit_entry_body(entry: AuditEntry) -> AuditEntryResponse:
    return AuditEntryResponse(
        id=entry.id,
        seq=entry.seq or 0,
        occurred_at=_iso(entry.occurred_at) or "",
        actor=entry.actor,
        actor_role=entry.actor_role,
        action=entry.action,
        call_id=entry.call_id,
        reason=entry.reason,
        outcome=entry.outcome,
        target_id=entry.target_id,
        request_id=entry.request_id,
    )


RecordingFilter = Literal["available", "processing", "not_recorded", "failed", "purged"]
Limit = Annotated[int, QueryParameter(ge=1, le=200, description="Page size, 1 to 200")]
Cursor = CursorQuery
Before = BeforeQuery


class DashboardApi(Controller):
    path = "/api/v1"
    guards = [customer_guard]
    tags = ["dashboard"]

    @get("/settings/call-recording", responses={**AUTH_ERRORS, **NOT_FOUND})
    async def get_recording_setting(
        self, request: Request[Any, Any, State], services: ServicesDep
    ) -> RecordingSetting:
        """The org's recording toggle, each of its numbers' own setting and what its next call gets (who
        changed each, when), and the disclosure callers hear on a recorded call."""
        async with services.reader() as uow:
            org = await uow.organizations.get(principal_of(request).org_id)
        if org is None:
            raise NotFound("organization not found")
        return _setting(org)

    @put(
        "/settings/call-recording",
        guards=[admin_guard],
        responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND},
    )
    async def put_recording_setting(
        self, request: Request[Any, Any, State], data: JSONBody[RecordingSettingUpdate], bus: Bus
    ) -> RecordingSetting:
        """Turn recording on or off for the org's next calls (admins only); calls in progress keep theirs.

        ``keep_non_engagement`` (optional): false deletes the recordings of calls the scorability
        filter marks non-engagement once they settle."""
        principal = principal_of(request)
        org = await bus.handle(
            commands.SetCallRecording(
                org_id=principal.org_id,
                enabled=data.enabled,
                changed_by=principal.sub,
                actor=audit_actor(request),
                keep_non_engagement=data.keep_non_engagement,
            )
        )
        return _setting(org)

    @put(
        "/settings/call-recording/numbers/{number:str}",
        guards=[admin_guard],
        responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND},
    )
    async def put_number_recording_setting(
        self,
        request: Request[Any, Any, State],
        number: NumberPath,
        data: JSONBody[NumberRecordingUpdate],
        bus: Bus,
    ) -> NumberRecordingSetting:
        """Set one of the org's numbers to ``on``, ``off`` or ``inherit`` (the org toggle) for its next
        calls (admins only); calls in progress keep theirs. A number the org does not own is 404."""
        principal = principal_of(request)
        org = await bus.handle(
            commands.SetNumberRecording(
                org_id=principal.org_id,
                number=number,
                mode=NumberRecordingMode(data.mode),
                changed_by=principal.sub,
                actor=audit_actor(request),
            )
        )
        [view] = [v for v in views.number_recording_views(org) if v.number == number]
        return _number_setting(view)

    @get("/calls", responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def list_calls(
        self,
        request: Request[Any, Any, State],
        services: ServicesDep,
        limit: Annotated[int, QueryParameter(ge=1, le=200, description="Page size, 1 to 200")] = 50,
        cursor: Cursor = None,
        before: Before = None,
        from_: Annotated[
            date | None, QueryParameter(name="from", description="First day (UTC), inclusive")
        ] = None,
        to: Annotated[date | None, QueryParameter(description="Last day (UTC), inclusive")] = None,
        recording: Annotated[
            RecordingFilter | None, QueryParameter(description="Only calls whose recording is")
        ] = None,
        caller: Annotated[
            str | None,
            QueryParameter(
                max_length=40,
                pattern=call_list.CALLER_PATTERN,
                description="Only callers whose number starts with this (E.164 digits)",
            ),
        ] = None,
        hide_non_engagement: Annotated[
            bool, QueryParameter(description="Leave out calls judged non-engagement")
        ] = False,
        tz: Annotated[
            str | None,
            QueryParameter(
                description="IANA time zone of `from` and `to` (default UTC)",
                schema_extra={"enum": call_list.time_zone_names()} if call_list.time_zone_names() else None,
            ),
        ] = None,
    ) -> CallPage:
        """The org's calls, newest first, one keyset page at a time: `next_cursor` as `cursor` for the
        older page, `prev_cursor` as `before` for the newer one (never both: 400)."""
        if cursor and before:
            raise ValidationException("before: a page is either older (cursor) or newer (before)")
        after = decode_cursor(cursor) if cursor else None
        newer_than = decode_cursor(before) if before else None
        if from_ is not None and to is not None and to < from_:
            raise ValidationException("to: must not be before from")
        try:
            zone = call_list.time_zone(tz) if tz else None
            started_from, started_to = call_list.day_bounds(from_, to, zone)
            caller_prefix = call_list.normalize_caller(caller) if caller else None
        except call_list.FilterError as error:
            raise ValidationException(str(error)) from None
        found = await views.calls_page(
            services,
            CallQuery(
                org_id=principal_of(request).org_id,
                kinds=CUSTOMER,
                limit=limit,
                after=after,
                before=newer_than,
                started_from=started_from,
                started_to=started_to,
                recording_status=recording,
                caller_prefix=caller_prefix,
                hide_non_engagement=hide_non_engagement,
            ),
        )
        return CallPage(
            items=[call_body(v) for v in found.items],
            next_cursor=encode_cursor(found.older) if found.older else None,
            prev_cursor=encode_cursor(found.newer) if found.newer else None,
        )

    @get("/calls/{call_id:str}", responses={**AUTH_ERRORS, **BAD_REQUEST, **NOT_FOUND})
    async def get_call(
        self, request: Request[Any, Any, State], call_id: CallId, services: ServicesDep
    ) -> CallDetailResponse:
        """One call with its recording, or the reason there is none, and any additional recordings."""
        view = await views.get_call(
            services, org_id=principal_of(request).org_id, call_id=call_id, kinds=CUSTOMER
        )
        return call_detail_body(view)

    @get(
        "/calls/{call_id:str}/recording",
        status_code=307,
        responses={
            307: ResponseSpec(None, description="Redirect to a short-lived signed URL of the audio"),
            **AUTH_ERRORS,
            **BAD_REQUEST,
            **NOT_FOUND,
            **GONE,
            **AUDIT_DOWN,
        },
    )
    async def get_recording(
        self,
        request: Request[Any, Any, State],
        call_id: CallId,
        services: ServicesDep,
        download: Annotated[bool, QueryParameter(description="Serve the audio as an attachment")] = False,
    ) -> Response[Any]:
        """307 to a short-lived signed URL of the audio (Range requests work on it); 410 once purged.

        The access is in the org's audit log before the URL is issued; 503 when it cannot be written.
        """
        url = await views.recording_url(
            services,
            actor=audit_actor(request),
            org_id=principal_of(request).org_id,
            call_id=call_id,
            kinds=CUSTOMER,
            download=download,
        )
        return Redirect(url, status_code=307, headers={"Cache-Control": "no-store"})

    @get("/settings/retention", responses={**AUTH_ERRORS, **NOT_FOUND})
    async def get_retention(
        self, request: Request[Any, Any, State], services: ServicesDep
    ) -> RetentionSetting:
        """How long the org keeps its recordings, in days; null: indefinitely (the default)."""
        async with services.reader() as uow:
            org = await uow.organizations.get(principal_of(request).org_id)
        if org is None:
            raise NotFound("organization not found")
        return RetentionSetting(days=org.retention_days)

    @put("/settings/retention", guards=[admin_guard], responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND})
    async def put_retention(
        self, request: Request[Any, Any, State], data: JSONBody[RetentionSettingUpdate], bus: Bus
    ) -> RetentionSetting:
        """Keep the org's recordings `days` days (1 to 3650), or indefinitely (null); admins only.

        The daily purge then deletes the audio of calls that started longer ago than that (calls under
        legal hold excepted) and keeps their details. Audited."""
        principal = principal_of(request)
        org = await bus.handle(
            commands.SetRetention(
                org_id=principal.org_id,
                days=None if data.days is None else int(data.days),
                changed_by=principal.sub,
                actor=audit_actor(request),
            )
        )
        return RetentionSetting(days=org.retention_days)

    @put(
        "/calls/{call_id:str}/legal-hold",
        guards=[admin_guard],
        responses={**AUTH_ERRORS, **BODY_ERRORS, **NOT_FOUND},
    )
    async def put_legal_hold(
        self, request: Request[Any, Any, State], call_id: CallId, data: JSONBody[LegalHoldUpdate], bus: Bus
    ) -> LegalHoldResponse:
        """Place (`held: true`, a non-empty `reason` required) or release a call's legal hold (admins).

        A held call's recording is neither purged by retention nor erased until the hold is released.
        Audited."""
        principal = principal_of(request)
        call = await bus.handle(
            commands.SetLegalHold(
                org_id=principal.org_id,
                call_id=call_id,
                held=data.held,
                reason=data.reason,
                by=principal.sub,
                actor=audit_actor(request),
            )
        )
        return legal_hold_body(call)

    @get("/audit-log", guards=[admin_guard], responses={**AUTH_ERRORS, **BAD_REQUEST})
    async def audit_log(
        self,
        request: Request[Any, Any, State],
        services: ServicesDep,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> AuditPage:
        """The org's audit log (admins only), newest first: every access to its recordings (its own
        users', recording URLs put into webhooks, and the operations team's with its reason) and every
        change of its recording setting and webhook endpoints. One keyset page at a time."""
        entries, next_cursor = await audit.org_audit_log(
            services,
            org_id=principal_of(request).org_id,
            limit=limit,
            after=decode_audit_cursor(cursor) if cursor else None,
        )
        return AuditPage(
            items=[audit_entry_body(e) for e in entries],
            next_cursor=encode_audit_cursor(next_cursor) if next_cursor else None,
        )
