"""Platform services → service, with the service token."""

from __future__ import annotations

from litestar import Controller, post, put
from litestar.params import JSONBody

from application import commands
from domain.model import Organization
from entrypoints.http.auth import service_guard
from entrypoints.http.deps import Bus
from entrypoints.http.errors import BODY_ERRORS, CONFLICT, NOT_FOUND, error_spec
from entrypoints.http.schemas import (
    IdPath,
    OrganizationResponse,
    OrganizationUpsert,
    ScorabilityVerdict,
    TransferUpdate,
)

SERVICE_ERRORS = {401: error_spec("Missing or wrong service token")}
IdParam = IdPath


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
