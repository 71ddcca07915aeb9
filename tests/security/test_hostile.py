"""Hostile clients: connections that never log in, too many sessions, subscriptions
and monitored items, huge chunks. (Malformed and mutated messages by the thousand:
``test_fuzz.py``; protocol errors one by one: ``test_protocol.py``.)"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.ua_binary import uatcp_to_binary

from tests.security.conftest import ENDPOINT, MODULE_LOOP, Secured, secured_server
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.security.limits import SUBSCRIPTION_LOGGER, LogRateLimit

pytestmark = MODULE_LOOP

ACTIVATION_TIMEOUT = 1.0
VARIABLE = "Sessions.s.Components.c.Inputs.x"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    config = ServerConfig(
        endpoint=ENDPOINT,
        security=SecurityConfig(policies=("None",), anonymous="viewer"),
        limits=LimitsConfig(activation_timeout=ACTIVATION_TIMEOUT, max_client_sessions=3,
                            max_sessions_per_address=3,  # the whole limit (all on 127.0.0.1)
                            max_subscriptions_per_session=2,
                            max_monitored_items_per_subscription=3,
                            max_connections=60, log_burst=5))
    async with secured_server(config, tmp_path_factory.mktemp("state"), (VARIABLE,)) as srv:
        yield srv


def address(secured: Secured) -> tuple[str, int]:
    port = int(secured.url.rsplit(":", 1)[1].split("/")[0])
    return "127.0.0.1", port


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


class TestIdleConnections:
    async def test_silent_connection_closed(self, secured: Secured) -> None:
        """A connection that sends nothing is closed after the activation timeout."""
        reader, writer = await asyncio.open_connection(*address(secured))
        try:
            assert await closed_by_server(reader, ACTIVATION_TIMEOUT + 2.0)
        finally:
            writer.close()

    async def test_hello_only_connection_closed(self, secured: Secured) -> None:
        """A connection that says Hello but never activates a session is closed too."""
        reader, writer = await asyncio.open_connection(*address(secured))
        try:
            writer.write(hello(secured.url))
            await writer.drain()
            assert await closed_by_server(reader, ACTIVATION_TIMEOUT + 2.0)
        finally:
            writer.close()


class TestLimits:
    async def test_client_sessions(self, secured: Secured) -> None:
        """Past max_client_sessions a new session is refused with BadTooManySessions."""
        clients = [Client(secured.url, timeout=5) for _ in range(3)]
        for c in clients:
            await c.connect()
        extra = Client(secured.url, timeout=5)
        try:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await extra.connect()
            assert refused.value.code == ua.StatusCodes.BadTooManySessions
        finally:
            extra.disconnect_socket()
            for c in clients:
                await c.disconnect()

    async def test_subscriptions_and_monitored_items(self, secured: Secured) -> None:
        """Subscriptions per session and monitored items per subscription are capped."""
        async with Client(secured.url, timeout=5) as c:
            node = c.get_node(secured.nodeid(VARIABLE))
            first = await c.create_subscription(100, None)
            await c.create_subscription(100, None)
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await c.create_subscription(100, None)
            assert refused.value.code == ua.StatusCodes.BadTooManySubscriptions
            await first.subscribe_data_change([node, node, node])
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await first.subscribe_data_change([node])
            assert refused.value.code == ua.StatusCodes.BadTooManyMonitoredItems

    async def test_huge_chunk_closed(self, secured: Secured) -> None:
        """A chunk announcing 100 MB is cut off after about one chunk's worth of bytes,
        not buffered."""
        _reader, writer = await asyncio.open_connection(*address(secured))
        try:
            writer.write(hello(secured.url))
            writer.write(b"MSGF" + struct.pack("<I", 100_000_000))
            sent = 0
            with pytest.raises(ConnectionError):
                for _ in range(200):
                    writer.write(b"\0" * 65536)
                    await writer.drain()
                    sent += 65536
                    await asyncio.sleep(0)
            assert sent < 8 * 1024 * 1024
        finally:
            writer.close()


def hello(url: str) -> bytes:
    return bytes(uatcp_to_binary(ua.MessageType.Hello, ua.Hello(
        ProtocolVersion=0, ReceiveBufferSize=65535, SendBufferSize=65535, MaxMessageSize=0,
        MaxChunkCount=0, EndpointUrl=url)))


class TestLogRateLimit:
    async def test_subscriptions_share_one_logger(self, secured: Secured) -> None:
        """Subscriptions created again and again leave no logger each behind (asyncua
        makes one per subscription id, kept by logging for good), and log through
        the shared asyncua logger that the rate limit guards."""
        before = set(logging.Logger.manager.loggerDict)
        async with Client(secured.url, timeout=5) as c:
            for _ in range(4):
                sub = await c.create_subscription(100, None)
                await sub.subscribe_data_change([c.get_node(secured.nodeid(VARIABLE))])
                await sub.delete()
            await c.create_subscription(100, None)
            subs = secured.server.iserver.subscription_service.subscriptions
            loggers = {s.monitored_item_srv.logger for s in subs.values()}
            assert loggers == {logging.getLogger(SUBSCRIPTION_LOGGER)}
            assert secured.security.log_limit in logging.getLogger(SUBSCRIPTION_LOGGER).filters
        assert {n for n in set(logging.Logger.manager.loggerDict) - before
                if n.startswith(SUBSCRIPTION_LOGGER)} == set()

    async def test_burst_then_summary(self) -> None:
        """The first N records of a message pass per window; the rest are counted and
        summarised when the window ends."""
        now = [0.0]
        limit = LogRateLimit(burst=3, window=60.0, clock=lambda: now[0])
        record = logging.LogRecord("asyncua.x", logging.ERROR, __file__, 1, "bad frame %s",
                                   (1,), None)
        other = logging.LogRecord("asyncua.x", logging.ERROR, __file__, 1, "other", (), None)
        passed = [limit.filter(record) for _ in range(10)]
        assert passed == [True] * 3 + [False] * 7
        assert limit.filter(other)
        from structlog.testing import capture_logs

        now[0] = 61.0
        with capture_logs() as logs:
            assert limit.filter(record)
        summary = [e for e in logs if e["event"] == "log_records_suppressed"]
        assert summary and summary[0]["suppressed"] == 7
        assert limit.statistics().suppressed == 7
