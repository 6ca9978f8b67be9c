"""The OpenAPI document: what is served at ``/schema`` and what the document says.

- Only the document is served: ``/schema`` and ``/schema/openapi.json`` (JSON),
  ``/schema/openapi.yaml`` (YAML). No UI pages: Litestar's load their scripts from public CDNs, on
  the dashboard's origin. Any other path under ``/schema`` is a 404 in the one error shape.
- A request body that refuses unknown fields (a Struct with ``forbid_unknown_fields``) says so with
  ``additionalProperties: false`` (``ClosedStructSchemaPlugin``).
- Every 4xx and 5xx is documented with the one error shape (``uniform_error_responses``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar, Router
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

from entrypoints.http.schemas import ErrorBody

SCHEMA_PATH = "/schema"
_DOCUMENTS = {SCHEMA_PATH, *(f"{SCHEMA_PATH}/openapi.{ext}" for ext in ("json", "yaml", "yml"))}


def _documents_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar answers other paths under the schema router with an HTML page: a 404 instead."""
    if connection.scope["path"].rstrip("/") not in _DOCUMENTS:
        raise NotFoundException("no such document: the OpenAPI document is at /schema/openapi.json")


def openapi_config(title: str, version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title=title,
        version=version,
        render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],  # the first also answers /schema
        openapi_router=Router(
            SCHEMA_PATH, route_handlers=[], include_in_schema=False, guards=[_documents_only]
        ),
    )


class ClosedStructSchemaPlugin(OpenAPISchemaPlugin):
    """``additionalProperties: false`` for Structs that refuse unknown fields.

    Litestar documents a Struct with its own plugin and leaves ``additionalProperties`` unset, which
    says any other field is welcome; a ``forbid_unknown_fields`` Struct answers 400 to one. This plugin
    is consulted first for those Structs, has the next plugin that takes the type (Litestar's) build
    the schema, and closes it.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        annotation = field_definition.annotation
        return (
            not field_definition.is_union
            and isinstance(annotation, type)
            and issubclass(annotation, msgspec.Struct)
            and annotation.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        builtin = next(
            plugin
            for plugin in schema_creator.plugins
            if plugin is not self and schema_creator.plugin_supports_field(plugin, field_definition)
        )
        schema: Schema = builtin.to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema


def uniform_error_responses(app: Litestar) -> None:
    """Document every 4xx/5xx with the one error shape the app answers with (``ErrorBody``).

    Litestar documents the validation errors it raises with its own default body; the app's exception
    handlers answer ``{"error": {"code", "message"}}`` instead, and the document must say so. The
    handlers' own error responses (``errors.error_spec``) put ``ErrorBody`` among the components.
    """
    openapi = app.openapi_schema
    components = openapi.components.schemas or {}
    name = ErrorBody.__name__
    if name not in components:
        raise RuntimeError(f"no operation documents an error with {name}: the document lacks the shape")
    error_ref = Reference(ref=f"#/components/schemas/{name}")
    for path_item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method, None)
            if operation is None or not operation.responses:
                continue
            for code, response in operation.responses.items():
                if code.isdigit() and int(code) >= 400 and isinstance(response, OpenAPIResponse):
                    response.content = {"application/json": OpenAPIMediaType(schema=error_ref)}
