"""The pipe between the main process and a worker: framed messages, and errors that
cross it intact.

``Channel`` is an ``asyncio.Protocol`` over one end of a ``socket.socketpair``:
each message is a pickled tuple behind a 4-byte length. Writes go through the
event loop's transport, which buffers instead of blocking, so neither side's
loop ever waits for the other to read; reads arrive in ``data_received``.
Pickle is safe here: both ends are our own processes.

A large value (a twin of 20,000 components, its variables, a snapshot) takes a
second or more to pickle or unpickle: ``Packed`` carries it pickled ahead, in a
thread (``Packed.of``), so that the message around it pickles in microseconds on
the event loop, and the receiver unpickles it in a thread too (``unpack``) when
it needs it. (Pickling our dataclasses runs Python code for every object, so the
thread lets the event loop have the GIL every switch interval.)

Exceptions are sent as ``encode_error`` describes them (class, args, fields) and
rebuilt by ``decode_error`` as the same class with the same message and fields:
our tree (``twin_server.errors``) and Python's built-in exceptions. A field that
cannot be pickled (a model's exception kept as a fault's ``cause``) crosses as
its ``repr``.
"""

from __future__ import annotations

import asyncio
import builtins
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twin_server import errors

_LENGTH = struct.Struct("!I")
_PROTOCOL = pickle.HIGHEST_PROTOCOL


@dataclass(frozen=True, slots=True)
class Packed:
    """A value pickled ahead of its message (module docstring)."""

    data: bytes

    @classmethod
    def now(cls, value: Any) -> Packed:
        """``value`` pickled here (a small one, or off the event loop already)."""
        return cls(pickle.dumps(value, protocol=_PROTOCOL))

    @classmethod
    async def of(cls, value: Any) -> Packed:
        """``value`` pickled in a thread."""
        return cls(await asyncio.to_thread(pickle.dumps, value, protocol=_PROTOCOL))

    def unpack_now(self) -> Any:
        return pickle.loads(self.data)  # our own processes only

    async def unpack(self) -> Any:
        """The value, unpickled in a thread."""
        return await asyncio.to_thread(pickle.loads, self.data)


async def unpacked(value: Any) -> Any:
    """``value`` itself, or what it packs when it is ``Packed`` (unpickled in a thread)."""
    return await value.unpack() if isinstance(value, Packed) else value


class Channel(asyncio.Protocol):
    """Framed pickled messages over a stream socket, both directions."""

    def __init__(self, on_message: Callable[[Any], None],
                 on_lost: Callable[[Exception | None], None] | None = None) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self.sent = 0
        self.received = 0

    @classmethod
    async def open(cls, sock: Any, on_message: Callable[[Any], None],
                   on_lost: Callable[[Exception | None], None] | None = None) -> Channel:
        loop = asyncio.get_running_loop()
        channel = cls(on_message, on_lost)
        await loop.create_connection(lambda: channel, sock=sock)
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start, end = 0, len(buffer)
        head = _LENGTH.size
        while end - start >= head:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if end - start - head < size:
                break
            body = bytes(buffer[start + head: start + head + size])
            start += head + size
            self.received += 1
            self._on_message(pickle.loads(body))  # our own processes only
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._on_lost is not None:
            self._on_lost(exc)

    @property
    def open_(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, message: Any) -> None:
        """Queue ``message`` (pickled here: an unpicklable one raises before anything
        is sent). Messages to a closed channel are dropped."""
        body = pickle.dumps(message, protocol=_PROTOCOL)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_LENGTH.pack(len(body)) + body)
        self.sent += 1

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


# -- errors -----------------------------------------------------------------------------

ErrorPayload = tuple[str, str, tuple[Any, ...], dict[str, Any], list[Any]]


def encode_error(exc: BaseException) -> ErrorPayload:
    """(module, class name, args, fields, sub-exceptions of a group), all picklable."""
    fields: dict[str, Any] = {}
    for key, value in vars(exc).items():
        fields[key] = _picklable(value)
    args = tuple(_picklable(a) for a in exc.args)
    subs = ([encode_error(e) for e in exc.exceptions]
            if isinstance(exc, BaseExceptionGroup) else [])
    cls = type(exc)
    return cls.__module__, cls.__qualname__, args, fields, subs


def decode_error(payload: ErrorPayload) -> BaseException:
    """The exception ``encode_error`` described: the same class from our tree or the
    built-ins (else a RuntimeError naming it), the same args and fields."""
    module, qualname, args, fields, subs = payload
    cls = _exception_class(module, qualname)
    if cls is None:
        text = str(args[0]) if len(args) == 1 else str(args)
        return RuntimeError(f"{module}.{qualname} in the worker: {text}")
    if issubclass(cls, BaseExceptionGroup):
        inner = [decode_error(p) for p in subs]
        if cls is errors.ConfigErrors:
            group: BaseException = errors.ConfigErrors(
                [e for e in inner if isinstance(e, errors.ConfigError)])
        else:
            group = BaseExceptionGroup(str(args[0]) if args else "", inner)
        return group
    exc: BaseException = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(fields)
    return exc


def _exception_class(module: str, qualname: str) -> type[BaseException] | None:
    home = {"twin_server.errors": errors, "builtins": builtins}.get(module)
    found = getattr(home, qualname, None) if home is not None else None
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def _picklable(value: Any) -> Any:
    try:
        pickle.dumps(value, protocol=_PROTOCOL)
    except Exception:
        return repr(value)
    return value
