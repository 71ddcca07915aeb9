"""A soft PLC for the HIL tests: an asyncua server with a scan loop, run as a subprocess.

    python -m tests.hil.soft_plc [--port 0] [--user name:password] [--secure DIR]
                                 [--max-nodes-per-write N] [--bulk N]
                                 [--min-publishing-interval MS]
                                 [--setpoint 1.0] [--kp 0.2] [--bias 0.05]
                                 [--high-limit M]

It prints ``PORT <n>`` on stdout once it serves ``opc.tcp://127.0.0.1:<n>/plc``
(namespace ``urn:soft-plc``; string NodeIds ``PLC.<name>`` under Objects/PLC):

    Level      Float    writable  the tank level the twin sends (m)
    LevelMm    Int16    writable  the same in mm (casting test)
    Overflow   Boolean  writable  the tank's overflow flag
    Count      Int16    writable  (casting test: clamping)
    Word       UInt16   writable  (casting test: clamping at 0)
    Valve      Double   read-only the valve command the scan loop computes (m^3/s)
    ValveMm    Int16    read-only the same in 1e-4 m^3/s (a cast into a Double input)
    Setpoint   Double   writable  the level setpoint (m)
    Status     String   read-only "running"
    EchoIn     Double   writable  copied to EchoOut every scan (round-trip benchmark)
    EchoOut    Double   read-only
    Bulk/B<i>  Double   writable  ``--bulk`` nodes for the bindings benchmark

With ``--high-limit M`` (m) it has an interlock and two nodes more: ``HighLimit``
(Double, writable) and ``HighAlarm`` (Boolean, read-only). When the level passes the
limit the alarm latches and the valve closes (0), whatever the controller says, until
the level is back 0.1 m below the limit (the scenario tests' HIL example).

With ``--secure DIR`` it offers Basic256Sha256 SignAndEncrypt alone (no None
endpoint) with ``DIR/cert.der`` and ``DIR/key.pem`` as its application instance
certificate, and accepts only client certificates found in ``DIR/trusted/``
(as a real PLC's trust list: a session with any other is refused with
BadCertificateUntrusted).

With ``--min-publishing-interval MS`` it revises every subscription's publishing
interval (and so, asyncua's way, each item's sampling interval) to at least MS,
as many PLCs do (a node-opcua server: 50 ms).

The scan loop (every ``--scan`` s) is a P controller with a bias (manual reset):
``valve = clamp(bias + kp * (setpoint - level), 0, valve_max)``; with the bias set
to the outflow at the setpoint the level settles exactly there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager

from twin_server.opcua.patches.aspace_cache import CACHE_ENV, init_server

NAMESPACE = "urn:soft-plc"


class _Users(UserManager):
    def __init__(self, name: str, password: str) -> None:
        self._name, self._password = name, password

    def get_user(self, iserver: object, username: str | None = None,
                 password: str | None = None, certificate: object = None) -> User | None:
        if username == self._name and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


async def _secure(server: Server, folder: Path) -> None:
    """Basic256Sha256 SignAndEncrypt only; client certificates from ``folder/trusted``."""
    await server.load_certificate(str(folder / "cert.der"))
    await server.load_private_key(str(folder / "key.pem"))
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    store = TrustStore([folder / "trusted"], [])
    await store.load()
    server.set_certificate_validator(CertificateValidator(
        CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT,
        store))


def _revise_publishing(server: Server, minimum: float) -> None:
    """Revise every requested publishing interval up to ``minimum`` ms (asyncua's
    ModifySubscription answers with the interval set at creation)."""
    service = server.iserver.subscription_service
    create = service.create_subscription

    async def created(params: ua.CreateSubscriptionParameters, *args: Any,
                      **kwargs: Any) -> Any:
        params.RequestedPublishingInterval = max(params.RequestedPublishingInterval, minimum)
        return await create(params, *args, **kwargs)

    service.create_subscription = created  # type: ignore[method-assign]


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="")
    parser.add_argument("--secure", type=Path, default=None)
    parser.add_argument("--max-nodes-per-write", type=int, default=0)
    parser.add_argument("--bulk", type=int, default=0)
    parser.add_argument("--setpoint", type=float, default=1.0)
    parser.add_argument("--kp", type=float, default=0.2)
    parser.add_argument("--bias", type=float, default=0.05)
    parser.add_argument("--valve-max", type=float, default=0.5)
    parser.add_argument("--scan", type=float, default=0.01)
    parser.add_argument("--min-publishing-interval", type=float, default=0.0)
    parser.add_argument("--high-limit", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    if args.user:
        name, _, password = args.user.partition(":")
        server = Server(user_manager=_Users(name, password))
    else:
        server = Server()
    # the test suite's cache of asyncua's standard address space ($CACHE_DIRECTORY, as
    # the daemon's): building it costs ~1.3 s of CPU, 20 s and more on a loaded machine
    cache = os.environ.get(CACHE_ENV)
    await init_server(server, Path(cache.split(":")[0]) if cache else None)
    if args.min_publishing_interval:
        _revise_publishing(server, args.min_publishing_interval)
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/plc")
    if args.secure:
        await _secure(server, args.secure)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if args.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    ns = await server.register_namespace(NAMESPACE)
    if args.max_nodes_per_write:
        limit = server.get_node(
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite)
        await limit.write_value(ua.Variant(args.max_nodes_per_write, ua.VariantType.UInt32))
    plc = await server.nodes.objects.add_folder(ua.NodeId("PLC", ns), ua.QualifiedName("PLC", ns))

    async def var(name: str, value: object, vtype: ua.VariantType, writable: bool,
                  parent: object = plc, path: str = "PLC") -> object:
        node = await parent.add_variable(  # type: ignore[attr-defined]
            ua.NodeId(f"{path}.{name}", ns), ua.QualifiedName(name, ns),
            ua.Variant(value, vtype), datatype=ua.NodeId(vtype.value))
        if writable:
            await node.set_writable()
        return node

    level = await var("Level", 0.0, ua.VariantType.Float, True)
    await var("LevelMm", 0, ua.VariantType.Int16, True)
    await var("Overflow", False, ua.VariantType.Boolean, True)
    await var("Count", 0, ua.VariantType.Int16, True)
    await var("Word", 0, ua.VariantType.UInt16, True)
    valve = await var("Valve", 0.0, ua.VariantType.Double, False)
    valve_mm = await var("ValveMm", 0, ua.VariantType.Int16, False)
    setpoint = await var("Setpoint", args.setpoint, ua.VariantType.Double, True)
    await var("Status", "running", ua.VariantType.String, False)
    echo_in = await var("EchoIn", 0.0, ua.VariantType.Double, True)
    echo_out = await var("EchoOut", 0.0, ua.VariantType.Double, False)
    high_limit = high_alarm = None
    if args.high_limit:
        high_limit = await var("HighLimit", args.high_limit, ua.VariantType.Double, True)
        high_alarm = await var("HighAlarm", False, ua.VariantType.Boolean, False)
    if args.bulk:
        bulk = await plc.add_folder(ua.NodeId("PLC.Bulk", ns), ua.QualifiedName("Bulk", ns))
        for i in range(args.bulk):
            await var(f"B{i}", 0.0, ua.VariantType.Double, True, bulk, "PLC.Bulk")

    async with server:
        port = server.bserver._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"PORT {port}", flush=True)
        last_echo = None
        tripped = False
        while True:
            sp = float(await setpoint.read_value())  # type: ignore[attr-defined]
            lv = float(await level.read_value())  # type: ignore[attr-defined]
            command = min(max(args.bias + args.kp * (sp - lv), 0.0), args.valve_max)
            if high_limit is not None and high_alarm is not None:
                limit = float(await high_limit.read_value())  # type: ignore[attr-defined]
                was = tripped
                tripped = lv > limit or (tripped and lv > limit - 0.1)
                if tripped:
                    command = 0.0
                if tripped != was:
                    await high_alarm.write_value(  # type: ignore[attr-defined]
                        ua.Variant(tripped, ua.VariantType.Boolean))
            await valve.write_value(ua.Variant(command, ua.VariantType.Double))  # type: ignore[attr-defined]
            await valve_mm.write_value(  # type: ignore[attr-defined]
                ua.Variant(round(command * 1e4), ua.VariantType.Int16))
            echo = await echo_in.read_value()  # type: ignore[attr-defined]
            if echo != last_echo:
                last_echo = echo
                await echo_out.write_value(ua.Variant(echo, ua.VariantType.Double))  # type: ignore[attr-defined]
            await asyncio.sleep(args.scan)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
