"""The dashboard pages: the Calls page, the call detail panel with a player and the caller's consent,
the recording toggle, and (for admins) the Access log.

Pages take the same JWT as the API, from the HttpOnly, SameSite=Strict cookie ``callrec_session`` that
``POST /dashboard/session`` sets. Without a valid session a page redirects to the sign-in notice, which
returns there after sign-in (``?next=``: only a relative path under /dashboard, never another site).
Every form (sign-in, sign-out, settings) also checks, before its body is read, that the request comes
from this service: its Origin, or, as browsers send ``Origin: null`` under ``Referrer-Policy:
no-referrer``, ``Sec-Fetch-Site: same-origin``. The cookie is SameSite=Strict already; the origin check
is a second lock and stops a cross-site form from signing a browser in as someone else (login CSRF).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from litestar import Controller, Request, Response, Router, get, post
from litestar.datastructures import CacheControlHeader, State
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.params import QueryParameter
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from application import audit, commands, views
from application.errors import NotFound, RecordingGone
from application.ports import CallQuery
from application.views import RECORDING_STATUSES
from domain.errors import InvalidValue
from domain.model import DISCLOSURE_TEXT, CallKind, NumberRecordingMode, is_phone_number
from entrypoints.config import Settings
from entrypoints.http import call_list
from entrypoints.http.api import decode_audit_cursor, decode_cursor, encode_audit_cursor, encode_cursor
from entrypoints.http.auth import (
    CUSTOMER_ROLES,
    Principal,
    audit_actor,
    decode_token,
    retrieve_principal,
)
from entrypoints.http.call_page import call_page, call_state
from entrypoints.http.deps import Bus, ServicesDep
from entrypoints.http.forms import FORM_MAX_BYTES, read_form
from entrypoints.http.schemas import IdPath

COOKIE = "callrec_session"
CUSTOMER = (CallKind.CUSTOMER,)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
CallId = IdPath
Download = Annotated[bool, QueryParameter(description="Serve the audio as an attachment")]

TEMPLATES = TemplateConfig(directory=Path(__file__).parent / "templates", engine=JinjaTemplateEngine)
STATIC_DIR = Path(__file__).parent / "static"
# Scripts and styles come only from /dashboard/static (no inline code). The player loads the audio
# from wherever the store's signed URLs point (S3 is another origin), and the call page's waveform
# fetches it from there to draw it (connect-src). The call page alone also allows the one <style>
# element the waveform library puts in its shadow root, by a per-response nonce (``call_page_headers``).
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; media-src 'self'{media}; "
    "connect-src 'self'{media}; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
ACTION_LABELS = {
    "list_calls": "Listed the calls",
    "play_recording": "Played a recording",
    "download_recording": "Downloaded a recording",
    "webhook_recording_url": "Sent a recording URL to a webhook endpoint",
    "turn_recording_on": "Turned recording on",
    "turn_recording_off": "Turned recording off",
    "create_webhook_endpoint": "Added a webhook endpoint",
    "rotate_webhook_secret": "Rotated a webhook secret",
    "delete_webhook_endpoint": "Deleted a webhook endpoint",
    "set_number_recording_on": "Turned recording on for a number",
    "set_number_recording_off": "Turned recording off for a number",
    "set_number_recording_inherit": "Set a number to follow the organization's recording setting",
    "pause_recording": "Paused a call's recording",
    "resume_recording": "Resumed a call's recording",
    "set_retention": "Changed the retention policy",
    "purge_recording": "Deleted a recording's audio",
    "place_legal_hold": "Placed a legal hold on a call",
    "release_legal_hold": "Released a call's legal hold",
    "request_erasure": "Requested the erasure of a caller's data",
    "erase_caller_data": "Erased a caller's data from a call",
    "keep_filtered_recordings": "Chose to keep recordings of filtered calls",
    "delete_filtered_recordings": "Chose to delete recordings of filtered calls",
}
ROLE_LABELS = {"member": "member", "admin": "admin", "ops_admin": "operations team", "system": "service"}
MODE_LABELS = {
    "inherit": "Follow the organization's setting",
    "on": "Always record",
    "off": "Never record",
}
# Why a call has no audio to play, by the recording's ``reason`` (the call page words the first two its
# own way; any other reason is explained with these words).
REASONS = {
    "recording_off": "Recording was off when this call happened.",
    "no_audio": "The call ended before any audio could be captured.",
    "retention": "The recording was deleted under the organization's retention policy; the call's "
    "details are kept.",
    "erasure": "The recording was deleted at the caller's request; the call's details are kept.",
    "filtered": "The recording was not kept: the call was filtered out.",
}


def _calls_url(params: dict[str, str]) -> str:
    return f"/dashboard/calls?{urlencode(params)}" if params else "/dashboard/calls"


def static_files() -> Router:
    """The dashboard's scripts and styles; revalidated on every load, so a deploy is seen at once."""
    return create_static_files_router(
        path="/dashboard/static",
        directories=[STATIC_DIR],
        include_in_schema=False,
        cache_control=CacheControlHeader(no_cache=True),
        name="dashboard-static",
    )


