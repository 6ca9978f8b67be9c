"""JSON request bodies decoded strictly, for every endpoint that takes one.

Litestar decodes a JSON body untyped and then converts it to the handler's ``data`` type in msgspec's
lax mode (``convert(..., strict=False)``), where ``0``, ``1``, ``"true"`` and ``"false"`` pass as
booleans and numeric strings as numbers: more than the OpenAPI document says the server accepts.
``StrictJSONRequest`` (the app's ``request_class``) decodes the body against the declared type with
msgspec's strict rules instead, in one pass; Litestar's later conversion leaves a value that already
has the type as it is.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.serialization import decode_json
from litestar.types import Empty

_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _validation_error(exc: SerializationException) -> ValidationException:
    """A 400 naming the offending field, like Litestar's own validation errors (``key: message``)."""
    match = _AT.match(str(exc.detail))
    message, path = (match["message"], match["path"]) if match else (str(exc.detail), None)
    key = path.removeprefix(".") if path else "data"
    return ValidationException(extra=[{"key": key or "data", "message": message, "source": "body"}])


class StrictJSONRequest(Request[Any, Any, Any]):
    """A request whose ``json()`` is the body decoded strictly as the handler's ``data`` type."""

    async def json(self) -> Any:
        data_field = self.route_handler.parsed_data_field
        if data_field is None or self._json is not Empty:
            return await super().json()
        body = await self.body()
        try:
            value = decode_json(
                body or b"null",
                target_type=data_field.annotation,
                type_decoders=self.route_handler.resolve_type_decoders(),
                strict=True,
            )
        except SerializationException as exc:
            if isinstance(exc.__cause__, msgspec.ValidationError):
                raise _validation_error(exc) from None
            raise
        self._json = value
        return value
