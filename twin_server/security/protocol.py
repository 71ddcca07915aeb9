"""OPC UA Part 6 hygiene on every connection, and how its refusals are logged.

asyncua 2.1 keeps a connection whose message names a wrong SecureChannelId or
TokenId (it logs a traceback and reads on), acknowledges a Hello with a 1 KB
buffer, answers an undecodable request body with BadInternalError, and logs each
routine refusal (BadUserAccessDenied, BadCertificateUntrusted, ...) at ERROR and
each undecodable body with a traceback (200 KB for a deeply nested Variant).

``ProtocolGuard.connection_made`` is called for every accepted connection (by
``limits.GuardedTransports``) and wraps three methods of that connection's
UaProcessor, on the instance (asyncua's class is not touched):

``process`` (one message of the connection)
    Refuses, with an ERR message and a closed connection as Part 6 (7.1.5, 6.7.6)
    prescribes: a message type the server does not accept or a message before
    the Hello (BadTcpMessageTypeInvalid); a Hello with a ReceiveBufferSize or
    SendBufferSize below 8,192 bytes (7.1.2.3; BadConnectionRejected, which the
    OPC Foundation's ANSI C stack answers; Part 6 names no code; open62541 answers
    BadInternalError) or an EndpointUrl of 4,096 bytes or more
    (BadTcpEndpointUrlInvalid); an OpenSecureChannel for a policy no endpoint
    offers (BadSecurityPolicyRejected); a MSG or CLO before the channel is open or
    naming another SecureChannelId (BadSecureChannelIdInvalid, as open62541) or an
    unknown TokenId (BadSecureChannelTokenUnknown, 6.7.6); and whatever asyncua's
    SecureConnection itself refuses (a bad sequence number or signature:
    BadSecurityChecksFailed; undecodable headers: BadDecodingError).
``process_message`` (one request)
    A request whose type id or RequestHeader cannot be decoded has no
    RequestHandle to answer to: ERR BadDecodingError, connection closed (as
    open62541 does).
``_process_message`` (one request, dispatched to its service)
    Runs a Call (a method call) in a task of its own, up to ``PARALLEL_CALLS`` at
    once per connection, and reads the connection's next request meanwhile: a
    method that takes seconds (CreateSession of a big twin) then holds up neither
    the client's other requests nor its keep-alive reads (asyncua's client gives
    those one second before it drops the connection). Part 4 lets a server
    answer a session's requests in any order; the client matches each response
    by its RequestHandle. Past that many calls running, the next one is awaited
    in line, as every other request is.
    Answers every exception with a ServiceFault itself: a body that cannot be
    decoded with BadDecodingError (the connection stays: the chunk layer was
    intact, so the stream can still be trusted; open62541 does the same), a
    refusal with its own status, anything else with BadInternalError. Refusals
    are logged at INFO (``service_fault``), the unexpected at ERROR in one line
    with the exception's type and a bounded message (``request_failed``), its
    traceback at DEBUG only. asyncua's own handler (ERROR "sending service fault
    response", or a full traceback) is never reached.

Nothing else of the processor is changed: another wrapper of the same methods
(session handling, say) composes with these, whichever is installed first.

``AsyncuaRecords`` lowers the few records asyncua itself logs at WARNING or ERROR
for routine refusals ("Rejected active session UserIdentityToken not supported",
"Received a request ... without an existing session", ...) to INFO, or WARNING
for a limit reached; asyncua's loggers are capped at WARNING
(``twin_server.logs``), so those at INFO are dropped: our ``service_fault``
event says it once. It also bounds asyncua's records: one line instead of a
traceback (a method that raised: "Error executing method call"), and at most
``MAX_RECORD`` characters. Every event of this module counts against the rate
limit of asyncua's logging (``LogRateLimit``), keyed by event and status.

asyncua internals relied on (asyncua 2.1), each named where it is used:
``OPCUAProtocol.processor``; ``UaProcessor.process``, ``.process_message``,
``._process_message``, ``.send_response``, ``._connection``, ``._transport`` and
``.name``; ``SecureConnection.security_token``, ``.next_security_token``,
``.is_open()``, ``._policies`` and ``.security_policy``; the module names of
asyncua's decoder (``asyncua.ua.ua_binary``) and buffer (``asyncua.common.utils``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import Buffer, NotEnoughData, ServiceError
from asyncua.crypto.uacrypto import InvalidSignature as UaInvalidSignature
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary, uatcp_to_binary
from cryptography.exceptions import InvalidSignature

from twin_server.opcua.patches import internals
from twin_server.security.limits import LogRateLimit

log = structlog.get_logger(__name__)

#: Part 6, 7.1.2.3: the smallest ReceiveBufferSize and SendBufferSize of a Hello
#: (1,024 is allowed only for ECC policies, which asyncua does not offer)
MIN_BUFFER_SIZE = 8192
#: Part 6, 7.1.2.3: the encoded EndpointUrl of a Hello shall be shorter
MAX_ENDPOINT_URL = 4096
#: most characters of an exception's message or a client's value in one event
EXCERPT = 200
#: method calls of one connection that run at once (``guarded_dispatch``)
PARALLEL_CALLS = 8
_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)

_HELLO, _OPEN, _MSG, _CLOSE = (ua.MessageType.Hello, ua.MessageType.SecureOpen,
                               ua.MessageType.SecureMessage, ua.MessageType.SecureClose)
#: statuses that, raised by a service, say the server failed rather than refused
_SERVER_FAULTS = frozenset({ua.StatusCodes.BadInternalError, ua.StatusCodes.BadUnexpectedError,
                            ua.StatusCodes.BadOutOfMemory})
#: where asyncua decodes (its binary decoder, its Buffer raising NotEnoughData)
_DECODER_MODULES = ("asyncua.ua.ua_binary", "asyncua.common.utils")
#: asyncua's module of UaProcessor
_PROCESSOR = "asyncua.server.uaprocessor"
#: where a secure channel's cryptography runs (a bad signature, bad padding)
_CRYPTO_MODULES = ("asyncua.crypto", "cryptography")


@dataclass(frozen=True, slots=True)
class ProtocolStatistics:
    """What the protocol guard refused, and how."""

    errors_sent: int  # ERR messages sent, each closing a connection
    faults_sent: int  # ServiceFaults sent for refused or undecodable requests
    decoding_errors: int  # requests or messages that could not be decoded
    unexpected: int  # exceptions nobody expected (BadInternalError, BadTcpInternalError)


class ProtocolGuard:
    """What every connection's guard shares: the counters and the log limit."""

    def __init__(self, log_limit: LogRateLimit | None = None) -> None:
        self.log_limit = log_limit
        self.errors_sent = 0
        self.faults_sent = 0
        self.decoding_errors = 0
        self.unexpected = 0

    def connection_made(self, protocol: Any) -> None:
        """Guard the connection of asyncua's ``protocol`` (an OPCUAProtocol whose
        ``processor`` is set: called from ``asyncio_transports.append``)."""
        # asyncua internal: OPCUAProtocol.processor, the connection's UaProcessor
        processor = getattr(protocol, "processor", None)
        if processor is not None:
            ConnectionGuard(processor, self)

    def statistics(self) -> ProtocolStatistics:
        return ProtocolStatistics(self.errors_sent, self.faults_sent, self.decoding_errors,
                                  self.unexpected)

    def allow(self, event: str, key: str) -> bool:
        """Within the rate limit of asyncua's logging?"""
        return self.log_limit is None or self.log_limit.allow(__name__, f"{event} {key}")


