"""A raw OPC UA TCP client over a plain socket, for tests that must send what no
real client would: wrong channel and token ids, tiny buffers, garbled bodies.

``RawChannel`` speaks the binary protocol with the SecurityPolicy#None framing of
asyncua's own ``SecureConnection`` (so its well-formed messages are exactly what
an asyncua client sends), and reads every answer, ERR included, as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.common.connection import SecureConnection, TransportLimits
from asyncua.common.utils import Buffer
from asyncua.crypto.security_policies import SecurityPolicyNone
from asyncua.ua.ua_binary import (
    header_from_binary,
    nodeid_from_binary,
    struct_from_binary,
    struct_to_binary,
    uatcp_to_binary,
)

SERVICE_FAULT = ua.NodeId(ua.ObjectIds.ServiceFault_Encoding_DefaultBinary)


def hello(url: str, receive_buffer: int = 65535, send_buffer: int = 65535) -> bytes:
    return bytes(uatcp_to_binary(ua.MessageType.Hello, ua.Hello(
        ProtocolVersion=0, ReceiveBufferSize=receive_buffer, SendBufferSize=send_buffer,
        MaxMessageSize=0, MaxChunkCount=0, EndpointUrl=url)))


def encode(request: Any) -> bytes:
    """A request's body as it goes into a MSG chunk: type id, then the request."""
    return bytes(struct_to_binary(request))


@dataclass(frozen=True)
class Answer:
    """One message from the server: its type and its decoded body."""

    kind: bytes  # b"ACK", b"ERR", b"OPN", b"MSG", b"CLO"
    body: Any  # Acknowledge, ErrorMessage, or the response (ServiceFault included)

    @property
    def status(self) -> int:
        """The ERR's code, the ServiceResult of a response, Good for an ACK."""
        if isinstance(self.body, ua.ErrorMessage):
            return int(self.body.Error.value)
        if isinstance(self.body, ua.Acknowledge):
            return 0
        return int(self.body.ResponseHeader.ServiceResult.value)


class RawChannel:
    """One TCP connection to the server, driven message by message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 url: str) -> None:
        self.reader = reader
        self.writer = writer
        self.url = url
        self.connection = SecureConnection(SecurityPolicyNone(), TransportLimits())
        self.request_id = 0
        self.token = ua.NodeId()  # the session's AuthenticationToken, once created

    @classmethod
    async def connect(cls, host: str, port: int, url: str) -> RawChannel:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, url)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    # -- bytes ------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout: float = 2.0) -> Answer:
        """The next message from the server (ConnectionError when it has closed)."""
        async with asyncio.timeout(timeout):
            try:
                head = await self.reader.readexactly(8)
                size = struct.unpack("<I", head[4:8])[0]
                rest = await self.reader.readexactly(size - 8)
            except asyncio.IncompleteReadError as closed:
                raise ConnectionError("the server closed the connection") from closed
        kind = head[:3]
        buf = Buffer(head + rest)
        header = header_from_binary(buf)
        if kind == b"ACK":
            return Answer(kind, struct_from_binary(ua.Acknowledge, buf))
        if kind == b"ERR":
            return Answer(kind, struct_from_binary(ua.ErrorMessage, buf))
        message = self.connection.receive_from_header_and_body(header, buf)
        body = message.body()
        typeid = nodeid_from_binary(body.copy())  # (the response's own first field)
        cls = ua.ServiceFault if typeid == SERVICE_FAULT else ua.extension_objects_by_typeid[typeid]
        return Answer(kind, struct_from_binary(cls, body))

    async def closed(self, within: float = 2.0) -> bool:
        """Has the server closed the connection (within ``within`` seconds)?"""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    # -- messages ---------------------------------------------------------------------
    def frame(self, body: bytes, message_type: ua.MessageType = ua.MessageType.SecureMessage,
              ) -> bytes:
        """``body`` framed as the next chunk of this channel."""
        self.request_id += 1
        return bytes(self.connection.message_to_binary(body, message_type=message_type,
                                                       request_id=self.request_id))

    def request(self, request: Any) -> bytes:
        """``request`` with this channel's session token, framed."""
        request.RequestHeader.AuthenticationToken = self.token
        request.RequestHeader.RequestHandle = self.request_id + 1
        return self.frame(encode(request))

    async def call(self, request: Any) -> Answer:
        await self.send(self.request(request))
        return await self.receive()

    async def hello(self, receive_buffer: int = 65535, send_buffer: int = 65535) -> Answer:
        await self.send(hello(self.url, receive_buffer, send_buffer))
        return await self.receive()

    def open_request(self) -> bytes:
        return self.frame(encode(ua.OpenSecureChannelRequest(
            Parameters=ua.OpenSecureChannelParameters(
                RequestType=ua.SecurityTokenRequestType.Issue,
                SecurityMode=ua.MessageSecurityMode.None_, RequestedLifetime=3600000))),
            ua.MessageType.SecureOpen)

    async def open(self) -> ua.ChannelSecurityToken:
        """Hello, then OpenSecureChannel over SecurityPolicy#None: the channel's token."""
        assert (await self.hello()).kind == b"ACK"
        await self.send(self.open_request())
        answer = await self.receive()
        assert answer.kind == b"OPN", answer
        token: ua.ChannelSecurityToken = answer.body.Parameters.SecurityToken
        self.connection.security_token = token
        return token

    def create_session_request(self) -> ua.CreateSessionRequest:
        return ua.CreateSessionRequest(Parameters=ua.CreateSessionParameters(
            ClientDescription=ua.ApplicationDescription(
                ApplicationUri="urn:twin-server:raw-client",
                ApplicationType=ua.ApplicationType.Client),
            EndpointUrl=self.url, SessionName="raw", ClientNonce=b"\1" * 32,
            RequestedSessionTimeout=60000, MaxResponseMessageSize=0))

    def activate_session_request(self) -> ua.ActivateSessionRequest:
        return ua.ActivateSessionRequest(Parameters=ua.ActivateSessionParameters(
            UserIdentityToken=ua.AnonymousIdentityToken(PolicyId="anonymous")))

    async def session(self) -> None:
        """Open the channel, create a session and activate it anonymously."""
        await self.open()
        created = await self.call(self.create_session_request())
        assert created.kind == b"MSG" and created.status == 0, created
        self.token = created.body.Parameters.AuthenticationToken
        activated = await self.call(self.activate_session_request())
        assert activated.status == 0, activated
