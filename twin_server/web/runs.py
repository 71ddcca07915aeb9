"""What the REST API's scenario runs and campaigns share: a run found by its id in
the daemon's service (``Daemon.scenarios``, ``Daemon.campaigns``), listed newest
first, shown by its view, and its reports sent with a Content Security Policy that
lets them load and run nothing but their inline styles."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import web

from twin_server.errors import InvalidState, NotSupported
from twin_server.web.api import Api

#: what a served SVG or HTML report may load or run: nothing but its inline styles
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


class Named(Protocol):
    @property
    def name(self) -> str: ...


RunT = TypeVar("RunT", bound=Named)
RunT_co = TypeVar("RunT_co", bound=Named, covariant=True)
ServiceT = TypeVar("ServiceT")


class Service(Protocol[RunT_co]):
    def __iter__(self) -> Iterator[RunT_co]: ...

    def get(self, name: str) -> RunT_co: ...


def served(service: ServiceT | None, kind: str) -> ServiceT:
    """The daemon's service for a kind of run; None before the daemon runs."""
    if service is None:
        raise NotSupported(f"{kind} runs are not served (the daemon is not running)")
    return service


class RunRoutes(Generic[RunT]):
    """The routes every kind of run has, over the daemon's service for it."""

    #: the kind's name in messages, and its routes' folder below /api
    KIND: ClassVar[str]
    FOLDER: ClassVar[str]

    def __init__(self, api: Api) -> None:
        self.api = api

    def view(self, run: RunT) -> dict[str, Any]:
        raise NotImplementedError

    def running(self, run: RunT) -> bool:
        raise NotImplementedError

    def running_note(self, run: RunT) -> str:
        """What a client asking for a running run's report can do meanwhile."""
        return ""

    @property
    def service(self) -> Service[RunT]:
        raise NotImplementedError

    def _run(self, request: web.Request) -> RunT:
        return self.service.get(request.match_info["run"])

    def _ended(self, request: web.Request) -> RunT:
        run = self._run(request)
        if self.running(run):
            raise InvalidState(f"{self.KIND} run {run.name} is running: it has no report "
                               f"yet (GET /api/{self.FOLDER}/{run.name} until its state is "
                               f"not running{self.running_note(run)})")
        return run

    async def list_runs(self, request: web.Request) -> web.Response:
        return web.json_response([self.view(r) for r in reversed(list(self.service))])

    async def get_run(self, request: web.Request) -> web.Response:
        return web.json_response(self.view(self._run(request)))


def confined(text: str, content_type: str) -> web.Response:
    """A report's page or plot, which may load and run nothing (REPORT_POLICY)."""
    return web.Response(text=text, content_type=content_type,
                        headers={"Content-Security-Policy": REPORT_POLICY})