class ConnectionGuard:
    """The guard of one connection: wraps its UaProcessor's ``process``,
    ``process_message`` and ``_process_message`` on the instance."""

    def __init__(self, processor: Any, guard: ProtocolGuard) -> None:
        self.guard = guard
        # asyncua internals: UaProcessor.name (the peer's address), ._connection (its
        # SecureConnection), .send_response, ._transport
        self.peer = _peer(processor.name)
        self.connection = internals.secure_connection(processor)
        self.send_response = processor.send_response
        self.transport = internals.processor_transport(processor)
        self.hello_seen = False
        # asyncua internals: UaProcessor.process (each message), .process_message (each
        # request: decodes type id and RequestHeader), ._process_message (dispatches a
        # request to its service; its caller turns exceptions into ServiceFaults)
        self.process = processor.process
        self.process_message = processor.process_message
        self.dispatch = internals.request_dispatcher(processor)
        #: the method calls running in tasks of their own (``guarded_dispatch``)
        self.calls: set[asyncio.Task[bool]] = set()
        processor.process = self.guarded_process
        processor.process_message = self.guarded_process_message
        internals.set_request_dispatcher(processor, self.guarded_dispatch)

    # -- messages ---------------------------------------------------------------------
    async def guarded_process(self, header: Any, body: Buffer) -> bool:
        """One message: refused with an ERR (and the connection closed) where Part 6
        says so, else asyncua's ``process``."""
        refusal = self.check_message(header, body)
        if refusal is not None:
            return self.refuse(*refusal)
        try:
            return bool(await self.process(header, body))
        except Exception as exc:  # the channel layer failed: the stream is not trusted
            status, unexpected = _channel_status(exc)
            if unexpected:
                self.unexpected(exc, "message_failed", ua.StatusCode(status).name)
            elif status == ua.StatusCodes.BadDecodingError:
                self.guard.decoding_errors += 1
            return self.refuse(status, _excerpt(exc))

    def check_message(self, header: Any, body: Buffer) -> tuple[int, str] | None:
        kind = header.MessageType
        if kind == _HELLO:
            if self.hello_seen:
                return ua.StatusCodes.BadTcpMessageTypeInvalid, "a second Hello on one connection"
            self.hello_seen = True
            return _check_hello(body.copy(header.body_size))
        if kind not in (_OPEN, _MSG, _CLOSE):
            return (ua.StatusCodes.BadTcpMessageTypeInvalid,
                    f"message type {_excerpt(kind, 8)} is not accepted by a server")
        if not self.hello_seen:
            return ua.StatusCodes.BadTcpMessageTypeInvalid, "the first message must be a Hello"
        if kind == _OPEN:
            return self.check_open(header, body)
        return self.check_ids(header, body)

    def check_open(self, header: Any, body: Buffer) -> tuple[int, str] | None:
        # asyncua internals: SecureConnection.is_open(), .security_token, ._policies
        # (the endpoints' policy factories), .security_policy (SecurityPolicy#None until
        # a channel is opened)
        connection = self.connection
        if connection.is_open():
            if header.ChannelId not in (0, connection.security_token.ChannelId):
                return (ua.StatusCodes.BadSecureChannelIdInvalid,
                        f"SecureChannelId {header.ChannelId} is not this connection's")
            return None
        try:
            uri = struct_from_binary(ua.AsymmetricAlgorithmHeader,
                                     body.copy(header.body_size)).SecurityPolicyURI
        except Exception:
            return ua.StatusCodes.BadDecodingError, "the security header cannot be decoded"
        offered = any(policy.matches(uri) for policy in internals.channel_policies(connection))
        if not offered and uri != connection.security_policy.URI:
            return (ua.StatusCodes.BadSecurityPolicyRejected,
                    f"security policy {_excerpt(uri, 80)} is not offered")
        return None

    def check_ids(self, header: Any, body: Buffer) -> tuple[int, str] | None:
        """A MSG or CLO names this connection's channel and one of its tokens
        (asyncua checks the channel id only after the chunk was decoded, and then
        raises instead of answering)."""
        connection = self.connection
        token = connection.security_token
        if not connection.is_open():
            return ua.StatusCodes.BadSecureChannelIdInvalid, "no secure channel is open"
        if header.ChannelId != token.ChannelId:
            return (ua.StatusCodes.BadSecureChannelIdInvalid,
                    f"SecureChannelId {header.ChannelId} is not this connection's")
        try:
            token_id = struct.unpack("<I", body.copy(4).read(4))[0]
        except NotEnoughData:
            return ua.StatusCodes.BadDecodingError, "the security header is cut short"
        # asyncua internal: SecureConnection.next_security_token, the token issued by a
        # renewal (OpenSecureChannel Renew) that the client switches to
        renewed = connection.next_security_token.TokenId
        if token_id != token.TokenId and not (renewed and token_id == renewed):
            return (ua.StatusCodes.BadSecureChannelTokenUnknown,
                    f"TokenId {token_id} is not a token of this channel")
        return None

    def refuse(self, status: int, reason: str) -> bool:
        """Send an ERR message; asyncua closes the connection when ``process``
        answers False (OPCUAProtocol._process_one_msg)."""
        name = ua.StatusCode(status).name
        self.guard.errors_sent += 1
        if self.guard.allow("connection_refused", name):
            log.info("connection_refused", peer=self.peer, status=name, reason=reason)
        if not self.transport.is_closing():
            self.transport.write(uatcp_to_binary(ua.MessageType.Error, ua.ErrorMessage(
                ua.StatusCode(status), reason)))
        return False

    # -- requests ---------------------------------------------------------------------
    async def guarded_process_message(self, seqhdr: Any, body: Buffer) -> bool:
        probe = body.copy()
        try:
            nodeid_from_binary(probe)
            struct_from_binary(ua.RequestHeader, probe)
        except Exception:
            self.guard.decoding_errors += 1
            return self.refuse(ua.StatusCodes.BadDecodingError,
                               "the request's type id or RequestHeader cannot be decoded")
        return bool(await self.process_message(seqhdr, body))

    async def guarded_dispatch(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any,
                               body: Buffer) -> bool:
        if typeid == _CALL and len(self.calls) < PARALLEL_CALLS:
            call = asyncio.get_running_loop().create_task(
                self.answer(typeid, requesthdr, seqhdr, body), name=f"call:{self.peer}")
            self.calls.add(call)
            call.add_done_callback(self.calls.discard)
            return True  # (the connection reads its next request; the task answers)
        return await self.answer(typeid, requesthdr, seqhdr, body)

    async def answer(self, typeid: ua.NodeId, requesthdr: Any, seqhdr: Any,
                     body: Buffer) -> bool:
        """Dispatch one request to its service, every exception answered with a
        ServiceFault (unless the connection closed meanwhile)."""
        try:
            return bool(await self.dispatch(typeid, requesthdr, seqhdr, body))
        except Exception as exc:
            if self.transport.is_closing():
                return False  # (a call that outlived its connection: nobody to answer)
            service = _service_name(typeid)
            status = self.fault_status(exc, service)
            response = ua.ServiceFault()
            response.ResponseHeader.ServiceResult = ua.StatusCode(status)
            self.send_response(requesthdr.RequestHandle, seqhdr, response)
            self.guard.faults_sent += 1
            return True

    def fault_status(self, exc: Exception, service: str) -> int:
        """The ServiceFault's status for ``exc``, logged at the level it deserves."""
        if isinstance(exc, (ServiceError, ua.UaStatusCodeError)):
            status = int(exc.code)
            name = ua.StatusCode(status).name
            if status in _SERVER_FAULTS:
                self.unexpected(exc, "request_failed", name, service=service)
            elif self.guard.allow("service_fault", name):
                log.info("service_fault", peer=self.peer, service=service, status=name)
            return status
        if _decoding(exc):
            self.guard.decoding_errors += 1
            if self.guard.allow("service_fault", "BadDecodingError"):
                log.info("service_fault", peer=self.peer, service=service,
                         status="BadDecodingError", error=type(exc).__name__,
                         message=_excerpt(exc))
            return int(ua.StatusCodes.BadDecodingError)
        self.unexpected(exc, "request_failed", "BadInternalError", service=service)
        return int(ua.StatusCodes.BadInternalError)

    def unexpected(self, exc: Exception, event: str, status: str, **context: Any) -> None:
        """One ERROR line (type and bounded message), the traceback at DEBUG."""
        self.guard.unexpected += 1
        if self.guard.allow(event, type(exc).__name__):
            log.error(event, peer=self.peer, status=status, error=type(exc).__name__,
                      message=_excerpt(exc), **context)
            log.debug(f"{event}_traceback", peer=self.peer, exc_info=exc)


