"""The fuzzer of ``tests/security/test_fuzz.py``, run in a child process so that its
own work neither slows the server's event loop nor counts as the server's memory:

    python -m tests.security.fuzz_client URL NAMESPACE FRAMES SECONDS SEED

sends up to FRAMES frames for at most SECONDS and prints one JSON line: the frames
sent and the answers received, counted by kind and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import random
import struct
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.ua.ua_binary import nodeid_to_binary, struct_to_binary

from tests.security.raw import RawChannel, encode, hello

#: seconds without an answer after which a burst stops reading (the server answers or
#: closes at once; frames that announce more bytes than they bring get no answer)
QUIET = 0.15
#: the longest one burst may take (its connection's set-up included)
BURST_SECONDS = 10.0


def session_requests(ns: int) -> list[Any]:
    """Valid requests a viewer's session sends (the session token is set on framing)."""
    tank = ua.NodeId("Sessions.tank", ns)
    level = ua.NodeId("Sessions.tank.Components.tank.Outputs.level", ns)
    setpoint = ua.NodeId("Sessions.tank.Components.controller.Inputs.setpoint", ns)
    now = dt.datetime.now(dt.UTC)
    return [
        ua.ReadRequest(Parameters=ua.ReadParameters(NodesToRead=[
            ua.ReadValueId(NodeId=ua.NodeId("Sessions.tank.StepCount", ns),
                           AttributeId=ua.AttributeIds.Value),
            ua.ReadValueId(NodeId=level, AttributeId=ua.AttributeIds.Value),
            ua.ReadValueId(NodeId=level, AttributeId=ua.AttributeIds.DisplayName)])),
        ua.BrowseRequest(Parameters=ua.BrowseParameters(NodesToBrowse=[
            ua.BrowseDescription(NodeId=tank, BrowseDirection=ua.BrowseDirection.Forward,
                                 IncludeSubtypes=True, ResultMask=63)])),
        ua.TranslateBrowsePathsToNodeIdsRequest(
            Parameters=ua.TranslateBrowsePathsToNodeIdsParameters(BrowsePaths=[
                ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.ObjectsFolder),
                              RelativePath=ua.RelativePath(Elements=[ua.RelativePathElement(
                                  TargetName=ua.QualifiedName("TwinServer", ns))]))])),
        ua.HistoryReadRequest(Parameters=ua.HistoryReadParameters(
            HistoryReadDetails=ua.ReadRawModifiedDetails(
                StartTime=now - dt.timedelta(minutes=1), EndTime=now, NumValuesPerNode=10),
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            NodesToRead=[ua.HistoryReadValueId(NodeId=level)])),
        ua.CallRequest(Parameters=ua.CallParameters(MethodsToCall=[ua.CallMethodRequest(
            ObjectId=tank, MethodId=ua.NodeId("Sessions.tank.Suspend", ns),
            InputArguments=[])])),
        ua.WriteRequest(Parameters=ua.WriteParameters(NodesToWrite=[ua.WriteValue(
            NodeId=setpoint, AttributeId=ua.AttributeIds.Value,
            Value=ua.DataValue(ua.Variant(1.5, ua.VariantType.Double)))])),
    ]


def nested_call(depth: int = 2000) -> bytes:
    """A Call whose input argument nests Variant arrays ``depth`` deep."""
    call = encode(ua.CallRequest(Parameters=ua.CallParameters(MethodsToCall=[
        ua.CallMethodRequest(ObjectId=ua.NodeId(ua.ObjectIds.Server),
                             MethodId=ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems),
                             InputArguments=[])])))
    return call[:-4] + struct.pack("<i", 1) + (b"\x98" + struct.pack("<i", 1)) * depth + b"\x00"


EXTREMES = (0, 1, -1, 7, 1000, 65535, 2**31 - 1, -(2**31))


