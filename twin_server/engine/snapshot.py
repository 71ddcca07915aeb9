"""A session's state detached from the session: what Snapshot, Restore, Fork and
persistence across restarts carry, and its versioned byte form."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from twin_server.engine.state import RunState
from twin_server.errors import InvalidArgument, NotSupported
from twin_server.models.base import Value


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """Everything that determines a session's future, detached from the session.

    Per component (in evaluation order): the model's own ``snapshot()``, the
    parameters in effect, the pending fixed parameters, the forced inputs, the
    input and output values. Restore copies out of it, so one snapshot can be
    restored many times and into other sessions of the same twin (Fork). Treat
    it as read-only. ``state`` is the run state it was taken in (a daemon that
    restores sessions after a restart resumes those that were Running).
    """

    session: str
    twin: str
    #: (component, model) in evaluation order: restores only into the same layout
    layout: tuple[tuple[str, str], ...]
    step_size: float
    step_count: int
    state: RunState
    realtime_factor: float
    models: tuple[Any, ...]
    parameters: tuple[dict[str, Value], ...]
    pending: tuple[dict[str, Value], ...]
    forced: tuple[dict[str, Value], ...]
    inputs: tuple[dict[str, Value], ...]
    outputs: tuple[dict[str, Value], ...]
    #: the alarms' conditions (``engine.alarms.AlarmsSnapshot``; None: none, or a
    #: snapshot from before alarms)
    alarms: Any = None
    #: the injected faults, each with its state (``engine.faults.snapshot_of``), and
    #: the last automatic fault id's number (a snapshot of an older version has none)
    faults: tuple[dict[str, Any], ...] = ()
    fault_seq: int = 0

    @property
    def sim_time(self) -> float:
        return self.step_count * self.step_size

    def to_bytes(self) -> bytes:
        """Serialise for the history store (a versioned pickle). NotSupported, naming
        the component, when a model's state lives only in its instance (an FMU
        without canSerializeFMUstate)."""
        try:
            body = pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise NotSupported(
                f"the snapshot of session {self.session!r} cannot be saved: "
                f"{self._unpicklable(exc)}"
            ) from None
        return _SNAPSHOT_MAGIC + bytes([SNAPSHOT_FORMAT]) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionSnapshot:
        """The snapshot ``to_bytes`` wrote (InvalidArgument for anything else).

        Unpickles: only for bytes this server wrote itself (its own store),
        never for bytes from a client."""
        head = len(_SNAPSHOT_MAGIC)
        if not isinstance(data, bytes | bytearray) or data[:head] != _SNAPSHOT_MAGIC:
            raise InvalidArgument("not a twin-server session snapshot (its header is missing)")
        if len(data) <= head or data[head] != SNAPSHOT_FORMAT:
            found = data[head] if len(data) > head else "none"
            raise InvalidArgument(
                f"session snapshot format {found} cannot be read by this version of "
                f"twin-server (it reads format {SNAPSHOT_FORMAT})"
            )
        try:
            snapshot = pickle.loads(data[head + 1 :])  # our own store's bytes only
        except Exception as exc:
            raise InvalidArgument(f"the session snapshot is damaged: {exc}") from None
        if not isinstance(snapshot, cls):
            raise InvalidArgument(
                f"the session snapshot holds a {type(snapshot).__name__}, not a snapshot"
            )
        return snapshot

    def _unpicklable(self, exc: Exception) -> str:
        for (component, _), state in zip(self.layout, self.models, strict=True):
            try:
                pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as inner:
                reason = getattr(state, "serialized", b"") is None and (
                    "its FMU cannot serialize its state (canSerializeFMUstate is false), so "
                    "the state exists only inside the running instance"
                )
                return f"component {component!r}: {reason or inner}"
        return str(exc)


#: the first bytes of ``SessionSnapshot.to_bytes``, then one byte of format version
_SNAPSHOT_MAGIC = b"twin-server snapshot\n"
SNAPSHOT_FORMAT = 1