def _check_hello(body: Buffer) -> tuple[int, str] | None:
    raw = body.copy()
    try:
        hello = struct_from_binary(ua.Hello, body)
    except Exception:
        return ua.StatusCodes.BadDecodingError, "the Hello cannot be decoded"
    for field in ("ReceiveBufferSize", "SendBufferSize"):
        size = getattr(hello, field)
        if size < MIN_BUFFER_SIZE:
            return (ua.StatusCodes.BadConnectionRejected,
                    f"Hello {field} {size} is below the minimum of {MIN_BUFFER_SIZE} bytes "
                    "(OPC UA Part 6, 7.1.2.3)")
    # the EndpointUrl's encoded length, as sent (after five UInt32 fields)
    url_bytes = struct.unpack("<i", raw.read(24)[20:24])[0]
    if url_bytes >= MAX_ENDPOINT_URL:
        return (ua.StatusCodes.BadTcpEndpointUrlInvalid,
                f"the EndpointUrl must be shorter than {MAX_ENDPOINT_URL} bytes")
    return None


def _channel_status(exc: Exception) -> tuple[int, bool]:
    """The ERR's status for an exception of asyncua's channel layer, and whether it
    was unexpected (not the client's bytes)."""
    if isinstance(exc, (ServiceError, ua.UaStatusCodeError)):
        return int(exc.code), int(exc.code) in _SERVER_FAULTS
    if _decoding(exc):
        return ua.StatusCodes.BadDecodingError, False
    if isinstance(exc, (InvalidSignature, UaInvalidSignature)) \
            or _raised_in(exc.__traceback__, _CRYPTO_MODULES):
        return ua.StatusCodes.BadSecurityChecksFailed, False
    if isinstance(exc, ua.UaError):
        # asyncua's SecureConnection: sequence number, request id, token timed out
        return ua.StatusCodes.BadSecurityChecksFailed, False
    return ua.StatusCodes.BadTcpInternalError, True


