"""Serving the configured faces (``[faces.<name>]``): their NodeSets loaded, their
bindings resolved and wired, on the daemon's endpoint or on one of their own.

    Faces (one per daemon, created by it after its server started)
      load()   each face's NodeSets: into the daemon's server, or into the server of
               its own endpoint (endpoint.py); a model two faces of one server
               share is loaded once
      bind()   after the sessions are served: bindings resolved (binding.py; every
               error at once, as ConfigErrors naming file, key and node), write
               routes and refusals (routes.py), method callbacks (a session's
               method, or a routine: routines.py), the operator's rights on them
               (security/guard.py), the sink fed (sink.py), the own endpoints
               started
      sink     a sink of every pacer (the daemon adds it to its list)
      run()    the sink's task and the own endpoints' samplers (daemon's TaskGroup)
      stop()   the own endpoints closed

``check`` does load and bind's resolution on servers that are never started:
``twin-server check`` (README, "Machine faces").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from asyncua import Server

from twin_server.config.loader import quoted_key
from twin_server.config.schema import Config, FaceConfig, FaceRoutine
from twin_server.engine.twin import TwinDefinition
from twin_server.errors import ConfigError, ConfigErrors
from twin_server.faces.binding import FaceBindings, resolve
from twin_server.faces.endpoint import FaceEndpoint, face_server_config
from twin_server.faces.loader import LoadedNodes, load
from twin_server.faces.nodeset import NodeSetError
from twin_server.faces.routes import Lookup, WrittenLookup, method_callback, refusal, write_target
from twin_server.faces.routines import Routine, load_routine, routine_callback, twin_variables
from twin_server.faces.sink import FaceSink
from twin_server.opcua.patches import aspace_cache, fastpath
from twin_server.opcua.writes import TwinAttributeService
from twin_server.runtime.collector import collector_paused
from twin_server.security.guard import Guard

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Place:
    """Where faces are served: an asyncua server, its write routing and guard."""

    server: Server
    attributes: TwinAttributeService | None
    guard: Guard | None
    models: dict[str, Path] = field(default_factory=dict)


async def serve_faces(server: Any, faces: dict[str, FaceConfig],
                      base: Path) -> dict[str, LoadedNodes]:
    """Load every face's NodeSet2 files (relative to ``base``, the config file's folder)
    into ``server`` (an asyncua Server); a model two faces share is loaded once.
    NodeSetError names the file, the node and the reason."""
    loaded_models: dict[str, Path] = {}
    result: dict[str, LoadedNodes] = {}
    for name, face in faces.items():
        result[name] = await _load(name, face, server, base, loaded_models)
    return result


async def _load(name: str, face: FaceConfig, server: Server, base: Path,
                models: dict[str, Path]) -> LoadedNodes:
    paths = [base / p for p in face.nodesets]
    with collector_paused():
        loaded = await load(server, paths, loaded_models=models)
    log.info("face_loaded", face=name, nodes=len(loaded.nodes),
             files=[p.name for p in loaded.files], seconds=round(loaded.seconds, 3),
             references_left_out=loaded.skipped, values_left_out=loaded.valueless)
    return loaded


def _nodeset_error(name: str, exc: NodeSetError, file: str) -> ConfigError:
    return ConfigError(str(exc), path=f"faces.{quoted_key(name)}.nodesets", file=file)


class Faces:
    """The daemon's faces. ``lookup``: a served session by name (None: none);
    ``written``: the history's record of client writes, looked up at each write;
    ``changed``: told a session's name after a face method changed it (the daemon
    wakes its pacer, so that it shows at once)."""

    def __init__(self, config: Config, *, base: Path, file: str, lookup: Lookup,
                 written: WrittenLookup, changed: Callable[[str], None]) -> None:
        self.faces = dict(config.faces)
        self._config = config
        self._base = base
        self._file = file
        self._lookup = lookup
        self._written = written
        self._changed = changed
        self.sink = FaceSink(lookup)
        self.endpoints: dict[str, FaceEndpoint] = {}
        self.loaded: dict[str, LoadedNodes] = {}
        self.bindings: dict[str, FaceBindings] = {}
        #: face -> method NodeId -> its routine (routines.py)
        self.routines: dict[str, dict[Any, Routine]] = {}
        #: the routines under way: (face, method) -> their start (time.monotonic)
        self.running: dict[tuple[str, str], float] = {}
        self._places: dict[str, _Place] = {}

    async def load(self, main: Server, attributes: TwinAttributeService,
                   guard: Guard | None) -> None:
        """Load every face's NodeSets (ConfigErrors naming each file's problem)."""
        shared = _Place(main, attributes, guard)
        errors: list[ConfigError] = []
        for name, face in self.faces.items():
            if face.endpoint is not None:
                endpoint = FaceEndpoint(name, face_server_config(name, face,
                                                                 self._config.server))
                await endpoint.init()
                self.endpoints[name] = endpoint
                place = _Place(endpoint.server, endpoint.attributes, None)
            else:
                place = shared
            self._places[name] = place
            try:
                self.loaded[name] = await _load(name, face, place.server, self._base,
                                                place.models)
            except NodeSetError as exc:
                errors.append(_nodeset_error(name, exc, self._file))
        if errors:
            raise ConfigErrors(errors)

    async def bind(self, twins: Mapping[str, TwinDefinition]) -> None:
        """Resolve and wire every face's bindings (``twins``: each face session's twin,
        by session name), then start the own endpoints. ConfigErrors with every
        binding that does not resolve."""
        errors: list[ConfigError] = []
        for name, face in self.faces.items():
            place = self._places[name]
            twin = twins.get(face.session) if face.session is not None else None
            bindings, found = resolve(name, face, self.loaded[name],
                                      place.server.iserver.aspace,
                                      await place.server.get_namespace_array(), twin,
                                      self._file)
            errors.extend(found)
            self.bindings[name] = bindings
            self.routines[name] = self._routines(name, bindings, twin, errors)
        if errors:
            raise ConfigErrors(errors)
        for name, bindings in self.bindings.items():
            await self._wire(name, bindings, self._places[name])
        for name, endpoint in self.endpoints.items():
            assert endpoint.attributes is not None
            await endpoint.start()
            assert endpoint.security is not None
            self._places[name].guard = endpoint.security.guard
            endpoint.security.guard.operated.update(self._operated(self.bindings[name]))

    def _routines(self, name: str, bindings: FaceBindings, twin: TwinDefinition | None,
                  errors: list[ConfigError]) -> dict[Any, Routine]:
        return _load_routines(name, bindings, self._config, self._base, self._file,
                              twin, errors)

    def _operated(self, bindings: FaceBindings) -> set[Any]:
        return {b.nodeid for b in bindings.variables if b.writable} | set(bindings.methods)

    async def _wire(self, name: str, bindings: FaceBindings, place: _Place) -> None:
        aspace = place.server.iserver.aspace
        attributes = place.attributes
        assert attributes is not None
        attributes.refusals.update(bindings.read_only)
        session = bindings.session
        for bound in bindings.variables:
            if bound.writable and session is not None:
                attributes.targets[bound.nodeid] = write_target(
                    name, bound, session, self._lookup, self._written)
            else:
                attributes.refusals[bound.nodeid] = refusal(name, bound)
        changed = self._changed

        async def after(session: str) -> None:
            changed(session)

        routines = self.routines.get(name, {})
        for nodeid, (verb, key) in bindings.methods.items():
            assert session is not None
            if isinstance(verb, FaceRoutine):
                aspace.add_method_callback(nodeid, routine_callback(
                    name, routines[nodeid], session, self._lookup, self._written,
                    self.running, after))
            else:
                aspace.add_method_callback(nodeid, method_callback(
                    name, verb, key, session, self._lookup, after))
        if place.guard is not None:
            place.guard.operated.update(self._operated(bindings))
        self.sink.add(bindings, aspace)
        if session is not None:
            await self.sink.publish_now(session)
        if bindings.unchecked_units:
            log.warning("face_units_unchecked", face=name, bindings=bindings.unchecked_units,
                        reason="a unit that is not known is taken as the twin's unit")
        log.info("face_bound", face=name, session=session, variables=len(bindings.variables),
                 writable=sum(b.writable for b in bindings.variables),
                 methods=len(bindings.methods), read_only_unbound=len(bindings.read_only),
                 endpoint=self.endpoints[name].config.endpoint if name in self.endpoints
                 else "the daemon's")

    async def run(self) -> None:
        """The sink's task and the own endpoints' samplers, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.sink.run(), name="faces")
            for name, endpoint in self.endpoints.items():
                sampler = fastpath.sampler(endpoint.server.iserver.aspace)
                if sampler is not None:
                    tg.create_task(sampler.run(), name=f"face-sampler:{name}")

    async def stop(self) -> None:
        for endpoint in self.endpoints.values():
            await endpoint.stop()


