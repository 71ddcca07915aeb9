"""OPC UA Part 6 hygiene on the wire: wrong channel and token ids, Hellos with
too small buffers, undecodable request bodies, and how refusals are logged.

Each test sends the hostile message over a raw socket (``tests.security.raw``) to
a real server, checks the answer (an ERR message and a closed connection, or a
ServiceFault on a connection that stays usable), and then that a legitimate
asyncua client is served within a second.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import structlog
from asyncua import Client, ua
from asyncua.ua.ua_binary import struct_to_binary

from tests.security.conftest import ENDPOINT, MODULE_LOOP, Secured, secured_server
from tests.security.raw import RawChannel, encode
from twin_server.config.schema import ServerConfig
from twin_server.config.security import LimitsConfig, SecurityConfig
from twin_server.security.roles import Role
from twin_server.security.users import add_user

pytestmark = MODULE_LOOP

VARIABLE = "Sessions.s.Components.c.Inputs.x"
PASSWORD = "a long enough password"
SERVER_STATE = ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    state = tmp_path_factory.mktemp("state")
    add_user(state / "users.json", "vera", Role.VIEWER, PASSWORD)
    config = ServerConfig(
        endpoint=ENDPOINT,
        security=SecurityConfig(policies=("None",), anonymous="viewer"),
        limits=LimitsConfig(activation_timeout=5.0))
    async with secured_server(config, state, (VARIABLE,)) as srv:
        yield srv


def address(secured: Secured) -> tuple[str, int]:
    port = int(secured.url.rsplit(":", 1)[1].split("/")[0])
    return "127.0.0.1", port


async def raw(secured: Secured) -> RawChannel:
    return await RawChannel.connect(*address(secured), secured.url)


async def served_within_a_second(secured: Secured) -> None:
    """A legitimate client connects and reads within a second."""
    started = time.monotonic()
    async with Client(secured.url, timeout=1) as client:
        state = await client.get_node(SERVER_STATE).read_value()
    assert state == ua.ServerState.Running
    assert time.monotonic() - started < 1.0


def read_request(node: ua.NodeId = SERVER_STATE) -> ua.ReadRequest:
    return ua.ReadRequest(Parameters=ua.ReadParameters(NodesToRead=[
        ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value)]))


class TestChannelIds:
    async def test_wrong_channel_id(self, secured: Secured) -> None:
        """A MSG naming another SecureChannelId is answered with an ERR
        (BadSecureChannelIdInvalid) and the connection is closed."""
        channel = await raw(secured)
        try:
            token = await channel.open()
            channel.connection.security_token.ChannelId = token.ChannelId + 1000
            await channel.send(channel.request(read_request()))
            answer = await channel.receive()
            assert answer.kind == b"ERR"
            assert answer.status == ua.StatusCodes.BadSecureChannelIdInvalid
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_wrong_token_id(self, secured: Secured) -> None:
        """A MSG naming an unknown TokenId is answered with an ERR
        (BadSecureChannelTokenUnknown) and the connection is closed."""
        channel = await raw(secured)
        try:
            token = await channel.open()
            channel.connection.security_token.TokenId = token.TokenId + 7
            await channel.send(channel.request(read_request()))
            answer = await channel.receive()
            assert answer.kind == b"ERR"
            assert answer.status == ua.StatusCodes.BadSecureChannelTokenUnknown
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_message_before_open(self, secured: Secured) -> None:
        """A MSG before any OpenSecureChannel is refused the same way."""
        channel = await raw(secured)
        try:
            assert (await channel.hello()).kind == b"ACK"
            await channel.send(channel.request(read_request()))
            answer = await channel.receive()
            assert (answer.kind, answer.status) == (
                b"ERR", ua.StatusCodes.BadSecureChannelIdInvalid)
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_renewed_token_served(self, secured: Secured) -> None:
        """A client that renews its channel's token (every 0.75 of a 1 s lifetime)
        goes on being served under the new token."""
        client = Client(secured.url, timeout=2)
        client.secure_channel_timeout = 1000
        async with client:
            first = client.uaclient.protocol._connection.security_token.TokenId
            node = client.get_node(SERVER_STATE)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                assert await node.read_value() == ua.ServerState.Running
                await asyncio.sleep(0.1)
            assert client.uaclient.protocol._connection.security_token.TokenId > first

    async def test_right_ids_still_served(self, secured: Secured) -> None:
        """With the channel's own ids the same raw session reads the server state."""
        channel = await raw(secured)
        try:
            await channel.session()
            answer = await channel.call(read_request())
            assert answer.status == ua.StatusCodes.Good
            assert answer.body.Results[0].Value.Value == ua.ServerState.Running
        finally:
            await channel.close()