def page_headers(media_origins: Sequence[str]) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": PAGE_CSP.format(media="".join(f" {o}" for o in media_origins)),
        "X-Frame-Options": "DENY",
    }


def call_page_headers(request: Request[Any, Any, State], nonce: str) -> dict[str, str]:
    headers: dict[str, str] = dict(request.app.state.page_headers)
    csp = headers["Content-Security-Policy"]
    headers["Content-Security-Policy"] = csp.replace("style-src 'self'", f"style-src 'self' 'nonce-{nonce}'")
    return headers


def back_path(value: str | None) -> str:
    """Where the call page's back link goes: the Calls page with the filters it was left with."""
    target = return_path(value)
    return target if target and urlsplit(target).path == "/dashboard/calls" else "/dashboard/calls"


def page(request: Request[Any, Any, State], name: str, status: int = 200, **context: Any) -> Template:
    headers: dict[str, str] = request.app.state.page_headers
    return Template(template_name=name, context=context, status_code=status, headers=headers)


async def principal_from_token(request: Request[Any, Any, State], token: str) -> Principal | None:
    """A customer principal from a dashboard JWT, or None when the token is not valid for the pages."""
    settings: Settings = request.app.state.settings
    try:
        decoded = decode_token(token, settings.jwt_secret)
    except NotAuthorizedException:
        return None
    principal = await retrieve_principal(decoded, request)
    if principal is None or principal.role not in CUSTOMER_ROLES:
        return None
    return principal


async def session_principal(request: Request[Any, Any, State]) -> Principal | None:
    token = request.cookies.get(COOKIE)
    return await principal_from_token(request, token) if token else None


def return_path(value: str | None) -> str | None:
    """``value`` when it is a relative path under /dashboard (a safe place to return to), else None.

    Refuses absolute and scheme-relative URLs (``https://…``, ``//host``), backslashes and control
    characters (which browsers read as ``/`` or drop) and dot segments, so a sign-in link can never
    send the browser to another site or outside the dashboard.
    """
    if not value or len(value) > 2048 or not value.startswith("/dashboard/"):
        return None
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in unquote(parts.path):
        return None
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        return None
    return value