def _decoding(exc: BaseException) -> bool:
    """Did asyncua's decoder raise ``exc`` on the client's bytes?

    For an exception out of ``_process_message``: only if the decoder was called by
    ``_process_message`` itself (it decodes each request's parameters), so that a
    service failing inside is not blamed on the client."""
    if isinstance(exc, NotEnoughData):
        return True
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    # asyncua internal: UaProcessor._process_message, the function whose direct
    # calls into the decoder are the request body's decoding (found by name, so that a
    # wrapper of the method does not hide it)
    for index, frame in enumerate(frames):
        if frame.f_code.co_name == "_process_message" and _module(frame) == _PROCESSOR:
            callee = frames[index + 1] if index + 1 < len(frames) else None
            return callee is not None and _module(callee) in _DECODER_MODULES
    return any(_module(frame) in _DECODER_MODULES for frame in frames)


def _raised_in(tb: TracebackType | None, prefixes: tuple[str, ...]) -> bool:
    return any(_module(frame).startswith(prefixes) for frame, _ in traceback.walk_tb(tb))


def _module(frame: Any) -> str:
    return str(frame.f_globals.get("__name__", ""))


def _service_name(typeid: ua.NodeId) -> str:
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid.Identifier)) \
        if typeid.NamespaceIndex == 0 else typeid.to_string()
    return _excerpt(str(name).removesuffix("_Encoding_DefaultBinary"), 80)


