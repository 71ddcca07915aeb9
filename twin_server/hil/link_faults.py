"""HIL link faults: a PLC link frozen, delayed or cut on purpose (issue #17, part 6).

A link fault acts on the whole link of a HIL peer or on some of its bindings
(``bindings``; empty: the whole link), on wall-clock time (a HIL link runs in real
time), until cleared or for ``duration`` seconds:

=======  =======================================================================
kind     what the link does
=======  =======================================================================
freeze   values stop in both directions: the PLC keeps the twin's last values,
         the twin's inputs keep the PLC's last ones, and every status stays what
         it was (Good): what a stalled gateway or a PLC serving stale data shows,
         which nothing on the wire reveals. When it ends, the values of now flow
         at once (the PLC's latest, the twin's current frame).
delay    a transport delay: every value takes ``delay`` more seconds, in both
         directions (to the PLC in steps of the session's publish period); the
         statuses stay Good. The liveness read is not delayed (the link stays up
         whatever the delay).
cut      a real link loss: for the whole link, the connection is dropped (the
         socket closed without a CloseSession, as a pulled cable leaves it) and
         every reconnect fails until the fault ends; the mirror goes through the
         very path a lost PLC takes (``hil_link_lost``, the mirrored inputs marked
         UncertainLastUsableValue, UncertainSubstituteValue with a fallback, or
         BadCommunicationError before any value came; ``hil_recovered`` when it
         ends and the PLC's first value replaces the mark). For some bindings, those
         bindings alone are marked so and carry nothing until it ends.
=======  =======================================================================

At most one fault acts on a binding: a fault whose bindings overlap an active
one's is refused (BadInvalidState) until that one is cleared. Each start and end
is a session event of the peer's session (``link_fault_injected``,
``link_fault_cleared``), recorded in its event history like every session event.

This module is the pure part (the definitions, their checks, the registry of a
peer's active faults); ``hil.mirror`` applies them to the link.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from twin_server.errors import InvalidArgument, InvalidState, NotFound, TwinServerError

#: session event kinds of a link fault's start and end, and their severities
LINK_FAULT_INJECTED = "link_fault_injected"
LINK_FAULT_CLEARED = "link_fault_cleared"
SEVERITY_INJECTED = 500
SEVERITY_CLEARED = 300
#: the longest transport delay, in s
MAX_DELAY = 60.0


class LinkFaultKind(enum.StrEnum):
    FREEZE = "freeze"
    DELAY = "delay"
    CUT = "cut"


@dataclass(frozen=True, slots=True)
class LinkFaultSpec:
    """A link fault to inject (``HilMirror.inject_link_fault``; the config's
    ``[[hil.<peer>.faults]]`` and the InjectLinkFault method build one).
    ``delay``: s, for kind delay alone; ``duration``: wall-clock s, None (or 0) until
    cleared; ``bindings``: the binding names it acts on, empty for the whole link."""

    kind: LinkFaultKind | str
    delay: float = 0.0
    duration: float | None = None
    bindings: tuple[str, ...] = ()


class FieldRefused(Exception):
    """One field of a ``LinkFaultSpec`` refused: ``field`` (kind, delay, duration,
    bindings) and the refusal, whose ``status`` is the OPC UA code."""

    def __init__(self, field: str, error: TwinServerError) -> None:
        super().__init__(str(error))
        self.field = field
        self.error = error


@dataclass(frozen=True, slots=True)
class LinkFault:
    """An active link fault. ``started`` and ``ends``: ``time.monotonic()`` seconds."""

    kind: LinkFaultKind
    delay: float
    duration: float | None
    bindings: tuple[str, ...]  # empty: the whole link
    started: float
    ends: float | None
    from_config: bool = False

    def covers(self, binding: str) -> bool:
        return not self.bindings or binding in self.bindings

    def remaining(self, now: float) -> float | None:
        return None if self.ends is None else max(0.0, self.ends - now)

    def describe(self) -> str:
        """``delay of 0.5 s on bindings valve for 10 s``: for events and logs."""
        what = f"delay of {self.delay:g} s" if self.kind is LinkFaultKind.DELAY else str(self.kind)
        where = (f"bindings {', '.join(self.bindings)}" if self.bindings
                 else "the whole link")
        until = f"for {self.duration:g} s" if self.duration else "until cleared"
        return f"{what} on {where} {until}"


def check(spec: LinkFaultSpec, bindings: Collection[str]) -> LinkFaultSpec:
    """``spec`` checked and normalised (a duration of 0 is None, bindings sorted and
    without repeats) against a peer whose bindings are ``bindings``; FieldRefused
    naming the field otherwise."""
    try:
        kind = LinkFaultKind(spec.kind)
    except ValueError:
        raise FieldRefused("kind", InvalidArgument(
            f"{str(spec.kind)[:100]!r} is not a kind of link fault (kinds: "
            f"{', '.join(k.value for k in LinkFaultKind)})")) from None
    delay = spec.delay
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise FieldRefused("delay", InvalidArgument(
            f"a link fault's delay is seconds, a finite number (got {delay!r})"))
    if kind is LinkFaultKind.DELAY and not 0 < delay <= MAX_DELAY:
        raise FieldRefused("delay", InvalidArgument(
            f"a delay link fault needs its delay in s, > 0 and at most {MAX_DELAY:g} "
            f"(got {delay:g})"))
    if kind is not LinkFaultKind.DELAY and delay != 0:
        raise FieldRefused("delay", InvalidArgument(
            f"a {kind} link fault has no delay (got {delay:g}; give 0 or leave it out)"))
    duration = spec.duration
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int | float) \
                or not math.isfinite(duration) or duration < 0:
            raise FieldRefused("duration", InvalidArgument(
                f"a link fault's duration is seconds >= 0, 0 or none meaning until "
                f"cleared (got {duration!r})"))
        duration = float(duration) or None
    names = tuple(sorted(set(spec.bindings)))
    unknown = [n for n in names if n not in bindings]
    if unknown:
        raise FieldRefused("bindings", NotFound(
            f"the peer has no binding {', '.join(map(repr, unknown))} (its bindings: "
            f"{', '.join(sorted(bindings))})"))
    return LinkFaultSpec(kind, float(delay), duration, names)


class LinkFaults:
    """The active link faults of one peer."""

    def __init__(self, bindings: Collection[str]) -> None:
        self._bindings = tuple(bindings)
        self._active: list[LinkFault] = []

    def __bool__(self) -> bool:
        return bool(self._active)

    @property
    def active(self) -> tuple[LinkFault, ...]:
        return tuple(self._active)

    def add(self, spec: LinkFaultSpec, now: float, *, from_config: bool = False) -> LinkFault:
        """Start ``spec`` (checked: FieldRefused) at ``now``; InvalidState when it would
        act on a binding that a fault acts on already."""
        spec = check(spec, self._bindings)
        scope = set(spec.bindings or self._bindings)
        for other in self._active:
            if scope & set(other.bindings or self._bindings):
                raise InvalidState(
                    f"a link fault acts on this link already ({other.describe()}); clear "
                    f"it first (ClearLinkFault)")
        duration = spec.duration
        fault = LinkFault(LinkFaultKind(spec.kind), spec.delay, duration, spec.bindings, now,
                          None if duration is None else now + duration, from_config)
        self._active.append(fault)
        return fault

    def remove(self, bindings: Sequence[str] = ()) -> list[LinkFault]:
        """End the faults acting on any of ``bindings`` (every fault when empty) and
        return them; NotFound for an unknown binding or one no fault acts on."""
        if not bindings:
            ended, self._active = self._active, []
            return ended
        unknown = [b for b in bindings if b not in self._bindings]
        if unknown:
            raise NotFound(f"the peer has no binding {', '.join(map(repr, unknown))} (its "
                           f"bindings: {', '.join(self._bindings)})")
        idle = [b for b in bindings if self.on(b) is None]
        if idle:
            raise NotFound(f"no link fault acts on binding {', '.join(map(repr, idle))} "
                           f"(active: {self.summary() or 'none'})")
        ended = [f for f in self._active if any(f.covers(b) for b in bindings)]
        self._active = [f for f in self._active if f not in ended]
        return ended

    def expire(self, now: float) -> list[LinkFault]:
        """End and return the faults whose duration ran out by ``now``."""
        ended = [f for f in self._active if f.ends is not None and f.ends <= now]
        self._active = [f for f in self._active if f not in ended]
        return ended

    def next_end(self) -> float | None:
        ends = [f.ends for f in self._active if f.ends is not None]
        return min(ends) if ends else None

    def on(self, binding: str) -> LinkFault | None:
        """The fault acting on ``binding`` (None: none)."""
        for fault in self._active:
            if fault.covers(binding):
                return fault
        return None

    def link_cut(self) -> LinkFault | None:
        """The cut of the whole link, if one is active."""
        for fault in self._active:
            if fault.kind is LinkFaultKind.CUT and not fault.bindings:
                return fault
        return None

    def longest_delay(self) -> float:
        return max((f.delay for f in self._active), default=0.0)

    def whole_link(self) -> str:
        """The kind of the fault on the whole link ("" for none): ``HIL/<peer>/LinkFault``."""
        return next((str(f.kind) for f in self._active if not f.bindings), "")

    def summary(self) -> str:
        return "; ".join(f.describe() for f in self._active)