def _sign_in(request: Request[Any, Any, State]) -> Response[Any]:
    """To the sign-in notice, which brings the browser back to this page afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = return_path(here)
    suffix = f"?next={quote(target, safe='')}" if target and target != "/dashboard/calls" else ""
    return Redirect(f"/dashboard/sign-in{suffix}", status_code=303)


def _same_origin(request: Request[Any, Any, State]) -> bool:
    settings: Settings = request.app.state.settings
    origin = request.headers.get("origin")
    if origin == "null":
        # Under Referrer-Policy: no-referrer a browser sends `Origin: null` with a form POST; its Fetch
        # Metadata (which no page can set) still tells where the request came from.
        return request.headers.get("sec-fetch-site") == "same-origin"
    if not origin:
        return False
    expected, actual = urlsplit(settings.public_url), urlsplit(origin)
    return (actual.scheme, actual.netloc) == (expected.scheme, expected.netloc)


def _no_such_call(request: Request[Any, Any, State], principal: Principal) -> Template:
    return page(
        request,
        "message.html",
        404,
        title="Call not found",
        principal=principal,
        message="No such call: it does not exist or belongs to another organization.",
    )


async def _admin_form(request: Request[Any, Any, State]) -> tuple[Principal, dict[str, str]] | Response[Any]:
    """The admin and the form of a page's POST, or what to answer instead: the sign-in notice without a
    session, 403 for a member or a request from another origin (no cross-site form posts)."""
    principal = await session_principal(request)
    if principal is None:
        return _sign_in(request)
    if principal.role != "admin" or not _same_origin(request):
        return page(
            request, "message.html", 403, title="Forbidden", principal=principal, message="Not allowed."
        )
    return principal, await read_form(request)


class DashboardPages(Controller):
    path = "/dashboard"
    include_in_schema = False
    request_max_body_size = FORM_MAX_BYTES

    @get("/")
    async def home(self) -> Response[Any]:
        return Redirect("/dashboard/calls", status_code=303)

    @get("/sign-in")
    async def sign_in(self, request: Request[Any, Any, State]) -> Template:
        """The sign-in notice: a dashboard session starts from a token the platform issued."""
        return page(
            request,
            "sign_in.html",
            401,
            title="Sign in",
            message="Your session has ended or never started.",
            next=return_path(request.query_params.get("next")),
        )

    @post("/session", status_code=303)
    async def start_session(self, request: Request[Any, Any, State]) -> Response[Any]:
        """Exchange a dashboard JWT for the session cookie (same origin only: no login CSRF)."""
        if not _same_origin(request):
            return page(request, "message.html", 403, title="Forbidden", message="Not allowed.")
        settings: Settings = request.app.state.settings
        form = await read_form(request)
        token, target = form.get("token", "").strip(), return_path(form.get("next"))
        principal = await principal_from_token(request, token) if token else None
        if principal is None:
            return page(
                request, "sign_in.html", 401, title="Sign in", message="That token is not valid.", next=target
            )
        expires = decode_token(token, settings.jwt_secret).exp
        lifetime = max(0, int((expires - datetime.now(UTC)).total_seconds()))
        response: Response[Any] = Redirect(target or "/dashboard/calls", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=settings.public_url.startswith("https://"),
            path="/dashboard",
            max_age=lifetime,  # the session ends when its token does
        )
        return response

    @post("/sign-out", status_code=303)
    async def end_session(self, request: Request[Any, Any, State]) -> Response[Any]:
        """Forget the session cookie (same origin only)."""
        if not _same_origin(request):
            return page(request, "message.html", 403, title="Forbidden", message="Not allowed.")
        response: Response[Any] = Redirect("/dashboard/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    @get("/calls")
    async def calls(self, request: Request[Any, Any, State], services: ServicesDep) -> Response[Any]:
        """The Calls page: filtered by the query string, newest first, a page at a time either way."""
        principal = await session_principal(request)
        if principal is None:
            return _sign_in(request)
        params = {k: v for k, v in request.query_params.items() if isinstance(v, str)}
        filters, errors = call_list.parse_filters(params)
        after = before = None
        limit = PAGE_SIZE
        try:
            if params.get("limit"):
                limit = int(params["limit"]) if params["limit"].isdigit() else 0
                if not 1 <= limit <= MAX_PAGE_SIZE:
                    raise ValidationException(f"limit: a page holds 1 to {MAX_PAGE_SIZE} calls")
            after = decode_cursor(params["cursor"]) if params.get("cursor") else None
            before = decode_cursor(params["before"]) if params.get("before") else None
            if after and before:
                raise ValidationException("page: a page is either older (cursor) or newer (before)")
        except ValidationException as error:
            errors.append(call_list.FilterError("page", str(error.detail).split(": ", 1)[-1]))
        context: dict[str, Any] = {
            "title": "Calls",
            "current": "calls",
            "principal": principal,
            "filters": filters,
            "raw": params,
            "errors": errors,
            "zone_notice": call_list.zone_or_utc(params.get("tz", ""))[1],
            "statuses": RECORDING_STATUSES,
            "recording_labels": call_list.RECORDING_LABELS,
            "call_labels": call_list.CALL_STATUS_LABELS,
            "reasons": {
                "recording_off": "recording was off",
                "no_audio": "no audio captured",
                "retention": "deleted (retention)",
                "erasure": "deleted (erasure)",
                "filtered": "filtered out",
            },
            "fmt": call_list,
            "calls": [],
        }
        if errors:
            return page(request, "calls.html", 400, **context)
        started_from, started_to = filters.bounds()
        found = await views.calls_page(
            services,
            CallQuery(
                org_id=principal.org_id,
                kinds=CUSTOMER,
                limit=limit,
                after=after,
                before=before,
                started_from=started_from,
                started_to=started_to,
                recording_status=filters.recording,
                caller_prefix=filters.caller,
                hide_non_engagement=filters.hide_non_engagement,
            ),
        )
        keep = filters.query() | ({"limit": str(limit)} if limit != PAGE_SIZE else {})
        at = {k: params[k] for k in ("cursor", "before") if params.get(k)}
        here = _calls_url(keep | at) if keep or at else None
        context |= {
            "calls": found.items,
            # each call's page links back to this one, filters and page included
            "back": f"?{urlencode({'back': here})}" if here else "",
            "first_url": _calls_url(keep) if found.newer else None,
            "newer_url": _calls_url(keep | {"before": encode_cursor(found.newer)}) if found.newer else None,
            "older_url": _calls_url(keep | {"cursor": encode_cursor(found.older)}) if found.older else None,
        }
        return page(request, "calls.html", **context)

    @get("/calls/{call_id:str}")
    async def call_detail(
        self,
        request: Request[Any, Any, State],
        call_id: CallId,
        services: ServicesDep,
        back: Annotated[str | None, QueryParameter(max_length=2048)] = None,
    ) -> Response[Any]:
        """The call page: who called and when, the recording (player, waveform, download) or why there
        is none, the consent record, and a link to share. ``back`` is the Calls page to return to."""
        principal = await session_principal(request)
        if principal is None:
            return _sign_in(request)
        try:
            view = await views.get_call(services, org_id=principal.org_id, call_id=call_id, kinds=CUSTOMER)
        except NotFound:
            return _no_such_call(request, principal)
        settings: Settings = request.app.state.settings
        nonce = secrets.token_urlsafe(16)
        context = call_page(
            view, now=services.clock.now(), stuck_after=settings.reconcile_stuck_after, reasons=REASONS
        )
        return Template(
            template_name="call.html",
            context={
                **context,
                "title": f"Call from {context['caller']} on {view.call.started_at:%Y-%m-%d %H:%M} UTC",
                "principal": principal,
                "back": back_path(back),
                "link": f"{settings.public_url.rstrip('/')}/dashboard/calls/{view.call.id}",
                "nonce": nonce,
                "pauses": view.pauses,
            },
            headers=call_page_headers(request, nonce),
        )

    @post("/calls/{call_id:str}/legal-hold", status_code=303)
    async def change_legal_hold(
        self, request: Request[Any, Any, State], call_id: CallId, bus: Bus
    ) -> Response[Any]:
        """Place (with a reason) or release the call's legal hold from its page (admins, same origin only)."""
        admitted = await _admin_form(request)
        if isinstance(admitted, Response):
            return admitted
        principal, form = admitted
        held, reason = form.get("held") == "true", form.get("reason", "").strip()
        if (held and not reason) or len(reason) > 1000:
            return page(
                request,
                "message.html",
                400,
                title="Legal hold not placed",
                principal=principal,
                message="Give the reason for the hold (up to 1000 characters): a dispute, a case number.",
            )
        try:
            await bus.handle(
                commands.SetLegalHold(
                    org_id=principal.org_id,
                    call_id=call_id,
                    held=held,
                    reason=reason,
                    by=principal.sub,
                    actor=audit_actor(request, principal),
                )
            )
        except NotFound:
            return _no_such_call(request, principal)
        return Redirect(f"/dashboard/calls/{call_id}#legal-hold", status_code=303)

    @get("/calls/{call_id:str}/state.json")
    async def call_state(
        self, request: Request[Any, Any, State], call_id: CallId, services: ServicesDep
    ) -> Response[Any]:
        """What the call page polls until the call and its recording settle (401 without a session)."""
        principal = await session_principal(request)
        if principal is None:
            raise NotAuthorizedException("no dashboard session")
        view = await views.get_call(services, org_id=principal.org_id, call_id=call_id, kinds=CUSTOMER)
        settings: Settings = request.app.state.settings
        state = call_state(
            view, now=services.clock.now(), stuck_after=settings.reconcile_stuck_after, reasons=REASONS
        )
        return Response(state, headers={"Cache-Control": "no-store"})

    @get("/calls/{call_id:str}/audio")
    async def call_audio(
        self,
        request: Request[Any, Any, State],
        call_id: CallId,
        services: ServicesDep,
        download: Download = False,
    ) -> Response[Any]:
        """Redirect the player (or the download link) to a short-lived signed URL of the audio."""
        principal = await session_principal(request)
        if principal is None:
            raise NotAuthorizedException("no dashboard session")
        try:
            url = await views.recording_url(
                services,
                actor=audit_actor(request, principal),
                org_id=principal.org_id,
                call_id=call_id,
                kinds=CUSTOMER,
                download=download,
            )
        except RecordingGone as gone:  # a download link followed after the purge: say why, as a page
            return page(
                request,
                "message.html",
                410,
                title="Recording deleted",
                principal=principal,
                message=str(gone),
            )
        return Redirect(url, status_code=307, headers={"Cache-Control": "no-store"})

    @get("/audit-log")
    async def access_log(
        self,
        request: Request[Any, Any, State],
        services: ServicesDep,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> Response[Any]:
        """The Access log (admins): who accessed the org's recordings or changed its settings, and why."""
        principal = await session_principal(request)
        if principal is None:
            return _sign_in(request)
        if principal.role != "admin":
            return page(
                request, "message.html", 403, title="Forbidden", principal=principal, message="Admins only."
            )
        entries, next_cursor = await audit.org_audit_log(
            services,
            org_id=principal.org_id,
            limit=PAGE_SIZE,
            after=decode_audit_cursor(cursor) if cursor else None,
        )
        return page(
            request,
            "audit_log.html",
            title="Access log",
            current="audit-log",
            principal=principal,
            entries=entries,
            actions=ACTION_LABELS,
            roles=ROLE_LABELS,
            fmt=call_list,
            next_cursor=encode_audit_cursor(next_cursor) if next_cursor else None,
        )

    @get("/settings")
    async def settings_page(self, request: Request[Any, Any, State], services: ServicesDep) -> Response[Any]:
        """The recording toggle and each number's own setting (admins change them; members read), who
        changed each and when, and the disclosure callers hear."""
        principal = await session_principal(request)
        if principal is None:
            return _sign_in(request)
        async with services.reader() as uow:
            org = await uow.organizations.get(principal.org_id)
        if org is None:
            return page(
                request,
                "message.html",
                404,
                title="Settings",
                principal=principal,
                message="No organization.",
            )
        return page(
            request,
            "settings.html",
            title="Settings",
            current="settings",
            principal=principal,
            enabled=org.recording_enabled,
            changed_by=org.recording_changed_by,
            changed_at=org.recording_changed_at,
            numbers=views.number_recording_views(org),
            modes=MODE_LABELS,
            disclosure=DISCLOSURE_TEXT,
            retention_days=org.retention_days,
            keep_non_engagement=org.keep_non_engagement,
        )

    @post("/settings", status_code=303)
    async def change_settings(self, request: Request[Any, Any, State], bus: Bus) -> Response[Any]:
        """Flip the toggle from the settings page (admins, same origin only)."""
        admitted = await _admin_form(request)
        if isinstance(admitted, Response):
            return admitted
        principal, form = admitted
        enabled = form.get("enabled") == "true"
        await bus.handle(
            commands.SetCallRecording(
                principal.org_id, enabled, principal.sub, audit_actor(request, principal)
            )
        )
        return Redirect("/dashboard/settings", status_code=303)

    @post("/settings/non-engagement", status_code=303)
    async def change_non_engagement_policy(
        self, request: Request[Any, Any, State], bus: Bus
    ) -> Response[Any]:
        """Keep or delete recordings of filtered (non-engagement) calls (admins, same origin only)."""
        admitted = await _admin_form(request)
        if isinstance(admitted, Response):
            return admitted
        principal, form = admitted
        keep = form.get("keep_non_engagement") == "true"
        await bus.handle(
            commands.SetNonEngagementPolicy(
                principal.org_id, keep, principal.sub, audit_actor(request, principal)
            )
        )
        return Redirect("/dashboard/settings", status_code=303)

    @post("/settings/numbers", status_code=303)
    async def change_number_setting(self, request: Request[Any, Any, State], bus: Bus) -> Response[Any]:
        """Set one number to on, off or inherit from the settings page (admins, same origin only)."""
        admitted = await _admin_form(request)
        if isinstance(admitted, Response):
            return admitted
        principal, form = admitted
        number, mode = form.get("number", ""), form.get("mode", "")
        if mode not in MODE_LABELS or not is_phone_number(number):
            return page(
                request,
                "message.html",
                400,
                title="Settings not changed",
                principal=principal,
                message="Choose one of the settings for one of your numbers.",
            )
        try:
            await bus.handle(
                commands.SetNumberRecording(
                    principal.org_id,
                    number,
                    NumberRecordingMode(mode),
                    principal.sub,
                    audit_actor(request, principal),
                )
            )
        except NotFound:
            return page(
                request,
                "message.html",
                404,
                title="Number not found",
                principal=principal,
                message="That number is not one of your organization's.",
            )
        return Redirect(f"/dashboard/settings#number-{number[1:]}", status_code=303)

    @post("/settings/retention", status_code=303)
    async def change_retention(self, request: Request[Any, Any, State], bus: Bus) -> Response[Any]:
        """Set the retention policy from the settings page (admins, same origin only); empty: indefinitely."""
        admitted = await _admin_form(request)
        if isinstance(admitted, Response):
            return admitted
        principal, form = admitted
        value = form.get("days", "").strip()
        if value and not value.isdigit():
            raise InvalidValue("retention days must be a whole number of days, or empty (indefinitely)")
        await bus.handle(
            commands.SetRetention(
                principal.org_id,
                int(value) if value else None,
                principal.sub,
                audit_actor(request, principal),
            )
        )
        return Redirect("/dashboard/settings#retention", status_code=303)
