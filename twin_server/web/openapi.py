"""The OpenAPI 3 document of the REST API, built from the route table.

Served at ``/api/openapi.json``. Every route of the table is in it with its
body and answer schemas, the role it needs, and its refusals: each a JSON
``Error`` with the OPC UA status name, under the HTTP status ``errors.py`` maps
that name to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twin_server.web import views
from twin_server.web.errors import http_status
from twin_server.web.routes import TAGS, Route

VERSION = "0.1.0"
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: answered by every route that authenticates
_AUTH_REFUSALS = ("BadIdentityTokenRejected", "BadUserAccessDenied")


def document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "twin-server REST API",
            "version": VERSION,
            "description": (
                "The same operations as the OPC UA methods and writes, with the same "
                "checks and refusals: a refusal answers an HTTP status and "
                '{"status": "<OPC UA status name>", "message": "..."}. Authenticate '
                "with HTTP Basic (the users file's users) or a Bearer token from "
                "POST /api/login; without either, the anonymous role applies where "
                "server.security.anonymous allows it. State-changing requests from "
                "another site's pages are refused."),
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "schemas": {"Error": views.ERROR},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{}, {"basic": []}, {"bearer": []}],
    }


def _operation(route: Route) -> dict[str, Any]:
    role = f" Needs the {route.role} role." if route.role is not None else ""
    op: dict[str, Any] = {
        "operationId": route.operation, "summary": route.summary, "tags": [route.tag],
        "description": route.summary + "." + role,
    }
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string"}} for name in route.path_parameters]
    parameters += [{"name": q.name, "in": "query", "required": q.required,
                    "schema": q.schema, "description": q.description} for q in route.query]
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {"required": bool(route.body.get("required")),
                             "content": {"application/json": {"schema": route.body}}}
    responses: dict[str, Any] = {}
    if route.websocket:
        responses["101"] = {"description": "a WebSocket of JSON messages"}
    elif route.status == 204:
        responses["204"] = {"description": "done"}
    else:
        content = {route.media: {"schema": route.response or {"type": "object"}}}
        responses[str(route.status)] = {"description": "done", "content": content}
    refusals = tuple(route.refusals) + (_AUTH_REFUSALS if route.role is not None else
                                        ("BadIdentityTokenRejected",))
    by_status: dict[int, list[str]] = {}
    for name in refusals:
        by_status.setdefault(http_status(name), []).append(name)
    for code, names in sorted(by_status.items()):
        responses[str(code)] = {
            "description": "refused: " + ", ".join(dict.fromkeys(names)),
            "content": {"application/json": {"schema": _ERROR_REF}}}
    op["responses"] = responses
    return op
