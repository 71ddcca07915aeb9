"""The methods of a ``HIL/<peer>`` node: link faults on purpose (``hil.link_faults``).

InjectLinkFault(Kind, [Delay], [Duration], [Bindings]) -> Fault
    freeze, delay or cut the link (or the bindings named) from now on; Fault
    describes what started. Refusals: BadInvalidArgument on Kind (not a kind), on
    Delay (not > 0 for delay, not 0 for the others) or on Duration (negative, not
    finite); BadNotFound on Bindings (a name the peer has not); BadInvalidState for
    the call when a link fault acts on one of those bindings already.
ClearLinkFault([Bindings]) -> Cleared
    end the link faults acting on the bindings named (every one when none is
    named); Cleared describes each that ended. BadNotFound on Bindings for a name
    the peer has not, or one no fault acts on.

Both are an operator's (``security.roles``). The callbacks never raise (``methods``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asyncua import ua

from twin_server.errors import NotFound, TwinServerError
from twin_server.hil import HilMirror
from twin_server.hil.link_faults import MAX_DELAY, FieldRefused, LinkFaultKind, LinkFaultSpec
from twin_server.opcua.methods import (
    Action,
    ArgumentError,
    Attribution,
    MethodCallback,
    MethodCounter,
    _Call,
    make_callback,
)
from twin_server.opcua.nodes import Argument
from twin_server.opcua.tree import MethodSpec

_KINDS = ", ".join(k.value for k in LinkFaultKind)
_BINDINGS = ua.VariantType.String

HIL_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "InjectLinkFault",
        "Break the link on purpose, from now on: freeze (values stop both ways, statuses "
        "stay Good), delay (every value takes Delay s more) or cut (a real link loss: the "
        "mirrored inputs go UncertainLastUsableValue, or take their fallback); "
        "link_fault_injected and link_fault_cleared events on the peer's session",
        (Argument("Kind", ua.VariantType.String, _KINDS),
         Argument("Delay", ua.VariantType.Double,
                  f"s, for delay (0 < Delay <= {MAX_DELAY:g}); 0 or left out otherwise"),
         Argument("Duration", ua.VariantType.Double,
                  "Wall-clock s it acts; 0 or left out: until ClearLinkFault"),
         Argument("Bindings", _BINDINGS, "The bindings it acts on; empty or left out: the "
                                         "whole link", array=True)),
        (Argument("Fault", ua.VariantType.String, "What started, in words"),),
        optional=3),
    MethodSpec(
        "ClearLinkFault", "End link faults now: the link carries the values of now",
        (Argument("Bindings", _BINDINGS, "End the faults acting on these bindings; empty "
                                         "or left out: every link fault of the peer",
                  array=True),),
        (Argument("Cleared", ua.VariantType.String, "Each fault that ended, in words",
                  array=True),),
        optional=1),
)

#: InjectLinkFault's argument of each field of a LinkFaultSpec
_FIELDS = {"kind": 0, "delay": 1, "duration": 2, "bindings": 3}


def _unknown_bindings(exc: TwinServerError) -> int | None:
    """ClearLinkFault: BadNotFound concerns its Bindings."""
    return 0 if isinstance(exc, NotFound) else None


_ATTRIBUTIONS: dict[str, Attribution] = {"ClearLinkFault": _unknown_bindings}


class HilMethods:
    """The method callbacks of one peer's node. ``after`` runs after every call (the
    health nodes show the call's effect when it returns)."""

    def __init__(self, mirror: HilMirror, peer: str,
                 after: Callable[[], Awaitable[None]] | None = None) -> None:
        self._mirror = mirror
        self._peer = peer
        self._after = after
        self._counter = MethodCounter()

    def callbacks(self) -> dict[str, MethodCallback]:
        actions: dict[str, Action] = {"InjectLinkFault": self._inject,
                                      "ClearLinkFault": self._clear}
        return {spec.name: make_callback(
                    _Call(spec, f"HIL.{self._peer}", self._counter, after=self._after,
                          attribute=_ATTRIBUTIONS.get(spec.name),
                          log_context={"peer": self._peer}),
                    actions[spec.name])
                for spec in HIL_METHODS}

    async def _inject(self, kind: str, delay: float = 0.0, duration: float = 0.0,
                      bindings: list[str] | None = None) -> list[ua.Variant]:
        spec = LinkFaultSpec(kind, delay, duration, tuple(bindings or ()))
        try:
            fault = await self._mirror.inject_link_fault(self._peer, spec)
        except FieldRefused as exc:
            raise ArgumentError(_FIELDS[exc.field], exc.error) from None
        return [ua.Variant(fault.describe(), ua.VariantType.String)]

    async def _clear(self, bindings: list[str] | None = None) -> list[ua.Variant]:
        ended = await self._mirror.clear_link_faults(self._peer, tuple(bindings or ()))
        return [ua.Variant([f.describe() for f in ended], ua.VariantType.String,
                           is_array=True)]