class TestHello:
    @pytest.mark.parametrize(("receive", "send"), [
        pytest.param(1024, 65535, id="receive-1024"),
        pytest.param(65535, 8191, id="send-8191"),
    ])
    async def test_small_buffers_refused(self, secured: Secured, receive: int,
                                         send: int) -> None:
        """A Hello with a buffer below Part 6's 8,192 bytes gets an ERR
        (BadConnectionRejected) instead of an Acknowledge, and the connection closes."""
        channel = await raw(secured)
        try:
            answer = await channel.hello(receive_buffer=receive, send_buffer=send)
            assert answer.kind == b"ERR"
            assert answer.status == ua.StatusCodes.BadConnectionRejected
            assert "8192" in answer.body.Reason
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_smallest_buffers_acknowledged(self, secured: Secured) -> None:
        """8,192-byte buffers are acknowledged as they are."""
        channel = await raw(secured)
        try:
            answer = await channel.hello(receive_buffer=8192, send_buffer=8192)
            assert answer.kind == b"ACK"
            assert (answer.body.ReceiveBufferSize, answer.body.SendBufferSize) == (8192, 8192)
        finally:
            await channel.close()

    async def test_endpoint_url_too_long(self, secured: Secured) -> None:
        """An EndpointUrl of 4,096 bytes or more gets BadTcpEndpointUrlInvalid."""
        channel = await raw(secured)
        channel.url = "opc.tcp://127.0.0.1/" + "x" * 4096
        try:
            answer = await channel.hello()
            assert (answer.kind, answer.status) == (
                b"ERR", ua.StatusCodes.BadTcpEndpointUrlInvalid)
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_second_hello_refused(self, secured: Secured) -> None:
        """A second Hello on one connection is a protocol error
        (BadTcpMessageTypeInvalid)."""
        channel = await raw(secured)
        try:
            assert (await channel.hello()).kind == b"ACK"
            answer = await channel.hello(receive_buffer=8192)
            assert (answer.kind, answer.status) == (
                b"ERR", ua.StatusCodes.BadTcpMessageTypeInvalid)
            assert await channel.closed()
        finally:
            await channel.close()

    async def test_unknown_message_type(self, secured: Secured) -> None:
        """A message type the server does not accept (here ACK) gets
        BadTcpMessageTypeInvalid and the connection closes."""
        channel = await raw(secured)
        try:
            assert (await channel.hello()).kind == b"ACK"
            await channel.send(b"ACKF" + struct.pack("<I", 28) + b"\0" * 20)
            answer = await channel.receive()
            assert (answer.kind, answer.status) == (
                b"ERR", ua.StatusCodes.BadTcpMessageTypeInvalid)
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)


def garbled_requests() -> Iterator[object]:
    request = read_request()
    body = encode(request)
    params = bytes(struct_to_binary(request.Parameters))  # MaxAge, TimestampsToReturn, NodesToRead
    head = body[:-len(params)]
    yield pytest.param(body[:-5], id="read-truncated")
    yield pytest.param(head + params[:12] + struct.pack("<i", 1000) + params[16:],
                       id="read-count-lie")
    yield pytest.param(head + params[:8] + struct.pack("<i", 99) + params[12:],
                       id="read-timestamps-99")
    # a Call whose input argument nests Variant arrays 2,000 deep (a RecursionError
    # in the decoder, whose traceback used to fill 200 KB of log)
    call = encode(ua.CallRequest(Parameters=ua.CallParameters(MethodsToCall=[
        ua.CallMethodRequest(ObjectId=ua.NodeId(ua.ObjectIds.Server),
                             MethodId=ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems),
                             InputArguments=[])])))
    nested = (b"\x98" + struct.pack("<i", 1)) * 2000 + b"\x00"
    yield pytest.param(call[:-4] + struct.pack("<i", 1) + nested, id="call-nested-2000")