def _excerpt(value: object, limit: int = EXCERPT) -> str:
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _peer(name: Any) -> str | None:
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name) if name else None


# -- asyncua's own records -------------------------------------------------------------

#: asyncua's record formats for routine refusals, and the level each deserves (the
#: message formats of asyncua 2.1: uaprocessor, internal_session, internal_server,
#: binary_server_asyncio, connection ("asyncua.uaprotocol"), crypto.uacrypto, history)
ROUTINE_FORMATS: dict[str, int] = {
    "Rejected active session UserIdentityToken not supported": logging.INFO,
    "Unknown password encoding %s": logging.INFO,
    "Unknown certificate signature algorithm %s": logging.INFO,
    "Received a request of type %d without an existing session": logging.INFO,
    "Unknown message received %s (%s)": logging.INFO,
    "Unauthenticated user attempted to connect": logging.INFO,
    "Session timed out after %ss of inactivity": logging.INFO,
    "Closing idle connection from %s: no ActivateSession within %.1fs": logging.INFO,
    "Got malformed header %s": logging.INFO,
    "Message %s aborted: %s": logging.INFO,
    "certificate is no longer valid: valid until %s": logging.INFO,
    "certificate is not yet vaild: valid after %s": logging.INFO,
    "Error attempt to read history for a node which is not historized": logging.INFO,
    # a limit reached: a warning, as our own limits log theirs
    "Received request that exceed the transport limits": logging.WARNING,
    "Message size: %s is > configured max message size: %s": logging.WARNING,
    "Number of message chunks: %s is > configured max chunk count: %s": logging.WARNING,
    "Message size: %s is > chunk max size: %s": logging.WARNING,
}