def mutate_body(rng: random.Random, body: bytes, header: int = 4) -> bytes:
    """A request body mutated the way a broken or hostile encoder would; mostly past
    its first ``header`` bytes (type id and RequestHeader), so that the request's
    own parameters are what the server fails to decode."""
    data = bytearray(body)
    start = header if rng.random() < 0.85 and header < len(data) - 1 else 4
    kind = rng.randrange(8)
    if kind == 0:  # flip bytes
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(start, len(data))] = rng.randrange(256)
    elif kind == 1:  # cut short
        data = data[:rng.randrange(start, len(data))]
    elif kind == 2:  # an int32 (a count, a length, an enum) at an extreme
        at = rng.randrange(start, max(start + 1, len(data) - 4))
        data[at:at + 4] = struct.pack("<i", rng.choice(EXTREMES))
    elif kind == 3:  # bytes inserted
        at = rng.randrange(start, len(data))
        data[at:at] = rng.randbytes(rng.randrange(1, 24))
    elif kind == 4:  # garbage appended
        data += rng.randbytes(rng.randrange(1, 64))
    elif kind == 5:  # another request's type id
        data[0:4] = rng.choice([b"\x01\x00\x77\x02", b"\x01\x00\xcd\x01", b"\x01\x00\xd3\x01",
                                b"\x01\x00\x13\x03", b"\x01\x00\xc4\x02", b"\x01\x00\xff\xff"])
    # else: the request as it is
    return bytes(data)


def mutate_frame(rng: random.Random, seed: bytes) -> bytes:
    """A whole frame mutated as bytes: header, chunk, body."""
    data = bytearray(seed)
    kind = rng.randrange(7)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        data = data[:rng.randrange(1, len(data))]
    elif kind == 2:  # lie about the size
        data[4:8] = struct.pack("<I", rng.choice([0, 1, 7, 8, 9, 12, 65535, 65536, 2**31,
                                                 rng.randrange(2**32)]))
    elif kind == 3:  # another message or chunk type
        data[0:3] = rng.choice([b"HEL", b"ACK", b"OPN", b"MSG", b"CLO", b"ERR", b"RHE", b"XYZ"])
        data[3:4] = rng.choice([b"F", b"C", b"A", b"X"])
    elif kind == 4:  # garbage behind a plausible header
        body = rng.randbytes(rng.randrange(0, 600))
        data = bytearray(rng.choice([b"MSGF", b"OPNF", b"HELF"]) + struct.pack(
            "<I", 8 + len(body)) + body)
    elif kind == 5:  # noise
        data = bytearray(rng.randbytes(rng.randrange(1, 300)))
    return bytes(data)


