"""Platform services → service, with the service token."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from litestar import Controller, Request, post, put
from litestar.params import JSONBody

from application import commands
from application.pauses import PLATFORM_ACTOR, PauseState
from domain.audit import AuditActor
from domain.model import Organization
from entrypoints.http.api import pause_bodies
from entrypoints.http.auth import request_id, service_guard
from entrypoints.http.deps import Bus
from entrypoints.http.errors import BODY_ERRORS, CONFLICT, NOT_FOUND, error_spec
from entrypoints.http.schemas import (
    IdPath,
    OrganizationResponse,
    OrganizationUpsert,
    RecordingPauseState,
    ScorabilityVerdict,
    TransferUpdate,
)

SERVICE_ERRORS = {401: error_spec("Missing or wrong service token")}
IdParam = IdPath
NOT_PAUSABLE = {
    409: error_spec(
        "The call is not recorded, has ended or left the platform, or its recording is not live at "
        "Twilio (not started yet: retry in a moment)"
    )
}


class InternalApi(Controller):
    path = "/internal/v1"
    guards = [service_guard]
    tags = ["internal"]

    @put(
        "/organizations/{org_id:str}",
        status_code=200,
        responses={**SERVICE_ERRORS, **BODY_ERRORS, **CONFLICT},
    )
    async def upsert_organization(
        self, org_id: IdParam, data: JSONBody[OrganizationUpsert], bus: Bus
    ) -> OrganizationResponse:
        """Create or update an org. New orgs record nothing; a number owned elsewhere is a 409."""
        org: Organization = await bus.handle(
            commands.UpsertOrganization(
                org_id=org_id, name=data.name, phone_numbers=list(data.phone_numbers), greeting=data.greeting
            )
        )
        return OrganizationResponse(
            id=org.id,
            name=org.name,
            phone_numbers=sorted(org.phone_numbers),
            greeting=org.greeting,
            recording_enabled=org.recording_enabled,
        )

    @post(
        "/calls/{call_id:str}/scorability",
        status_code=204,
        responses={**SERVICE_ERRORS, **BODY_ERRORS, **NOT_FOUND},
    )
    async def scorability(self, call_id: IdParam, data: JSONBody[ScorabilityVerdict], bus: Bus) -> None:
        """The scorability filter's verdict; a non-engagement call keeps its recording."""
        await bus.handle(
            commands.RecordScorability(call_id=call_id, scorable=data.scorable, reason=data.reason)
        )

    @post(
        "/calls/{call_id:str}/transfer",
        status_code=204,
        responses={**SERVICE_ERRORS, **BODY_ERRORS, **NOT_FOUND, **CONFLICT},
    )
    async def transfer(self, call_id: IdParam, data: JSONBody[TransferUpdate], bus: Bus) -> None:
        """A warm transfer: hold stays recorded; ``completed`` stops the recording at Twilio."""
        await bus.handle(commands.TransferCall(call_id=call_id, stage=data.stage))

    @post(
        "/calls/{call_id:str}/recording/pause",
        status_code=200,
        responses={**SERVICE_ERRORS, **NOT_FOUND, **NOT_PAUSABLE},
    )
    async def pause_recording(
        self, call_id: IdParam, request: Request[Any, Any, Any], bus: Bus
    ) -> RecordingPauseState:
        """Pause the call's recording for a sensitive moment (Twilio ``Status=paused``, silence by
        default). Idempotent: already paused answers the current state. Twilio is told right after
        the commit, retried until it answers."""
        state = await bus.handle(commands.PauseRecording(call_id=call_id, actor=_actor(request)))
        return _pause_state(state)

    @post(
        "/calls/{call_id:str}/recording/resume",
        status_code=200,
        responses={**SERVICE_ERRORS, **NOT_FOUND, **NOT_PAUSABLE},
    )
    async def resume_recording(
        self, call_id: IdParam, request: Request[Any, Any, Any], bus: Bus
    ) -> RecordingPauseState:
        """Resume the call's recording (Twilio ``Status=in-progress``). Idempotent: not paused
        answers the current state."""
        state = await bus.handle(commands.ResumeRecording(call_id=call_id, actor=_actor(request)))
        return _pause_state(state)


def _actor(request: Request[Any, Any, Any]) -> AuditActor:
    client = request.client.host[:64] if request.client else None
    return replace(PLATFORM_ACTOR, request_id=request_id(request), source_address=client)


def _pause_state(state: PauseState) -> RecordingPauseState:
    recording = state.recording
    return RecordingPauseState(
        call_id=state.call.id,
        recording_id=recording.id,
        paused=recording.open_pause is not None,
        pauses=pause_bodies(recording.pauses),
    )
