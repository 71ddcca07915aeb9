"""The web front: the REST API, the live WebSockets and the dashboard, on aiohttp.

``WebServer`` runs on the daemon's own event loop (asyncio or uvloop), beside
the OPC UA server, never in the workers: the sessions step in their workers (or
their clocks' tasks, ``workers = 0``) and the web side reads them only through
the daemon's records, the frames the pacers deliver (``live.py``) and the
history store. What it does may cost the main process time; it never stands in
a tick's way in a worker.

    /                       the dashboard (``static/``: HTML, JS modules, CSS; no CDN)
    /api/...                the REST API (``api.py``; ``routes.py`` the table)
    /api/openapi.json       its OpenAPI 3 document (``openapi.py``)
    /api/sessions/{s}/live  the session's values, pushed at its publish rate

One middleware answers every request: the cross-site check and the user
(``auth.py``), the role the route needs, and the translation of a refusal
(our exceptions carry their OPC UA status: ``errors.py``) into JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import WSMsgType, web

from twin_server.config.schema import WebConfig
from twin_server.engine.state import VarKey
from twin_server.errors import ConfigErrors, TwinServerError
from twin_server.logs import excerpt
from twin_server.models.base import Value
from twin_server.runtime.served import ServedSession
from twin_server.runtime.sinks import Stamp
from twin_server.security.roles import Role
from twin_server.web import alarms, campaigns, faults, openapi, scenarios, views
from twin_server.web import api as api_module
from twin_server.web.api import USER, Api
from twin_server.web.auth import Authenticator, check_same_origin, require
from twin_server.web.errors import Refused, refusal
from twin_server.web.live import Changes, LiveFeed, LiveStatistics
from twin_server.web.routes import Route

if TYPE_CHECKING:
    from twin_server.runtime.daemon import Daemon

log = structlog.get_logger(__name__)

STATIC = Path(str(resources.files("twin_server.web").joinpath("static")))
#: the groups of routes, each a module with ``routes(api) -> list[Route]``
GROUPS: tuple[Callable[[Api], list[Route]], ...] = (
    api_module.routes, alarms.routes, faults.routes, scenarios.routes, campaigns.routes)
#: the route of the live WebSocket (documented with the others)
LIVE = "/api/sessions/{session}/live"
#: seconds a closing server gives its WebSockets and requests
SHUTDOWN_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class WebStatistics:
    url: str
    requests: int
    refused: int
    live: LiveStatistics


class WebServer:
    """The REST API and dashboard of one daemon, at ``config.host``:``config.port``."""

    def __init__(self, config: WebConfig, daemon: Daemon) -> None:
        self.config = config
        self.daemon = daemon
        self.feed = LiveFeed()
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._requests = 0
        self._refused = 0
        self.routes: list[Route] = []
        self._route_of: dict[tuple[str, str], Route] = {}
        self._document: dict[str, Any] = {}
        #: requests per operation (its operationId)
        self.calls: dict[str, int] = {}
        self.api: Api | None = None
        self.layouts = views.Layouts(lambda: self.daemon.sessions)
        #: per session: the forced inputs asked for its frames' ``forces`` value
        self._forced_lists: dict[str, tuple[ServedSession, int, asyncio.Future[
            dict[VarKey, Value]]]] = {}

    async def start(self) -> None:
        """Bind and serve (the daemon's OPC UA server is started: its users and
        anonymous role are the ones used here)."""
        server = self.daemon.server
        assert server is not None and server.security is not None, "the server first"
        limits = server.config.limits
        auth = Authenticator(server.security.users, server.security.guard.anonymous,
                             self.config.token_lifetime)
        self.api = api = Api(self.daemon, auth, limits, self.layouts)
        self.routes = [route for group in GROUPS for route in group(api)]
        self.routes.append(Route(
            "GET", LIVE, self._live, "watchSession",
            "The session's values pushed at its publish rate (WebSocket; ?token= for a "
            "token): a layout message, then frames of what changed", "variables",
            websocket=True, refusals=("BadNotFound",)))
        self.routes.append(Route(
            "GET", "/api/openapi.json", self._openapi, "openapi", "This document", "access",
            role=None, response={"type": "object"}))
        self._document = openapi.document(self.routes)
        app = web.Application(middlewares=[self._middleware],
                              client_max_size=max(limits.max_definition_size,
                                                  limits.max_argument_size) + 65_536)
        for route in self.routes:
            app.router.add_route(route.method, route.path, route.handler)
            self._route_of[(route.method, route.path)] = route
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC, append_version=False)
        self._runner = runner = web.AppRunner(app, access_log=None,
                                              shutdown_timeout=SHUTDOWN_TIMEOUT,
                                              handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(runner.addresses[0][1])
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{self.port}"
        log.info("web_server_started", url=self.url, anonymous=str(auth.anonymous)
                 if auth.anonymous is not None else "off", routes=len(self.routes))

    async def stop(self) -> None:
        """Close every WebSocket and connection, then the listening socket."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await ws.close(code=1001, message=b"server stopping")
        for close in self.api.closers if self.api is not None else ():
            await close()
        await runner.cleanup()
        log.info("web_server_stopped", url=self.url)

    def statistics(self) -> WebStatistics:
        return WebStatistics(self.url, self._requests, self._refused, self.feed.statistics())

    # -- every request ------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        self._requests += 1
        info = request.match_info
        resource = info.route.resource
        route = self._route_of.get((request.method, resource.canonical)) \
            if resource is not None else None
        if route is not None:
            self.calls[route.operation] = self.calls.get(route.operation, 0) + 1
        try:
            if route is not None or request.path.startswith("/api/"):
                check_same_origin(request)
            if route is not None and route.role is not None:
                assert self.api is not None
                user = self.api.auth.identify(request)
                request[USER] = user
                require(user, route.role, f"{route.method} {resource.canonical}"
                        if resource is not None else request.path)
            return await handler(request)
        except Refused as exc:
            self._refused += 1
            return exc.response()
        except ConfigErrors as group:
            self._refused += 1
            return refusal("BadConfigurationError", str(group))
        except TwinServerError as exc:
            self._refused += 1
            log.info("web_refused", method=request.method, path=request.path,
                     status=exc.status, reason=excerpt(str(exc), 1000))
            return refusal(exc.status, str(exc))
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            self._refused += 1
            status = {404: "BadNotFound", 405: "BadMethodInvalid",
                      413: "BadRequestTooLarge"}.get(exc.status, "BadInvalidArgument")
            text = {404: f"no such resource: {excerpt(request.path, 200)} (the API's "
                         f"routes are in /api/openapi.json)",
                    405: f"{request.method} is not allowed on {excerpt(request.path, 200)}",
                    }.get(exc.status, exc.reason)
            return refusal(status, text, http=exc.status)
        except Exception:
            self._refused += 1
            log.exception("web_request_failed", method=request.method, path=request.path)
            return refusal("BadInternalError", "the server failed on this request; its log "
                                               "says why")

    # -- pages --------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html",
                                headers={"Cache-Control": "no-cache"})

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self._document)

    # -- the live WebSocket ------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        daemon = self.daemon
        name = request.match_info["session"]
        record = daemon.manager.get(name)  # (NotFound before the upgrade: a 404)
        require(request[USER], Role.VIEWER, "watching a session")
        view = await self.layouts.of(record)
        # no per-message compression: each socket would deflate every frame itself
        # (on threads beyond 16 KiB), CPU the ticks of this process need
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096, compress=False)
        await ws.prepare(request)
        self._sockets.add(ws)
        watcher = self.feed.watch(name)
        session = record.session
        try:
            await ws.send_str(view.message)
            changes = Changes()
            frame = session.frame()
            first = changes.message(frame, Stamp.now(),
                                    await self._forced(record, view, frame.forces))
            assert first is not None
            await ws.send_str(first)
            reader = asyncio.ensure_future(_drain(ws))
            try:
                while not ws.closed:
                    taking = asyncio.ensure_future(watcher.next())
                    done, _ = await asyncio.wait({taking, reader}, timeout=1.0,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if taking not in done:
                        taking.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await taking
                    if reader in done:
                        break
                    if daemon.sessions.get(name) is not record:
                        await ws.send_str('{"type": "deleted"}')
                        break
                    if taking in done:
                        frame, stamp = taking.result()
                        forced = await self._forced(record, view, frame.forces) \
                            if changes.needs_forced(frame) else None
                        message = self.feed.message(name, changes, frame, stamp, forced)
                        if message is not None:
                            await ws.send_str(message)
                    daemon.touch(name)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        except ConnectionResetError:
            pass
        finally:
            self.feed.unwatch(watcher)
            await ws.close()
        return ws


    async def _forced(self, record: ServedSession, view: views.LayoutView, forces: int
                      ) -> list[int]:
        """The indices of the session's forced inputs as of ``forces`` (its frames'
        counter), asked of the session once for every watcher."""
        found = self._forced_lists.get(record.name)
        if found is None or found[0] is not record or found[1] != forces or \
                (found[2].done() and (found[2].cancelled() or found[2].exception())):
            future = asyncio.ensure_future(record.session.forced())
            found = self._forced_lists[record.name] = (record, forces, future)
            for gone in [n for n in self._forced_lists if n not in self.daemon.sessions]:
                del self._forced_lists[gone]
        forced = await asyncio.shield(found[2])
        return view.forced_indices(forced)


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the browser sends, until it closes."""
    async for msg in ws:
        if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            return
