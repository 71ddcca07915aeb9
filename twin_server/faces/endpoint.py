"""A face on an endpoint of its own: the machine's URL, ApplicationUri and
ApplicationName, so that a client configured for the real machine connects to
the twin unchanged (``[faces.<name>] endpoint``).

It is a second asyncua server in the daemon's process, holding the standard
address space and the face's NodeSets only (the twin tree stays on the daemon's
endpoint). Its NamespaceArray lists the face's models right after the server's
own URI, in load order, as a machine's server does (clients that cache indexes
find DI and the machine's model at the indexes they expect when the files are
loaded in the machine's order). It has the daemon's security settings (policies,
modes, users, anonymous role, limits) with a PKI folder of its own,
``<pki_dir>/faces/<name>`` (its own certificate, with the face's ApplicationUri;
its own trust list: trust a client for the machine there). Values and writes
take the same paths as on the daemon's endpoint (``sink.py``, ``routes.py``).
"""

from __future__ import annotations

from pathlib import Path

import structlog
from asyncua import Server

from twin_server.config.schema import FaceConfig, ServerConfig
from twin_server.opcua import identity
from twin_server.opcua.patches import aspace_cache, browse, fastpath, monitoring
from twin_server.opcua.server import bound_endpoint, stop_server
from twin_server.opcua.writes import TwinAttributeService
from twin_server.runtime.clock import TICKS
from twin_server.security import SecurityContext, configure_security

log = structlog.get_logger(__name__)

#: a namespace index no node has: this server's writes are routed by node
_NO_NAMESPACE = -1


def face_server_config(name: str, face: FaceConfig, server: ServerConfig) -> ServerConfig:
    """The daemon's server settings as the face's endpoint has them."""
    assert face.endpoint is not None
    security = server.security.model_copy(
        update={"pki_dir": str(Path(server.security.pki_dir) / "faces" / name)})
    return server.model_copy(update={
        "endpoint": face.endpoint,
        "application_uri": face.application_uri or f"{server.application_uri}:faces:{name}",
        "application_name": face.application_name or f"{server.application_name} ({name})",
        "security": security})


class FaceEndpoint:
    """The asyncua server of one face served on its own endpoint."""

    def __init__(self, name: str, config: ServerConfig) -> None:
        self.name = name
        self.config = config
        self.server = Server()
        self.endpoint_url = config.endpoint
        self.attributes: TwinAttributeService | None = None
        self.security: SecurityContext | None = None
        self._started = False

    async def init(self) -> None:
        """The standard address space, identity and write routing (before the face's
        NodeSets load)."""
        server, config = self.server, self.config
        await aspace_cache.init_server(server, aspace_cache.cache_dir(config.state_dir))
        await identity.set_build_info(server)
        server.set_endpoint(config.endpoint)
        server.set_server_name(config.application_name)
        await server.set_application_uri(config.application_uri)
        iserver = server.iserver
        browse.install(iserver)
        self.attributes = TwinAttributeService(iserver.aspace, _NO_NAMESPACE)
        iserver.attribute_service = self.attributes
        fastpath.install(iserver.aspace, TICKS)
        monitoring.install(iserver)

    async def start(self) -> None:
        """Security (after the NodeSets: its namespace comes after theirs), then bind."""
        server, config = self.server, self.config
        self.security = await configure_security(server, config, config.state_dir)
        identity.set_capabilities(server.iserver.aspace, config.limits)
        await server.start()
        self._started = True
        self.endpoint_url = bound_endpoint(server, config.endpoint)
        log.info("face_endpoint_started", face=self.name, endpoint=self.endpoint_url,
                 application_uri=config.application_uri)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await stop_server(self.server)
            log.info("face_endpoint_stopped", face=self.name)