@dataclass
class Fuzzer:
    host: str
    port: int
    url: str
    ns: int
    rng: random.Random
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)

    async def channel_burst(self) -> None:
        """Frames mutated as bytes, on a connection that may not even say Hello."""
        channel = await self.connect()
        if channel is None:
            return
        try:
            if self.rng.random() < 0.7:
                small = self.rng.random() < 0.3
                await channel.send(hello(self.url, receive_buffer=self.rng.choice(
                    [0, 1024, 8191]) if small else 65535))
                self.sent += 1
                # its answer first (ACK; ERR and closed for a small buffer), however
                # busy the machine: each is a kind of answer the test looks for
                await self.drain(channel, 1.0, most=1)
            seeds = [hello(self.url), channel.open_request(),
                     channel.request(session_requests(self.ns)[0]),
                     channel.frame(encode(ua.CloseSecureChannelRequest()),
                                   ua.MessageType.SecureClose)]
            frames = [mutate_frame(self.rng, self.rng.choice(seeds)) for _ in range(20)]
            with contextlib.suppress(ConnectionError):  # closed: its answers are read below
                for frame in frames:
                    await channel.send(frame)
                    self.sent += 1
            await self.drain(channel, QUIET)
        finally:
            await channel.close()

    async def service_burst(self) -> None:
        """A real anonymous session, then mutated request bodies framed correctly, and
        maybe a message with a wrong channel or token id last."""
        channel = await self.connect()
        if channel is None:
            return
        try:
            try:
                async with asyncio.timeout(2.0):
                    await channel.session()
            except (AssertionError, TimeoutError):
                return
            self.sent += 4
            requests = [*session_requests(self.ns), channel.create_session_request(),
                        channel.activate_session_request(), _x509_activation(channel)]
            bodies = [(encode(_with_token(r, channel)), _header_size(r)) for r in requests]
            sending = [nested_call() if self.rng.random() < 0.02
                       else mutate_body(self.rng, *self.rng.choice(bodies)) for _ in range(20)]
            try:
                for body in sending:
                    await channel.send(channel.frame(body))
                    self.sent += 1
            except ConnectionError:  # closed on one of them: read its answers
                await self.drain(channel, QUIET)
                return
            token = channel.connection.security_token
            last, ids = self.rng.random(), (token.ChannelId, token.TokenId)
            if last < 0.15:  # a wrong channel id
                token.ChannelId += 1
            elif last < 0.3:  # a wrong token id
                token.TokenId += 1
            frame = channel.frame(bodies[0][0])
            token.ChannelId, token.TokenId = ids  # (to read the answers)
            await channel.send(frame)
            self.sent += 1
            await self.drain(channel, 2 * QUIET)
        except ConnectionError:
            pass
        finally:
            await channel.close()

    async def connect(self) -> RawChannel | None:
        """A connection whose answers stay readable after the server resets it."""
        loop = asyncio.get_running_loop()
        reader = _ResetAsEnd(limit=2**16, loop=loop)
        try:
            transport, protocol = await loop.create_connection(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop), self.host, self.port)
        except OSError:
            return None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return RawChannel(reader, writer, self.url)

    async def drain(self, channel: RawChannel, quiet: float, most: int | None = None) -> None:
        """Read the answers until the connection closes or stays ``quiet`` seconds (or
        ``most`` were read), counting them by kind and status."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            for _ in itertools.count() if most is None else range(most):
                try:
                    answer = await channel.receive(quiet)
                except (TimeoutError, ConnectionError):
                    raise
                except Exception:  # an answer to a mangled OPN, on a channel we never had
                    self.answers["unreadable"] = self.answers.get("unreadable", 0) + 1
                    return
                key = f"{answer.kind.decode()} {ua.StatusCode(answer.status).name}"
                self.answers[key] = self.answers.get(key, 0) + 1

    async def run(self, frames: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.sent < frames and time.monotonic() < deadline:
            bursts = [self.service_burst() if self.rng.random() < 0.6 else self.channel_burst()
                      for _ in range(16)]
            await asyncio.gather(*(self.bounded(burst) for burst in bursts))

    async def bounded(self, burst: Coroutine[Any, Any, None]) -> None:
        """``burst``, given up after ``BURST_SECONDS`` (counted as ``burst timeout``):
        a connect whose SYN a full listen queue dropped is retried by the kernel for
        two minutes, and the run is to end when its time is up."""
        try:
            async with asyncio.timeout(BURST_SECONDS):
                await burst
        except TimeoutError:
            self.answers["burst timeout"] = self.answers.get("burst timeout", 0) + 1


class _ResetAsEnd(asyncio.StreamReader):
    """A StreamReader for which a reset connection ends like a closed one: what the
    server sent before it stays readable. (The server closes a connection after an
    ERR answer; frames the fuzzer had sent meanwhile make the close a reset, and
    asyncio's reader would then raise at once, the ERR unread in its buffer.)"""

    def set_exception(self, exc: BaseException) -> None:
        if isinstance(exc, ConnectionResetError):
            self.feed_eof()
        else:
            super().set_exception(exc)


def _with_token(request: Any, channel: RawChannel) -> Any:
    request.RequestHeader.AuthenticationToken = channel.token
    request.RequestHeader.RequestHandle = 42
    return request


def _header_size(request: Any) -> int:
    """Bytes of a request's type id and RequestHeader."""
    return len(nodeid_to_binary(request.TypeId)) + len(struct_to_binary(request.RequestHeader))


def _x509_activation(channel: RawChannel) -> ua.ActivateSessionRequest:
    request = channel.activate_session_request()
    request.Parameters.UserIdentityToken = ua.X509IdentityToken(
        PolicyId="x509", CertificateData=b"\x30\x03\x02\x01\x00")
    return request



async def main(url: str, ns: int, frames: int, seconds: float, seed: int) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    fuzzer = Fuzzer("127.0.0.1", port, url, ns, random.Random(seed))
    await fuzzer.run(frames, seconds)
    print(json.dumps({"sent": fuzzer.sent, "answers": fuzzer.answers}), flush=True)


if __name__ == "__main__":
    url, ns, frames, seconds, seed = sys.argv[1:6]
    asyncio.run(main(url, int(ns), int(frames), float(seconds), int(seed)))