class TestDecoding:
    @pytest.mark.parametrize("body", list(garbled_requests()))
    async def test_garbled_request(self, secured: Secured, body: bytes) -> None:
        """A request whose body cannot be decoded gets a ServiceFault with
        BadDecodingError; the connection stays open and serves the next request."""
        channel = await raw(secured)
        try:
            await channel.session()
            await channel.send(channel.frame(body))
            answer = await channel.receive()
            assert answer.kind == b"MSG"
            assert isinstance(answer.body, ua.ServiceFault)
            assert answer.status == ua.StatusCodes.BadDecodingError
            again = await channel.call(read_request())
            assert again.status == ua.StatusCodes.Good
        finally:
            await channel.close()
        await served_within_a_second(secured)

    async def test_undecodable_request_header(self, secured: Secured) -> None:
        """A MSG whose RequestHeader cannot be decoded (so no RequestHandle to answer
        to) gets an ERR with BadDecodingError and the connection is closed."""
        channel = await raw(secured)
        try:
            await channel.session()
            body = encode(read_request())
            await channel.send(channel.frame(body[:9]))
            answer = await channel.receive()
            assert (answer.kind, answer.status) == (b"ERR", ua.StatusCodes.BadDecodingError)
            assert await channel.closed()
        finally:
            await channel.close()
        await served_within_a_second(secured)


