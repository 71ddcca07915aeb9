"""Twin-ward: client writes to a face's bound variables and calls of its bound
methods, through the twin tree's own write path and checks.

A write to a bound variable goes the way a write to the twin tree's node of the
same session variable goes (``opcua/writes.py``: the Variant type checked against
the face's DataType, one status per node, nothing changed on a refusal; then
``runtime.checks.write_value``: the session takes it, the history records it),
after two checks of the face's own: the value lies within the face's EURange
(``BadOutOfRange`` otherwise, saying the range and the unit), and converts from
the face's unit and type to the twin's (``BadTypeMismatch`` for a text into a
number). What the session stored is what the face node then shows (in its unit).

Not writable through the face, ``BadNotWritable`` with the reason in the log
(``write_refused``): a variable bound to an output (the twin computes it), one
the NodeSet makes read-only, and an unbound instance variable the NodeSet makes
read-only (a measured value nothing feeds). An unbound variable the NodeSet makes
writable (a setpoint nothing reads) keeps asyncua's plain write: it stores what
the client wrote, as the real machine would take it.

A bound method calls the session's method of the same effect (Start, Suspend,
Resume, Halt, Reset), its input arguments (the machine's) ignored; a refusal
(Start while Running) is that method's status. A method bound to a routine (a short
scenario) is ``routines.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from asyncua import ua

from twin_server.errors import NotFound, OutOfRange, TwinServerError, TypeMismatch
from twin_server.faces.binding import BoundVariable
from twin_server.faces.sink import face_value
from twin_server.hil.casting import INTEGER_RANGES
from twin_server.models.base import DataType, Kind, Value
from twin_server.opcua.status import GOOD, status_of
from twin_server.opcua.writes import WriteTarget
from twin_server.runtime import checks
from twin_server.runtime.host import HostedSession

log = structlog.get_logger(__name__)

Lookup = Callable[[str], HostedSession | None]
#: the history's record of client writes, looked up at each write (set after start)
WrittenLookup = Callable[[], checks.Written | None]


def refusal(face: str, bound: BoundVariable) -> str:
    """Why a client write to ``bound`` (not writable) is refused."""
    target = f"{bound.var_key.component}.{bound.var_key.name}"
    if bound.var_key.kind is Kind.OUTPUT:
        return (f"face {face!r}: {bound.label} shows the output {target}, which the twin "
                f"computes: outputs are read-only (write the inputs that drive it)")
    return (f"face {face!r}: {bound.label} shows {bound.var_key.kind} {target}, but the "
            f"machine's NodeSet makes it read-only (AccessLevel without CurrentWrite); "
            f"write {target} in the twin tree")


def to_twin(bound: BoundVariable, value: Any) -> Value:
    """A value a client wrote into the face as the session variable's: within the
    face's EURange (OutOfRange), in the twin's unit, of its type (TypeMismatch)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and bound.eu_range is not None:
        low, high = bound.eu_range
        if not low <= value <= high:  # (NaN too)
            unit = f" {bound.unit}" if bound.unit else ""
            raise OutOfRange(f"{bound.label} takes values within its EURange "
                             f"[{low:g}, {high:g}]{unit} (got {value}{unit})")
    if number and not bound.convert.identity:
        value = bound.convert.to_twin(float(value))
    datatype = bound.variable.datatype
    if datatype is DataType.STRING:
        return value if isinstance(value, str) else str(value)
    if isinstance(value, str):
        raise TypeMismatch(f"{bound.label} is bound to a {datatype.value} "
                           f"({bound.var_key.component}.{bound.var_key.name}): a text "
                           f"cannot be one (got {value!r})")
    if datatype is DataType.BOOLEAN:
        return bool(value)
    if datatype is DataType.INT32:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise OutOfRange(f"{bound.label}: {value} is no Int32")
            value = round(value)
        low, high = INTEGER_RANGES[ua.VariantType.Int32]
        if not low <= int(value) <= high:
            raise OutOfRange(f"{bound.label}: {value} is outside the Int32 range")
        return int(value)
    return float(value)


def write_target(face: str, bound: BoundVariable, session: str, lookup: Lookup,
                 written: WrittenLookup) -> WriteTarget:
    """The write route of a writable bound variable (``TwinAttributeService.targets``)."""

    async def apply(value: Any) -> Any:
        twin_value = to_twin(bound, value)
        hosted = lookup(session)
        if hosted is None:
            raise NotFound(f"face {face!r}: session {session!r}, which {bound.label} is "
                           f"bound to, is not served (deleted)")
        stored = await checks.write_value(hosted, bound.var_key, twin_value, written())
        log.debug("face_write", face=face, node=bound.label, value=value, stored=stored)
        return face_value(bound, stored)

    return WriteTarget(bound.vtype, apply, session)


def method_callback(face: str, verb: str, key: str, session: str, lookup: Lookup,
                    after: Callable[[str], Awaitable[None]] | None = None,
                    ) -> Callable[..., Awaitable[ua.CallMethodResult]]:
    """The asyncua callback of a face method bound to the session method ``verb``."""

    async def callback(parent: ua.NodeId, *args: ua.Variant) -> ua.CallMethodResult:
        inputs = [GOOD for _ in args]
        hosted = lookup(session)
        try:
            if hosted is None:
                raise NotFound(f"face {face!r}: session {session!r}, which {key} calls, is "
                               f"not served (deleted)")
            await getattr(hosted, verb.lower())()
        except TwinServerError as exc:
            status = status_of(exc)
            log.info("face_method_refused", face=face, method=key, session=session,
                     calls=verb, status=status.name, reason=str(exc))
            return ua.CallMethodResult(StatusCode=status, InputArgumentResults=inputs)
        log.info("face_method_called", face=face, method=key, session=session, calls=verb)
        if after is not None:
            await after(session)
        return ua.CallMethodResult(StatusCode=GOOD, InputArgumentResults=inputs)

    return callback
