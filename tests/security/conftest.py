"""Real asyncua servers secured by ``configure_security`` on 127.0.0.1 (port 0),
and client certificates made for the tests.

asyncua's Server.init takes seconds, so a module shares one server (its tests run
in the module's event loop: each module sets ``pytestmark = MODULE_LOOP``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from asyncua import Client, Server, ua
from cryptography.hazmat.primitives import serialization

from twin_server.config.schema import ServerConfig
from twin_server.security import SecurityContext, configure_security
from twin_server.security import pki as P

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
CLIENT_URI = "urn:twin-server:test-client"
NAMESPACE_URI = "urn:twin-server"
ENDPOINT = "opc.tcp://127.0.0.1:0/twin-server"


@dataclass
class Secured:
    """A running asyncua server with our security, and where its files are."""

    server: Server
    security: SecurityContext
    url: str
    state_dir: Path
    ns: int

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.ns)


@contextlib.asynccontextmanager
async def secured_server(config: ServerConfig, state_dir: Path,
                         variables: tuple[str, ...] = ()) -> AsyncIterator[Secured]:
    """An asyncua Server with writable Double variables at the dotted ``variables``
    paths of our namespace, secured as ``config`` says."""
    server = Server()
    await server.init()
    server.disable_clock()
    server.set_endpoint(config.endpoint)
    await server.set_application_uri(config.application_uri)
    ns = await server.register_namespace(NAMESPACE_URI)
    root = await server.nodes.objects.add_object(ua.NodeId("TwinServer", ns), "TwinServer")
    for path in variables:
        var = await root.add_variable(ua.NodeId(path, ns), path.rpartition(".")[2], 0.0)
        await var.set_writable()
    security = await configure_security(server, config, state_dir)
    await server.start()
    assert server.bserver is not None and server.bserver._server is not None
    port = server.bserver._server.sockets[0].getsockname()[1]
    try:
        yield Secured(server, security, f"opc.tcp://127.0.0.1:{port}/twin-server", state_dir, ns)
    finally:
        await server.stop()


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path
    thumbprint: str


def make_client_cert(folder: Path, name: str, *, uri: str = CLIENT_URI, days: int = 30,
                     start: dt.datetime | None = None) -> ClientCert:
    """A self-signed client certificate and key in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = P.new_key(2048)
    cert = P.make_certificate(key, application_uri=uri, name=name, hostnames=["localhost"],
                              days=days, not_before=start)
    cert_path, key_path = folder / f"{name}.der", folder / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    P.write_key(key_path, key)
    return ClientCert(cert_path, key_path, P.thumbprint(cert))


def trust_file(secured: Secured, cert: ClientCert) -> None:
    P.trust(secured.security.pki, str(cert.cert))


async def secure_client(url: str, cert: ClientCert, *, uri: str = CLIENT_URI,
                        policy: str = "Basic256Sha256", mode: str = "SignAndEncrypt",
                        user: str | None = None, password: str | None = None) -> Client:
    """A client (not connected) using ``cert`` on a ``policy``/``mode`` channel."""
    client = Client(url, timeout=5)
    client.application_uri = uri
    await client.set_security_string(f"{policy},{mode},{cert.cert},{cert.key}")
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


def plain_client(url: str, user: str | None = None, password: str | None = None) -> Client:
    client = Client(url, timeout=5)
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    return client


def realtime(pid: int, priority: int = 10) -> bool:
    """Give worker process ``pid`` real-time priority (SCHED_FIFO), as a deployment
    that tests a PLC against its twins gives it (systemd: ``CPUSchedulingPolicy=fifo``):
    on a busy machine its ticks then start late only when something holds its own
    process, which is what the tests of the worker design look for. False where
    this user may not (the tests then check what holds at normal priority)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return False
    return True
