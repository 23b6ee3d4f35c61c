"""The JSON API's documentation for people: an HTML page generated from its OpenAPI document
(`webapp.openapi`), so that the two never disagree."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from webapp.model_service import model_service
from webapp.openapi import openapi_document

bp = Blueprint("docs", __name__)
METHODS = ("get", "post", "put", "patch", "delete")
REF_PREFIX = "#/components/schemas/"


def schema_text(schema: dict[str, Any]) -> str:
    """A schema in a few words: its type (or the schema it refers to), format, allowed values and limits."""
    if "$ref" in schema:
        return schema["$ref"].removeprefix(REF_PREFIX)
    kind = schema.get("type", "object")
    head = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in schema:
        head = f"array of {schema_text(schema['items'])}"
    if "format" in schema:
        head += f" ({schema['format']})"
    words = [head]
    if "enum" in schema:
        words.append("one of " + ", ".join(str(value) for value in schema["enum"]))
    for key, label, unit in (
        ("minimum", "at least", ""),
        ("maximum", "at most", ""),
        ("maxLength", "at most", " characters"),
        ("default", "default", ""),
    ):
        if key in schema:
            words.append(f"{label} {schema[key]}{unit}")
    return ", ".join(words)


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    return [
        {
            "name": name,
            "required": name in required,
            "schema": schema_text(field),
            "description": field.get("description", ""),
        }
        for name, field in schema.get("properties", {}).items()
    ]


def _responses(operation: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for status, response in sorted(operation["responses"].items()):
        schemas = [schema_text(media["schema"]) for media in response.get("content", {}).values() if "schema" in media]
        rows.append({"status": status, "description": response["description"], "schema": ", ".join(schemas)})
    return rows


def operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of the document, in its order: method, full path, parameters, body and responses."""
    base = document.get("servers", [{"url": ""}])[0]["url"]
    found = []
    for path, item in document["paths"].items():
        for method, operation in ((m, o) for m, o in item.items() if m in METHODS):  # not path-wide keys
            body = operation.get("requestBody", {}).get("content", {})
            found.append(
                {
                    "method": method,
                    "path": base + path,
                    "summary": operation.get("summary", ""),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "schema": schema_text(p.get("schema", {})),
                            "description": p.get("description", ""),
                        }
                        for p in operation.get("parameters", [])
                    ],
                    "body": [
                        {"type": media_type, "fields": _fields(media.get("schema", {}))}
                        for media_type, media in body.items()
                    ],
                    "responses": _responses(operation),
                }
            )
    return found


@bp.get("/docs/api")  # not under /api/, where every answer is JSON (webapp.errors)
def api() -> str:
    document = openapi_document(model_service.bundle.classes)
    components = document.get("components", {})
    return render_template(
        "api_docs.html",
        info=document["info"],
        operations=operations(document),
        schemes=components.get("securitySchemes", {}),
        schemas={name: _fields(schema) for name, schema in components.get("schemas", {}).items()},
    )