class ErrorRecords(logging.Handler):
    """Collects asyncua's records at WARNING and above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records
                if r.levelno >= logging.ERROR]


@pytest.fixture
def asyncua_records(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErrorRecords]:
    # the rate limit must not hide the records this test looks for
    monkeypatch.setattr(secured.security.log_limit, "burst", 10**9)
    handler = ErrorRecords()
    logger = logging.getLogger("asyncua")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def structlog_errors(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e.get("log_level") in ("error", "critical", "exception")]


class TestRoutineRefusalsLogging:
    async def test_refused_write(self, secured: Secured,
                                 asyncua_records: ErrorRecords) -> None:
        """A viewer's Write is refused per node with BadUserAccessDenied and logs
        nothing at ERROR."""
        with structlog.testing.capture_logs() as logs:
            async with Client(secured.url, timeout=5) as client:
                node = client.get_node(secured.nodeid(VARIABLE))
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await node.write_value(1.0)
                assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
                assert await node.read_value() == 0.0
        assert asyncua_records.errors() == []
        assert structlog_errors(logs) == []
        assert any(e["event"] == "write_refused" and e["status"] == "BadUserAccessDenied"
                   and e["log_level"] == "info" for e in logs)
        await served_within_a_second(secured)

    async def test_refused_service(self, secured: Secured,
                                   asyncua_records: ErrorRecords) -> None:
        """A service the viewer's role may not use (AddNodes) is refused with a
        ServiceFault BadUserAccessDenied and logs nothing at ERROR."""
        with structlog.testing.capture_logs() as logs:
            async with Client(secured.url, timeout=5) as client:
                item = ua.AddNodesItem(
                    ParentNodeId=ua.NodeId(ua.ObjectIds.ObjectsFolder),
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.Organizes),
                    RequestedNewNodeId=secured.nodeid("Intruder"),
                    BrowseName=ua.QualifiedName("Intruder", secured.ns),
                    NodeClass=ua.NodeClass.Object,
                    TypeDefinition=ua.NodeId(ua.ObjectIds.BaseObjectType))
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await client.uaclient.add_nodes([item])
                assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        assert asyncua_records.errors() == []
        assert structlog_errors(logs) == []
        assert any(e["event"] == "service_fault" and e["status"] == "BadUserAccessDenied"
                   and e["log_level"] == "info" for e in logs)
        await served_within_a_second(secured)

    async def test_refused_login(self, secured: Secured,
                                 asyncua_records: ErrorRecords) -> None:
        """A wrong password is refused with BadUserAccessDenied and logs nothing at
        ERROR."""
        with structlog.testing.capture_logs() as logs:
            client = Client(secured.url, timeout=5)
            client.set_user("vera")
            client.set_password("not the password")
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await client.connect()
            client.disconnect_socket()
        secured.security.users.throttle.succeeded("127.0.0.1", "vera")
        assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        assert asyncua_records.errors() == []
        assert structlog_errors(logs) == []
        await served_within_a_second(secured)

    async def test_unsupported_identity_token(self, secured: Secured,
                                              asyncua_records: ErrorRecords) -> None:
        """An identity token the endpoint does not offer (X509) is refused with
        BadIdentityTokenRejected and logs nothing at ERROR."""
        channel = await raw(secured)
        try:
            await channel.open()
            created = await channel.call(channel.create_session_request())
            channel.token = created.body.Parameters.AuthenticationToken
            request = channel.activate_session_request()
            request.Parameters.UserIdentityToken = ua.X509IdentityToken(
                PolicyId="x509", CertificateData=b"\x30\x00")
            with structlog.testing.capture_logs() as logs:
                answer = await channel.call(request)
            assert answer.status == ua.StatusCodes.BadIdentityTokenRejected
        finally:
            await channel.close()
        assert asyncua_records.errors() == []
        assert structlog_errors(logs) == []
        await served_within_a_second(secured)

    async def test_method_exception_bounded(self, secured: Secured,
                                            asyncua_records: ErrorRecords) -> None:
        """A method that raises is logged by asyncua at ERROR as one bounded line (no
        traceback, not the client's arguments in full); the caller gets
        BadUnexpectedError."""
        method = ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems)
        node = secured.server.get_node(method)
        original = secured.server.iserver.aspace[method].call

        async def broken(_parent: ua.NodeId, *_args: object) -> None:
            raise RuntimeError("y" * 100_000)

        secured.server.link_method(node, broken)
        try:
            async with Client(secured.url, timeout=5) as client:
                result = await client.uaclient.call([ua.CallMethodRequest(
                    ObjectId=ua.NodeId(ua.ObjectIds.Server), MethodId=method,
                    InputArguments=[ua.Variant("z" * 50_000)])])
        finally:
            secured.server.iserver.aspace[method].call = original
        assert result[0].StatusCode.value == ua.StatusCodes.BadUnexpectedError
        records = [r for r in asyncua_records.records if r.levelno >= logging.ERROR]
        assert len(records) == 1
        assert records[0].exc_info is None
        line = logging.Formatter().format(records[0])
        assert "RuntimeError" in line and len(line) < 2000
        await served_within_a_second(secured)

    async def test_unexpected_error_one_bounded_line(
            self, secured: Secured, asyncua_records: ErrorRecords,
            monkeypatch: pytest.MonkeyPatch) -> None:
        """An exception nobody expected answers BadInternalError and logs one ERROR
        line with the exception's type and a bounded message; the traceback only at
        DEBUG."""
        def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("x" * 100_000)

        # a service that fails inside the server (not a refusal, not the client's bytes)
        get_endpoints = secured.server.iserver.get_endpoints
        monkeypatch.setattr(secured.server.iserver, "get_endpoints", broken)
        channel = await raw(secured)
        try:
            await channel.open()
            with structlog.testing.capture_logs() as logs:
                answer = await channel.call(ua.GetEndpointsRequest())
            assert answer.status == ua.StatusCodes.BadInternalError
        finally:
            await channel.close()
            monkeypatch.setattr(secured.server.iserver, "get_endpoints", get_endpoints)
        assert asyncua_records.errors() == []
        errors = structlog_errors(logs)
        assert len(errors) == 1 and errors[0]["event"] == "request_failed"
        assert errors[0]["error"] == "RuntimeError"
        assert len(repr(errors[0])) < 1000
        debug = [e for e in logs if e["log_level"] == "debug"]
        assert debug and "exc_info" in debug[0]
        await served_within_a_second(secured)