#: most characters of one asyncua record's message (a CallMethodRequest in "Error
#: executing method call %s" carries the client's arguments, megabytes of them)
MAX_RECORD = 1000


class AsyncuaRecords(logging.Filter):
    """asyncua's records as the daemon logs them: routine refusals lowered to the
    level in ``ROUTINE_FORMATS`` (and dropped where their logger does not log it);
    messages cut to ``MAX_RECORD`` characters; a traceback replaced by one line with
    the exception's type and a bounded message, unless the logger logs DEBUG (the
    traceback then goes to our ``asyncua_traceback`` event at DEBUG).

    Installed after ``LogRateLimit``, which keys on the message format."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger = logging.getLogger(record.name)
        level = ROUTINE_FORMATS.get(str(record.msg))
        if level is not None and record.levelno > level:
            record.levelno, record.levelname = level, logging.getLevelName(level)
            if not logger.isEnabledFor(level):
                return False
        exc_info = record.exc_info
        strip = bool(exc_info) and not logger.isEnabledFor(logging.DEBUG)
        try:
            message = record.getMessage()
        except Exception:  # a format asyncua got wrong: let logging report it
            return True
        if not strip and len(message) <= MAX_RECORD:
            return True
        if strip and exc_info:
            exc = exc_info[1]
            message = f"{_excerpt(message, MAX_RECORD)} [{type(exc).__name__}: {_excerpt(exc)}]"
            log.debug("asyncua_traceback", logger=record.name, exc_info=exc_info)
            record.exc_info, record.exc_text = None, None
        record.msg, record.args = _excerpt(message, MAX_RECORD + EXCERPT + 80), None
        return True


_records = AsyncuaRecords()


def install_asyncua_records(prefix: str = "asyncua") -> AsyncuaRecords:
    """Attach ``AsyncuaRecords`` to every logger named ``prefix*`` (idempotent); after
    ``install_log_rate_limit``."""
    names = [prefix, *(n for n in logging.root.manager.loggerDict if n.startswith(prefix))]
    for name in names:
        logger = logging.getLogger(name)
        if _records not in logger.filters:
            logger.addFilter(_records)
    return _records