async def check_faces(config: Config, twins: Mapping[str, TwinDefinition], *, base: Path,
                      file: str, state_dir: Path | None = None) -> list[ConfigError]:
    """Every problem of ``config``'s faces: their NodeSets loaded and their bindings
    resolved in servers that are never started (``twin-server check``)."""
    errors: list[ConfigError] = []
    # (the daemon's cache of the standard address space when there is one; a check
    # creates no folder)
    folder = aspace_cache.cache_dir(state_dir or config.server.state_dir)
    cache = folder if folder.is_dir() else None
    servers: dict[str | None, tuple[Server, dict[str, Path]]] = {}
    for name, face in config.faces.items():
        key = name if face.endpoint is not None else None
        if key not in servers:
            server = Server()
            await aspace_cache.init_server(server, cache)
            servers[key] = (server, {})
        server, models = servers[key]
        try:
            loaded = await _load(name, face, server, base, models)
        except NodeSetError as exc:
            errors.append(_nodeset_error(name, exc, file))
            continue
        session = config.sessions.get(face.session) if face.session is not None else None
        twin = twins.get(session.twin) if session is not None else None
        bindings, found = resolve(name, face, loaded, server.iserver.aspace,
                                  await server.get_namespace_array(), twin, file)
        errors.extend(found)
        _load_routines(name, bindings, config, base, file, twin, errors)
    return errors


def _load_routines(name: str, bindings: FaceBindings, config: Config, base: Path, file: str,
                   twin: TwinDefinition | None, errors: list[ConfigError]
                   ) -> dict[Any, Routine]:
    """The routines of a face's methods (routines.py), every problem in ``errors``."""
    variables = twin_variables(twin) if twin is not None else None
    routines: dict[Any, Routine] = {}
    for nodeid, (verb, key) in bindings.methods.items():
        if isinstance(verb, FaceRoutine):
            assert bindings.session is not None
            routine = load_routine(name, key, verb, session=bindings.session,
                                   server=config.server, base=base,
                                   file=file, variables=variables, errors=errors)
            if routine is not None:
                routines[nodeid] = routine
    return routines
