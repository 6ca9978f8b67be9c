"""The OpenAPI document: what is served at ``/schema`` and what the document says.

- Only the document is served: ``/schema`` and ``/schema/openapi.json`` (JSON),
  ``/schema/openapi.yaml`` (YAML). No UI pages: Litestar's load their scripts from public CDNs, on
  the dashboard's origin. Any other path under ``/schema`` is a 404 in the one error shape.
- A request body that refuses unknown fields (a Struct with ``forbid_unknown_fields``) says so with
  ``additionalProperties: false``, and the items of a list say what msgspec checks on them
  (``StructSchemaConstraintsPlugin``).
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


_COLLECTIONS = (
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.VarTupleType,
)


def _document_item_constraints(schema: Schema | Reference, type_info: msgspec.inspect.Type) -> None:
    """Copy what msgspec enforces on the items of a collection (any depth) onto their schema."""
    if isinstance(type_info, msgspec.inspect.Metadata):
        type_info = type_info.type
    if not isinstance(schema, Schema) or not isinstance(type_info, _COLLECTIONS):
        return
    items, item_type = schema.items, type_info.item_type
    if isinstance(item_type, msgspec.inspect.Metadata):
        if isinstance(items, Schema) and items.description is None and item_type.extra_json_schema:
            items.description = item_type.extra_json_schema.get("description")
        item_type = item_type.type
    if isinstance(items, Schema) and isinstance(item_type, msgspec.inspect.StrType):
        items.pattern = items.pattern or item_type.pattern
        items.min_length = items.min_length if items.min_length is not None else item_type.min_length
        items.max_length = items.max_length if items.max_length is not None else item_type.max_length
    if items is not None:
        _document_item_constraints(items, item_type)


class StructSchemaConstraintsPlugin(OpenAPISchemaPlugin):
    """Documents what msgspec enforces on a Struct and Litestar's own schema leaves out.

    - ``additionalProperties: false`` when the Struct refuses unknown fields
      (``forbid_unknown_fields``); Litestar leaves it unset, which says any other field is welcome;
    - the constraints of collection items (``list[Annotated[str, Meta(pattern=...)]]``): Litestar
      documents a field's own ``Meta`` but not that of the items.

    It is consulted first for Structs, has the next plugin that takes the type (Litestar's) build
    the schema, and adds to it.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        annotation = field_definition.annotation
        return (
            not field_definition.is_union
            and isinstance(annotation, type)
            and issubclass(annotation, msgspec.Struct)
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        builtin = next(
            plugin
            for plugin in schema_creator.plugins
            if plugin is not self and schema_creator.plugin_supports_field(plugin, field_definition)
        )
        schema: Schema = builtin.to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.annotation)
        assert isinstance(info, msgspec.inspect.StructType)
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            if schema.properties and field.encode_name in schema.properties:
                _document_item_constraints(schema.properties[field.encode_name], field.type)
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
