"""The REST API's route table: what each route does, who may call it, and its
document, from which ``openapi.py`` builds the OpenAPI schema.

A ``Route`` is one operation: its method and path, its handler, the role it
needs (the role of its OPC UA method or write), its summary and the JSON
schemas of its body and answer. The API serves exactly the routes of the table
and documents exactly those: nothing is served undocumented.

Groups of routes, one module each, each exporting ``routes(api) -> list[Route]``:
``api.py`` (twins, sessions, variables, history, events, HIL, login),
``alarms.py`` (the alarm list, the condition methods), ``faults.py`` (a session's
injected faults), ``scenarios.py`` (scenario runs), ``campaigns.py`` (campaign
runs); ``GROUPS`` in ``server.py`` lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from twin_server.security.roles import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

#: the document's tags, in order
TAGS: tuple[tuple[str, str], ...] = (
    ("twins", "Twin definitions: list, define (TOML), remove"),
    ("sessions", "Sessions of twins and their run control"),
    ("variables", "A session's variables: read, write, release a forced input"),
    ("history", "Recorded values and a session's events"),
    ("hil", "Hardware-in-the-loop peers' health"),
    ("alarms", "Alarms and conditions: the alarm list, Acknowledge, Confirm, AddComment, "
               "Enable, Disable"),
    ("faults", "Faults injected into sessions: list, inject, clear"),
    ("scenarios", "Scenario runs (offline, on the server) and their reports"),
    ("campaigns", "Campaign runs (on the server's Dask cluster), their results and reports"),
    ("access", "Who you are, tokens, this document"),
)


@dataclass(frozen=True, slots=True)
class Query:
    """One query parameter."""

    name: str
    schema: Schema
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    method: str  # GET, POST, PUT, DELETE
    path: str  # aiohttp's form: /api/sessions/{session}
    handler: Handler
    operation: str  # the OpenAPI operationId
    summary: str
    tag: str
    #: the lowest role that may call it (None: anyone, before authentication)
    role: Role | None = Role.VIEWER
    body: Schema | None = None
    response: Schema | None = None
    status: int = 200  # the answer's HTTP status when it succeeds
    query: tuple[Query, ...] = ()
    #: the refusals (OPC UA status names) it answers besides authentication's
    refusals: tuple[str, ...] = ()
    #: a WebSocket (GET, answered 101 Switching Protocols)
    websocket: bool = False
    #: the media type of the answer
    media: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path_parameters(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/")
                if part.startswith("{") and part.endswith("}")]
