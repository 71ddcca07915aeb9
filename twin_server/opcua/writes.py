"""Client writes to our nodes, forwarded to the session, one status per node.

asyncua's own hooks do not fit: a value setter (``set_attribute_value_setter``)
returns nothing, so it can't refuse a write with a status; it is also called for
the server's own ``write_attribute_value``, which the publisher uses. And
``AttributeService.write`` answers BadUserAccessDenied for a read-only node where
OPC UA clients expect BadNotWritable.

So ``TwinAttributeService`` replaces the server's ``iserver.attribute_service``
(``InternalSession.write`` looks it up on every request). For each WriteValue in
our namespace it checks the Variant type, awaits the node's handler (which asks
the session's host to ``write`` or ``set_realtime_factor``: the session, in this
process or a worker, has taken the value when the answer comes), turns a refusal into that node's
status code and, only if accepted, puts the coerced value into the node with
``AddressSpace.write_attribute_value`` (which notifies monitored items). Every
other WriteValue goes to asyncua's own implementation in one batch. One bad
write never fails the others; a refused one changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AddressSpace, AttributeService

from twin_server.errors import TwinServerError
from twin_server.logs import excerpt
from twin_server.opcua.status import GOOD, status_of

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WriteTarget:
    """A writable node: the Variant type it takes and what applies a value.

    ``apply`` returns the value as stored (coerced) or raises a TwinServerError;
    ``accepted`` is told the stored value (the publisher's cache).
    """

    vtype: ua.VariantType
    apply: Callable[[Any], Awaitable[Any]]
    session: str
    accepted: Callable[[Any], None] | None = None


@dataclass(frozen=True, slots=True)
class WriteStatistics:
    accepted: int
    refused: int


class TwinAttributeService(AttributeService):  # type: ignore[misc]  # asyncua: untyped to mypy
    """asyncua's AttributeService with writes to our namespace routed to sessions."""

    def __init__(self, aspace: AddressSpace, namespace: int,
                 on_activity: Callable[[str], None] | None = None) -> None:
        super().__init__(aspace)
        self.namespace = namespace
        self.targets: dict[ua.NodeId, WriteTarget] = {}
        #: nodes outside our namespace refused with BadNotWritable and this reason (a
        #: machine face's measured values that nothing feeds: faces/serve.py); nodes
        #: outside it in ``targets`` are routed as ours are
        self.refusals: dict[ua.NodeId, str] = {}
        #: told the name of every session a client reads or writes (expiry)
        self.on_activity = on_activity
        self._accepted = 0
        self._refused = 0

    def statistics(self) -> WriteStatistics:
        return WriteStatistics(self._accepted, self._refused)

    def read(self, params: ua.ReadParameters) -> list[ua.DataValue]:
        if self.on_activity is not None:
            self._note_reads(params.NodesToRead)
        return super().read(params)  # type: ignore[no-any-return]

    def _note_reads(self, items: list[ua.ReadValueId]) -> None:
        """Tell ``on_activity`` which sessions a read touches: the session name is
        the second part of our string NodeIds (``Sessions.<name>...``), so this
        is a prefix test per item, once per run of items of one session."""
        notify = self.on_activity
        assert notify is not None
        ns = self.namespace
        last = ""
        for item in items:
            name = session_of(item.NodeId, ns)
            if name and name != last:
                notify(name)
                last = name

    async def write(self, params: ua.WriteParameters,
                    user: User = User(role=UserRole.Admin)) -> list[ua.StatusCode]:  # noqa: B008 - asyncua's signature
        results: list[ua.StatusCode | None] = []
        foreign: list[tuple[int, ua.WriteValue]] = []
        for index, wv in enumerate(params.NodesToWrite):
            if not self.routes(wv.NodeId):
                foreign.append((index, wv))
                results.append(None)
            else:
                results.append(await self._write_ours(wv))
        if foreign:
            theirs = await super().write(
                ua.WriteParameters(NodesToWrite=[wv for _, wv in foreign]), user)
            for (index, _), status in zip(foreign, theirs, strict=True):
                results[index] = status
        return [r if r is not None else ua.StatusCode(ua.StatusCodes.BadInternalError)
                for r in results]

    def routes(self, nodeid: ua.NodeId) -> bool:
        """Whether a write of ``nodeid`` is answered here (not by asyncua's own)."""
        return (nodeid.NamespaceIndex == self.namespace or nodeid in self.targets
                or nodeid in self.refusals)

    async def _write_ours(self, wv: ua.WriteValue) -> ua.StatusCode:
        nodeid = wv.NodeId
        if nodeid not in self._aspace:
            return ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
        refusal = self.refusals.get(nodeid)
        if refusal is not None:
            return self._refuse(nodeid, ua.StatusCodes.BadNotWritable, refusal)
        target = self.targets.get(nodeid)
        if target is None or wv.AttributeId != ua.AttributeIds.Value:
            return self._refuse(nodeid, ua.StatusCodes.BadNotWritable, "read-only")
        if wv.IndexRange:
            return self._refuse(nodeid, ua.StatusCodes.BadWriteNotSupported,
                                "index ranges are not supported on scalars")
        dv = wv.Value
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return self._refuse(nodeid, ua.StatusCodes.BadWriteNotSupported,
                                "writing a status code is not supported")
        variant = dv.Value
        if (variant is None or variant.VariantType != target.vtype or variant.is_array
                or isinstance(variant.Value, list | tuple)):
            got = "null" if variant is None else variant.VariantType.name
            return self._refuse(nodeid, ua.StatusCodes.BadTypeMismatch,
                                f"takes a {target.vtype.name} (got {got})")
        if self.on_activity is not None:
            self.on_activity(target.session)
        try:
            stored = await target.apply(variant.Value)
        except TwinServerError as exc:
            status = status_of(exc)
            self._refused += 1
            log.info("write_refused", session=target.session, node=nodeid.Identifier,
                     status=status.name, reason=excerpt(str(exc), 1000))
            return status
        except Exception:
            self._refused += 1
            log.exception("write_failed", session=target.session, node=nodeid.Identifier)
            return ua.StatusCode(ua.StatusCodes.BadInternalError)
        now = datetime.now(UTC)
        await self._aspace.write_attribute_value(
            nodeid, ua.AttributeIds.Value,
            ua.DataValue(ua.Variant(stored, target.vtype), SourceTimestamp=now,
                         ServerTimestamp=now))
        if target.accepted is not None:
            target.accepted(stored)
        self._accepted += 1
        log.debug("write_accepted", session=target.session, node=nodeid.Identifier,
                  value=excerpt(stored) if isinstance(stored, str) else stored)
        return GOOD

    def _refuse(self, nodeid: ua.NodeId, code: int, reason: str) -> ua.StatusCode:
        status = ua.StatusCode(code)
        self._refused += 1
        log.info("write_refused", node=nodeid.Identifier, status=status.name, reason=reason)
        return status


_SESSIONS_PREFIX = "Sessions."


def session_of(nodeid: ua.NodeId, namespace: int) -> str:
    """The session a NodeId of ours belongs to (``Sessions.<name>...``), else ""."""
    if nodeid.NamespaceIndex != namespace:
        return ""
    ident = nodeid.Identifier
    if not isinstance(ident, str) or not ident.startswith(_SESSIONS_PREFIX):
        return ""
    return ident[len(_SESSIONS_PREFIX):].partition(".")[0]
