"""Form bodies (Twilio's callbacks, the dashboard's sign-in and settings forms), read within bounds.

Litestar's own form handling builds a multidict whose ``getall`` is quadratic in repeated keys, so a
1 MiB body of one key repeated held the event loop for tens of seconds. Form routes therefore never
call ``request.form()``: they take at most ``FORM_MAX_BYTES`` (a 413 past that, from the route's
``request_max_body_size``), and ``read_form`` parses the body in one linear pass, refusing more than
``FORM_MAX_FIELDS`` fields, a repeated field, bytes that are not UTF-8, or another content type.
Callers check whatever they can check without the body (a signature's presence, a session, the
Origin) before they call it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from litestar import Request
from litestar.exceptions import ClientException, HTTPException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

# Twilio's callbacks are a few KiB with a few dozen fields; the dashboard's forms are smaller still.
FORM_MAX_BYTES = 64 * 1024
FORM_MAX_FIELDS = 100
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class FormRejected(ClientException):
    """A form body outside the grammar above: 400 with the reason."""


async def read_form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The request's url-encoded form fields, each once; 400/413/415 for anything else."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=f"expected {FORM_CONTENT_TYPE}"
        )
    body = await request.body()  # bounded by the route's request_max_body_size (413)
    return parse_form(body)


def parse_form(body: bytes) -> dict[str, str]:
    """Parse an url-encoded body in linear time: at most ``FORM_MAX_FIELDS`` fields, none repeated."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS, errors="strict")
    except UnicodeDecodeError:
        raise FormRejected("the form is not valid UTF-8") from None
    except ValueError:
        raise FormRejected(f"the form has more than {FORM_MAX_FIELDS} fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise FormRejected(f"the form field {name[:64]!r} is repeated")
        fields[name] = value
    return fields
